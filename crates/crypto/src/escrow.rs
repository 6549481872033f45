//! Key escrow for the local master key: k-of-n Shamir shares for separate custodians.
//!
//! Without its master key every backup is ciphertext nobody can read; kept beside the backups,
//! the key makes their encryption pointless. So the key leaves the machine only as shares
//! (default 3 of 5): any `threshold` of them rebuild it, fewer reveal nothing about it. The
//! splitting is [`blahaj`] (the maintained fork of `sharks`, with RUSTSEC-2024-0398's biased
//! coefficients fixed); what is ours is the share's text form and its checks.
//!
//! A share is one line a custodian can print or type:
//! `clinicd-share-v1:<key id>:<threshold>of<count>:<index>:<hex>:<check>`. The key id is the
//! master key's fingerprint (as in `local:<fingerprint>` KEK ids), so shares of different keys
//! are not mixed and the rebuilt key is recognised as the right one: Shamir's scheme itself
//! gives an unrelated value, not an error, when shares are too few or altered. The check (the
//! first 4 bytes of SHA-256 over the rest of the line) catches a mistyped share by name.

use aws_lc_rs::digest::{SHA256, digest};
use blahaj::{Share, Sharks};
use zeroize::Zeroizing;

use crate::keys::{KEY_LEN, SecretKey};
use crate::provider::fingerprint;

const PREFIX: &str = "clinicd-share-v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EscrowError {
    #[error("a threshold must be at least 2 and at most the number of shares (at most 255)")]
    BadScheme,
    #[error("share {0} is not a clinicd key share (or was mistyped): {1}")]
    Malformed(usize, &'static str),
    #[error("the shares belong to different keys or schemes")]
    Mixed,
    #[error("share index {0} is given twice")]
    Duplicate(u8),
    #[error("{given} shares given; this key needs {needed}")]
    TooFew { given: usize, needed: u8 },
    #[error("the shares do not rebuild the key they name (one is altered, or from another split)")]
    Mismatch,
}

/// One custodian's share, in its text form (a secret: show it once, to its custodian).
pub struct KeyShare(Zeroizing<String>);

impl KeyShare {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyShare(..)")
    }
}

/// Splits `master` into `count` shares, any `threshold` of which rebuild it.
pub fn split(master: &SecretKey, threshold: u8, count: u8) -> Result<Vec<KeyShare>, EscrowError> {
    if threshold < 2 || count < threshold {
        return Err(EscrowError::BadScheme);
    }
    let key_id = fingerprint(master);
    Ok(Sharks(threshold)
        .dealer(master.expose())
        .take(usize::from(count))
        .map(|share| {
            let bytes = Zeroizing::new(Vec::from(&share));
            let (index, body) = bytes.split_first().unwrap_or((&0, &[]));
            let line = format!(
                "{PREFIX}:{key_id}:{threshold}of{count}:{index}:{}",
                hex::encode(body)
            );
            let check = check(&line);
            KeyShare(Zeroizing::new(format!("{line}:{check}")))
        })
        .collect())
}

/// A share read back: which key and scheme it belongs to, and its point.
struct Parsed {
    key_id: String,
    threshold: u8,
    count: u8,
    index: u8,
    share: Share,
}

fn parse(n: usize, text: &str) -> Result<Parsed, EscrowError> {
    let bad = |why| EscrowError::Malformed(n, why);
    let text = text.trim();
    let (line, given_check) = text.rsplit_once(':').ok_or(bad("no check"))?;
    if check(line) != given_check.to_ascii_lowercase() {
        return Err(bad("its check does not match"));
    }
    let parts: Vec<&str> = line.split(':').collect();
    let [prefix, key_id, scheme, index, body] = parts.as_slice() else {
        return Err(bad("wrong number of parts"));
    };
    if *prefix != PREFIX {
        return Err(bad("unknown prefix"));
    }
    let (threshold, count) = scheme.split_once("of").ok_or(bad("no scheme"))?;
    let threshold: u8 = threshold.parse().map_err(|_| bad("bad threshold"))?;
    let count: u8 = count.parse().map_err(|_| bad("bad count"))?;
    let index: u8 = index.parse().map_err(|_| bad("bad index"))?;
    let body = Zeroizing::new(hex::decode(body).map_err(|_| bad("bad hex"))?);
    if index == 0 || body.len() != KEY_LEN || threshold < 2 || count < threshold {
        return Err(bad("impossible values"));
    }
    let bytes = Zeroizing::new([&[index], body.as_slice()].concat());
    let share = Share::try_from(bytes.as_slice()).map_err(|_| bad("bad share"))?;
    Ok(Parsed {
        key_id: (*key_id).to_owned(),
        threshold,
        count,
        index,
        share,
    })
}

/// Rebuilds the master key from shares of one split; refuses too few, mixed or altered ones.
pub fn combine<S: AsRef<str>>(shares: &[S]) -> Result<SecretKey, EscrowError> {
    let parsed = shares
        .iter()
        .enumerate()
        .map(|(n, s)| parse(n + 1, s.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let first = parsed.first().ok_or(EscrowError::TooFew {
        given: 0,
        needed: 2,
    })?;
    let (key_id, threshold, count) = (&first.key_id, first.threshold, first.count);
    let mut seen = std::collections::BTreeSet::new();
    for share in &parsed {
        if share.key_id != *key_id || share.threshold != threshold || share.count != count {
            return Err(EscrowError::Mixed);
        }
        if !seen.insert(share.index) {
            return Err(EscrowError::Duplicate(share.index));
        }
    }
    if parsed.len() < usize::from(threshold) {
        return Err(EscrowError::TooFew {
            given: parsed.len(),
            needed: threshold,
        });
    }
    let points: Vec<&Share> = parsed.iter().map(|p| &p.share).collect();
    let secret = Zeroizing::new(
        Sharks(threshold)
            .recover(points)
            .map_err(|_| EscrowError::Mismatch)?,
    );
    let master = SecretKey::from_bytes(&secret).map_err(|_| EscrowError::Mismatch)?;
    if fingerprint(&master) != *key_id {
        return Err(EscrowError::Mismatch);
    }
    Ok(master)
}

fn check(line: &str) -> String {
    hex::encode(
        digest(&SHA256, line.as_bytes())
            .as_ref()
            .get(..4)
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_bytes(&[7u8; KEY_LEN]).unwrap()
    }

    fn lines(shares: &[KeyShare]) -> Vec<String> {
        shares.iter().map(|s| s.expose().to_owned()).collect()
    }

    #[test]
    fn any_three_of_five_rebuild_the_key() {
        let shares = lines(&split(&key(), 3, 5).unwrap());
        assert_eq!(shares.len(), 5);
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let subset = [shares[a].clone(), shares[c].clone(), shares[b].clone()];
                    let rebuilt = combine(&subset).unwrap();
                    assert_eq!(rebuilt.expose(), key().expose(), "shares {a} {b} {c}");
                }
            }
        }
        assert_eq!(combine(&shares).unwrap().expose(), key().expose());
    }

    #[test]
    fn two_of_five_do_not() {
        let shares = lines(&split(&key(), 3, 5).unwrap());
        for a in 0..5 {
            for b in a + 1..5 {
                let subset = [shares[a].clone(), shares[b].clone()];
                assert_eq!(
                    combine(&subset).err(),
                    Some(EscrowError::TooFew {
                        given: 2,
                        needed: 3
                    })
                );
            }
        }
    }

    #[test]
    fn a_share_claiming_a_lower_threshold_is_caught_by_the_key_id() {
        // Re-label two shares as "2 of 5" with valid checks: interpolation then gives some
        // other value, which the key id refuses.
        let shares = lines(&split(&key(), 3, 5).unwrap());
        let relabel = |s: &str| {
            let (line, _) = s.rsplit_once(':').unwrap();
            let line = line.replace(":3of5:", ":2of5:");
            format!("{line}:{}", check(&line))
        };
        let forged = [relabel(&shares[0]), relabel(&shares[1])];
        assert_eq!(combine(&forged).err(), Some(EscrowError::Mismatch));
    }

    #[test]
    fn mistyped_mixed_and_repeated_shares_are_named() {
        let shares = lines(&split(&key(), 3, 5).unwrap());
        let mut typo = shares[1].clone();
        let at = typo.len() - 12;
        let flipped = if typo.as_bytes()[at] == b'0' {
            "1"
        } else {
            "0"
        };
        typo.replace_range(at..at + 1, flipped);
        assert_eq!(
            combine(&[shares[0].clone(), typo, shares[2].clone()]).err(),
            Some(EscrowError::Malformed(2, "its check does not match"))
        );
        let other = lines(&split(&SecretKey::from_bytes(&[9u8; KEY_LEN]).unwrap(), 3, 5).unwrap());
        assert_eq!(
            combine(&[shares[0].clone(), shares[1].clone(), other[2].clone()]).err(),
            Some(EscrowError::Mixed)
        );
        assert_eq!(
            combine(&[shares[0].clone(), shares[0].clone(), shares[1].clone()]).err(),
            Some(EscrowError::Duplicate(1))
        );
        assert!(matches!(
            combine(&["not a share"]).err(),
            Some(EscrowError::Malformed(1, _))
        ));
    }

    #[test]
    fn impossible_schemes_are_refused() {
        assert_eq!(split(&key(), 1, 5).err(), Some(EscrowError::BadScheme));
        assert_eq!(split(&key(), 4, 3).err(), Some(EscrowError::BadScheme));
        assert!(split(&key(), 2, 2).is_ok());
    }

    #[test]
    fn a_share_does_not_show_in_debug_output() {
        let shares = split(&key(), 2, 2).unwrap();
        assert_eq!(format!("{:?}", shares[0]), "KeyShare(..)");
    }
}

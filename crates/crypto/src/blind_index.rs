//! Blind indexes: exact-match search over encrypted values without decrypting the table.
//!
//! An index value is HMAC-SHA256, under a key derived per table and column from the
//! `blind_index` branch key, over a normalised value, **truncated** to a few bits (as
//! CipherSweet does) so that several rows share each index value at the expected row count.
//! A search finds candidate rows by index and then decrypts them and filters exactly. Full-
//! length tokens on low-entropy fields (dates of birth, SSNs) would let anyone holding the
//! table group rows by value and recover values by frequency; `docs/field-encryption.md` says
//! what each index leaks and why its length was chosen.

use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::hmac;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::error::CryptoError;
use crate::keys::SecretKey;

/// How a value is normalised before indexing, so equal values index equally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalizer {
    /// The 9 digits of an SSN, whatever the separators.
    SsnDigits,
    /// An ISO 8601 date, `YYYY-MM-DD`.
    IsoDate,
    /// One name token: compatibility-decomposed, accents removed, lower-cased, letters and
    /// digits only ("Zoë" and "ZOE" index equally).
    NameToken,
    /// The value as given, trimmed (opaque keys such as another system's record id).
    Exact,
}

/// One indexed column: where it lives, how long its index values are, how values normalise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlindIndexSpec {
    pub table: &'static str,
    pub column: &'static str,
    pub bits: u8,
    pub normalizer: Normalizer,
}

/// A computed index value and the version of the branch key that keyed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlindIndex {
    pub key_version: u32,
    pub value: Vec<u8>,
}

/// Normalises a value, or `None` if it has no valid normal form.
pub fn normalize(normalizer: Normalizer, value: &str) -> Option<String> {
    match normalizer {
        Normalizer::SsnDigits => {
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            let only_digits_and_separators = value
                .chars()
                .all(|c| c.is_ascii_digit() || c == '-' || c == ' ');
            (digits.len() == 9 && only_digits_and_separators).then_some(digits)
        }
        Normalizer::IsoDate => {
            let date = chrono::NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").ok()?;
            Some(date.format("%Y-%m-%d").to_string())
        }
        Normalizer::Exact => {
            let value = value.trim();
            (!value.is_empty()).then(|| value.to_owned())
        }
        Normalizer::NameToken => {
            let token: String = fold(value)
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect();
            (!token.is_empty()).then_some(token)
        }
    }
}

/// Splits a name into normalised tokens ("María-José de la Cruz" gives maria, jose, de, la, cruz).
pub fn name_tokens(value: &str) -> Vec<String> {
    let mut tokens: Vec<String> = fold(value)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    tokens
}

fn fold(value: &str) -> String {
    value
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

pub(crate) fn derive_index_key(root: &SecretKey, table: &str, column: &str) -> hmac::Key {
    derive_hmac_key(root, b"clinicd-blind-index-v1", table, column)
}

/// An HMAC-SHA256 key for one use (`salt` names the use, `table` and `column` the place).
pub(crate) fn derive_hmac_key(
    root: &SecretKey,
    salt: &[u8],
    table: &str,
    column: &str,
) -> hmac::Key {
    let info = [table.as_bytes(), b"\0", column.as_bytes()];
    let prk = Salt::new(HKDF_SHA256, salt).extract(root.expose());
    // Expanding 32 bytes of HMAC-SHA256 key cannot fail.
    match prk.expand(&info, hmac::HMAC_SHA256) {
        Ok(okm) => hmac::Key::from(okm),
        Err(_) => hmac::Key::new(hmac::HMAC_SHA256, root.expose()),
    }
}

/// The truncated HMAC of an already normalised value.
pub(crate) fn compute(key: &hmac::Key, bits: u8, normalized: &str) -> Result<Vec<u8>, CryptoError> {
    if bits == 0 || bits > 64 {
        return Err(CryptoError::Malformed("blind index length"));
    }
    let tag = hmac::sign(key, normalized.as_bytes());
    let bytes = usize::from(bits).div_ceil(8);
    let mut out = tag
        .as_ref()
        .get(..bytes)
        .ok_or(CryptoError::Malformed("blind index length"))?
        .to_vec();
    let spare = bytes * 8 - usize::from(bits);
    if let Some(last) = out.last_mut() {
        *last &= 0xffu8 << spare;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_ssns() {
        assert_eq!(
            normalize(Normalizer::SsnDigits, "123-45-6789").as_deref(),
            Some("123456789")
        );
        assert_eq!(
            normalize(Normalizer::SsnDigits, "123 45 6789").as_deref(),
            Some("123456789")
        );
        assert_eq!(normalize(Normalizer::SsnDigits, "12345678"), None);
        assert_eq!(normalize(Normalizer::SsnDigits, "123-45-678x"), None);
    }

    #[test]
    fn normalises_dates_and_names() {
        assert_eq!(
            normalize(Normalizer::IsoDate, " 1984-02-29 ").as_deref(),
            Some("1984-02-29")
        );
        assert_eq!(normalize(Normalizer::IsoDate, "1985-02-29"), None);
        assert_eq!(
            normalize(Normalizer::NameToken, "Zoë").as_deref(),
            Some("zoe")
        );
        assert_eq!(
            normalize(Normalizer::NameToken, "ZOE"),
            normalize(Normalizer::NameToken, "zoé")
        );
        assert_eq!(
            name_tokens("María-José de la Cruz"),
            ["cruz", "de", "jose", "la", "maria"]
        );
        assert_eq!(name_tokens("ＪＯＨＮ"), ["john"], "full-width letters fold");
    }

    #[test]
    fn truncates_to_the_bit() {
        let root = SecretKey::from_bytes(&[1; 32]).unwrap_or_else(|_| unreachable!());
        let key = derive_index_key(&root, "patients", "ssn");
        let full = compute(&key, 64, "123456789").expect("64 bits");
        let short = compute(&key, 13, "123456789").expect("13 bits");
        assert_eq!(short.len(), 2);
        assert_eq!(short[0], full[0]);
        assert_eq!(short[1], full[1] & 0b1111_1000);
        assert!(compute(&key, 0, "x").is_err());
        let other_column = derive_index_key(&root, "patients", "dob");
        assert_ne!(
            compute(&other_column, 64, "123456789").expect("64"),
            full,
            "columns have their own keys"
        );
    }
}

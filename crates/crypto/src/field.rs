//! The field ciphertext format (version 1), documented in `docs/field-encryption.md`:
//!
//! ```text
//! subject key:  01 | 01 | subject id (16) | key version u32 | nonce (12) | ciphertext | tag (16)
//! purpose key:  01 | 02 | purpose (1)     | key version u32 | nonce (12) | ciphertext | tag (16)
//! ```
//!
//! AES-256-GCM under a key derived for the value's table and column (HKDF-SHA256 from the
//! subject or purpose key, info = table and column), so no two columns share a key. The
//! associated data is the header plus the value's location (table, column, row id), so a
//! ciphertext copied to another row or column does not decrypt.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

use crate::error::CryptoError;
use crate::keys::{KeyRef, Purpose, SecretKey, SubjectId, encode_parts};
use crate::plaintext::Plaintext;

pub const FORMAT_V1: u8 = 1;
const KIND_SUBJECT: u8 = 1;
const KIND_PURPOSE: u8 = 2;
const SUBJECT_HEADER_LEN: usize = 2 + 16 + 4;
const PURPOSE_HEADER_LEN: usize = 2 + 1 + 4;
pub const TAG_LEN: usize = 16;
const FIELD_SALT: &[u8] = b"clinicd-field-v1";

/// Where a value lives. Bound into its ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLocation<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row_id: Uuid,
}

impl<'a> FieldLocation<'a> {
    pub fn new(table: &'a str, column: &'a str, row_id: Uuid) -> Self {
        Self {
            table,
            column,
            row_id,
        }
    }
}

/// A parsed ciphertext: which key, and where the header ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub key: KeyRef,
    header_len: usize,
}

/// Parses the header of a field ciphertext. Never panics, whatever the input.
pub fn parse(bytes: &[u8]) -> Result<Parsed, CryptoError> {
    let (&version, rest) = bytes.split_first().ok_or(CryptoError::Malformed("empty"))?;
    if version != FORMAT_V1 {
        return Err(CryptoError::UnknownVersion(version));
    }
    let (&kind, rest) = rest
        .split_first()
        .ok_or(CryptoError::Malformed("truncated header"))?;
    let (key, header_len) = match kind {
        KIND_SUBJECT => {
            let id: [u8; 16] = rest
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .ok_or(CryptoError::Malformed("truncated header"))?;
            let version = read_u32(rest.get(16..20))?;
            (
                KeyRef::Subject(SubjectId(Uuid::from_bytes(id)), version),
                SUBJECT_HEADER_LEN,
            )
        }
        KIND_PURPOSE => {
            let code = *rest
                .first()
                .ok_or(CryptoError::Malformed("truncated header"))?;
            let purpose =
                Purpose::from_code(code).ok_or(CryptoError::Malformed("unknown purpose"))?;
            (
                KeyRef::Purpose(purpose, read_u32(rest.get(1..5))?),
                PURPOSE_HEADER_LEN,
            )
        }
        _ => return Err(CryptoError::Malformed("unknown key kind")),
    };
    if bytes.len() < header_len + NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed("truncated body"));
    }
    Ok(Parsed { key, header_len })
}

fn read_u32(bytes: Option<&[u8]>) -> Result<u32, CryptoError> {
    let array: [u8; 4] = bytes
        .and_then(|b| b.try_into().ok())
        .ok_or(CryptoError::Malformed("truncated header"))?;
    Ok(u32::from_be_bytes(array))
}

fn encode_header(out: &mut Vec<u8>, key: KeyRef) {
    out.push(FORMAT_V1);
    match key {
        KeyRef::Subject(subject, version) => {
            out.push(KIND_SUBJECT);
            out.extend_from_slice(subject.0.as_bytes());
            out.extend_from_slice(&version.to_be_bytes());
        }
        KeyRef::Purpose(purpose, version) => {
            out.push(KIND_PURPOSE);
            out.push(purpose.code());
            out.extend_from_slice(&version.to_be_bytes());
        }
    }
}

/// The AES-256-GCM key for one table and column, derived from a subject or purpose key.
pub fn derive_column_key(
    root: &SecretKey,
    table: &str,
    column: &str,
) -> Result<LessSafeKey, CryptoError> {
    let info = [table.as_bytes(), b"\0", column.as_bytes()];
    let prk = Salt::new(HKDF_SHA256, FIELD_SALT).extract(root.expose());
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| CryptoError::MalformedKey)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Runs `f` with the associated data for a value: the header, then the length-prefixed table,
/// column and row id (as `encode_parts`). Built on the stack when it fits (it nearly always
/// does) by plain slice copies: this runs for every field, and going through `io::Write` cost
/// as much again as the copies.
fn with_aad<R>(header: &[u8], location: &FieldLocation<'_>, f: impl FnOnce(&[u8]) -> R) -> R {
    let parts: [&[u8]; 3] = [
        location.table.as_bytes(),
        location.column.as_bytes(),
        location.row_id.as_bytes(),
    ];
    let mut stack = [0u8; 192];
    match encode_on_stack(&mut stack, header, parts) {
        Some(aad) => f(aad),
        // The rare long one goes to the heap. Same bytes either way.
        None => {
            let mut heap = header.to_vec();
            encode_parts(&mut heap, &parts);
            f(&heap)
        }
    }
}

/// The associated data written into `buffer`, or `None` if it does not fit. Each copy splits
/// off the rest of the buffer, so every bound is checked once.
fn encode_on_stack<'a>(buffer: &'a mut [u8], header: &[u8], parts: [&[u8]; 3]) -> Option<&'a [u8]> {
    let capacity = buffer.len();
    let mut rest = put(&mut *buffer, header)?;
    for part in parts {
        let size = u32::try_from(part.len()).ok()?;
        rest = put(put(rest, &size.to_be_bytes())?, part)?;
    }
    let used = capacity.checked_sub(rest.len())?;
    let buffer: &'a [u8] = buffer;
    buffer.get(..used)
}

/// Copies `bytes` to the front of `buffer` and returns the rest, or `None` if they do not fit.
fn put<'a>(buffer: &'a mut [u8], bytes: &[u8]) -> Option<&'a mut [u8]> {
    let (slot, rest) = buffer.split_at_mut_checked(bytes.len())?;
    slot.copy_from_slice(bytes);
    Some(rest)
}

/// Encrypts `plaintext` for `location` under `cipher` (the column key of `key`).
pub fn seal(
    cipher: &LessSafeKey,
    key: KeyRef,
    location: &FieldLocation<'_>,
    plaintext: &[u8],
    rng: &SystemRandom,
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(SUBJECT_HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
    encode_header(&mut out, key);
    let header_len = out.len();
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let (header, rest) = out.split_at_mut(header_len);
    let body = rest.get_mut(NONCE_LEN..).ok_or(CryptoError::Integrity)?;
    let tag = with_aad(header, location, |aad| {
        cipher.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
    })
    .map_err(|_| CryptoError::Integrity)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Decrypts a ciphertext parsed by [`parse`] at `location`, from the ciphertext straight into
/// a new buffer of the plaintext's size: no copy of the ciphertext to decrypt in place, no tag
/// to trim off afterwards.
pub fn open(
    cipher: &LessSafeKey,
    parsed: Parsed,
    location: &FieldLocation<'_>,
    ciphertext: &[u8],
) -> Result<Plaintext, CryptoError> {
    let (header, rest) = ciphertext.split_at(parsed.header_len);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let body_len = sealed
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(CryptoError::Malformed("truncated body"))?;
    let (body, tag) = sealed.split_at(body_len);
    let nonce =
        Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Malformed("nonce"))?;
    // Wrapped before decrypting: a failed open may have left bytes in clear, and they are wiped.
    let mut plaintext = Plaintext::zeroed(body_len);
    with_aad(header, location, |aad| {
        cipher.open_separate_gather(nonce, Aad::from(aad), body, tag, plaintext.as_mut_slice())
    })
    .map_err(|_| CryptoError::Integrity)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SecretKey {
        SecretKey::from_bytes(&[9; 32]).unwrap_or_else(|_| unreachable!())
    }

    fn location(column: &str) -> FieldLocation<'_> {
        FieldLocation::new("patients", column, Uuid::from_u128(42))
    }

    fn sealed() -> (Vec<u8>, LessSafeKey) {
        let cipher = derive_column_key(&key(), "patients", "ssn").expect("derive");
        let subject = KeyRef::Subject(SubjectId(Uuid::from_u128(7)), 3);
        let bytes = seal(
            &cipher,
            subject,
            &location("ssn"),
            b"123-45-6789",
            &SystemRandom::new(),
        )
        .expect("seal");
        (bytes, cipher)
    }

    #[test]
    fn round_trips_and_names_its_key() {
        let (bytes, cipher) = sealed();
        let parsed = parse(&bytes).expect("parse");
        assert_eq!(
            parsed.key,
            KeyRef::Subject(SubjectId(Uuid::from_u128(7)), 3)
        );
        assert_eq!(
            open(&cipher, parsed, &location("ssn"), &bytes)
                .expect("open")
                .as_slice(),
            b"123-45-6789"
        );
        assert_eq!(bytes.len(), SUBJECT_HEADER_LEN + NONCE_LEN + 11 + TAG_LEN);
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let (bytes, cipher) = sealed();
        for bit in 0..bytes.len() * 8 {
            let mut tampered = bytes.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            let result = parse(&tampered).and_then(|parsed| {
                // A flipped key reference would select another key; with this one it must fail.
                open(&cipher, parsed, &location("ssn"), &tampered)
            });
            assert!(result.is_err(), "bit {bit} flipped and still decrypted");
        }
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let (bytes, cipher) = sealed();
        for len in 0..bytes.len() {
            let truncated = &bytes[..len];
            let result = parse(truncated)
                .and_then(|parsed| open(&cipher, parsed, &location("ssn"), truncated));
            assert!(
                result.is_err(),
                "truncated to {len} bytes and still decrypted"
            );
        }
    }

    #[test]
    fn another_row_or_column_does_not_decrypt() {
        let (bytes, cipher) = sealed();
        let parsed = parse(&bytes).expect("parse");
        let other_row = FieldLocation::new("patients", "ssn", Uuid::from_u128(43));
        assert!(matches!(
            open(&cipher, parsed, &other_row, &bytes),
            Err(CryptoError::Integrity)
        ));
        let other_column = derive_column_key(&key(), "patients", "phone").expect("derive");
        assert!(matches!(
            open(&other_column, parsed, &location("phone"), &bytes),
            Err(CryptoError::Integrity)
        ));
        // Even with the right key, the location is bound as associated data.
        assert!(matches!(
            open(&cipher, parsed, &location("phone"), &bytes),
            Err(CryptoError::Integrity)
        ));
    }

    #[test]
    fn the_associated_data_is_the_header_and_the_encoded_location() {
        let header = [1u8, 1, 7, 7];
        for table in ["patients", &"t".repeat(300)] {
            let at = FieldLocation::new(table, "ssn", Uuid::from_u128(42));
            let mut expected = header.to_vec();
            encode_parts(
                &mut expected,
                &[table.as_bytes(), b"ssn", Uuid::from_u128(42).as_bytes()],
            );
            // The short table is built on the stack, the long one on the heap.
            assert_eq!(with_aad(&header, &at, <[u8]>::to_vec), expected);
        }
    }

    #[test]
    fn unknown_versions_and_kinds_are_named() {
        assert!(matches!(
            parse(&[2, 1]),
            Err(CryptoError::UnknownVersion(2))
        ));
        assert!(matches!(
            parse(&[1, 9]),
            Err(CryptoError::Malformed("unknown key kind"))
        ));
        assert!(matches!(parse(&[]), Err(CryptoError::Malformed("empty"))));
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn the_parser_never_panics_on_plausible_headers(
            kind in 0u8..4, purpose in 0u8..6, tail in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let mut bytes = vec![FORMAT_V1, kind, purpose];
            bytes.extend(tail);
            if let Ok(parsed) = parse(&bytes) {
                prop_assert!(bytes.len() >= parsed.header_len + NONCE_LEN + TAG_LEN);
                let cipher = derive_column_key(&key(), "t", "c").expect("derive");
                prop_assert!(open(&cipher, parsed, &FieldLocation::new("t", "c", Uuid::nil()), &bytes).is_err());
            }
        }
    }
}

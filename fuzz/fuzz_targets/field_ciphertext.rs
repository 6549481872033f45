//! A field ciphertext from the database (an attacker with write access to a row): the header
//! parser, then authenticated decryption under a fixed key. Must never panic, and nothing but a
//! genuine ciphertext may open. Twin: crates/crypto/src/field.rs, `the_parser_never_panics*`.
#![no_main]

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use clinicd_crypto::field::{FieldLocation, open, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(parsed) = parse(bytes) else { return };
    let Ok(key) = UnboundKey::new(&AES_256_GCM, &[7; 32]) else { return };
    let location = FieldLocation::new("patients", "family_name", uuid::Uuid::nil());
    assert!(open(&LessSafeKey::new(key), parsed, &location, bytes).is_err());
});

//! A bearer token from a client: header decoding, algorithm and key checks, signature, claims.
//! Arbitrary bytes must never validate. Twin: crates/identity/src/tokens.rs, `tests::twin`.
#![no_main]

use std::sync::{Arc, OnceLock};

use clinicd_identity::tokens::{TokenService, TokenType};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretSlice;

fn service() -> &'static TokenService {
    static SERVICE: OnceLock<TokenService> = OnceLock::new();
    SERVICE.get_or_init(|| {
        TokenService::new(
            &SecretSlice::from(vec![42; 32]),
            "https://clinicd.example",
            "clinicd-api",
            Arc::new(clinicd_identity::clock::SystemClock),
        )
    })
}

fuzz_target!(|bytes: &[u8]| {
    let token = String::from_utf8_lossy(bytes);
    for expected in [TokenType::Access, TokenType::MfaChallenge] {
        assert!(service().validate(&token, expected).is_err());
    }
});

//! Session tokens: short-lived JWT access tokens (and single-use MFA challenge tokens),
//! HS256 under `CLINICD_TOKEN_SIGNING_KEY`.
//!
//! jsonwebtoken's defaults are too lenient for us, measured on its current release: a token
//! with no `aud` or `iss` passes `set_audience`/`set_issuer` unless those claims are listed as
//! required, `nbf` is ignored unless asked for, and the default leeway is 60 s. So the validator
//! here pins the algorithm (so `none` and algorithm confusion fail), requires every claim we
//! issue, checks `exp` and `nbf` against the injected clock with 5 s of leeway, and checks the token type, so an MFA challenge is
//! never accepted as an access token. Header fields that could name a key (`kid`, `jku`,
//! `jwk`, `x5u`) never select one: there is one key, and tokens that carry `jku`, `jwk` or
//! `x5u` (which we never issue) are refused outright.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Clock;

pub const LEEWAY_SECS: u64 = 5;

/// What a token is for. Carried in the `typ` claim and checked on every validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    Access,
    MfaChallenge,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: Uuid,
    /// The session id.
    pub sid: Uuid,
    pub typ: TokenType,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Expired, not yet valid, tampered, wrong audience, issuer, algorithm or type: the caller
    /// learns only that the token is not acceptable.
    #[error("the token is not valid")]
    Invalid,
    #[error("the token could not be created")]
    Issue,
}

pub struct TokenService {
    /// Derives each session's CSRF token (cookie clients only; see [`TokenService::csrf_token`]).
    csrf: aws_lc_rs::hmac::Key,
    /// Keys the login-attempt rows of usernames (see [`TokenService::username_key`]).
    usernames: aws_lc_rs::hmac::Key,
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TokenService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenService")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    pub fn new(
        key: &SecretSlice<u8>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // A key of its own for CSRF tokens, so they can never be mistaken for a JWT signature.
        let root = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.expose_secret());
        let csrf_key = aws_lc_rs::hmac::sign(&root, b"clinicd csrf token key v1");
        let username_key = aws_lc_rs::hmac::sign(&root, b"clinicd login attempt key v1");
        Self {
            csrf: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, csrf_key.as_ref()),
            usernames: aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                username_key.as_ref(),
            ),
            encoding: EncodingKey::from_secret(key.expose_secret()),
            decoding: DecodingKey::from_secret(key.expose_secret()),
            issuer: issuer.into(),
            audience: audience.into(),
            clock,
        }
    }

    /// The CSRF token of a session: an HMAC of its id, so it needs no storage, differs per
    /// session and cannot be forged without the key (OWASP's signed double-submit pattern).
    pub fn csrf_token(&self, session: Uuid) -> String {
        use base64::Engine as _;
        let tag = aws_lc_rs::hmac::sign(&self.csrf, session.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// A keyed hash of a folded username, for the login-attempt counter that must not hold
    /// usernames in clear (people type passwords into the username field). Derived from the
    /// signing key like the CSRF key: a new signing key starts every count afresh, which a
    /// lockout window of minutes tolerates.
    pub fn username_key(&self, folded: &str) -> Vec<u8> {
        let tag = aws_lc_rs::hmac::sign(&self.usernames, folded.as_bytes());
        let (key, _) = tag.as_ref().split_at(16);
        key.to_vec()
    }

    /// Whether `presented` is the CSRF token of `session`, compared in constant time.
    pub fn csrf_token_matches(&self, session: Uuid, presented: &str) -> bool {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(presented)
            .is_ok_and(|tag| aws_lc_rs::hmac::verify(&self.csrf, session.as_bytes(), &tag).is_ok())
    }

    /// A signed token of type `typ` for `user` in `session`, valid from `now` for `ttl`.
    pub fn issue(
        &self,
        typ: TokenType,
        user: Uuid,
        session: Uuid,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<(String, Claims), TokenError> {
        let ttl = chrono::Duration::from_std(ttl).map_err(|_| TokenError::Issue)?;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user,
            exp: (now + ttl).timestamp(),
            nbf: now.timestamp(),
            iat: now.timestamp(),
            jti: Uuid::now_v7(),
            sid: session,
            typ,
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Issue)?;
        Ok((token, claims))
    }

    /// The claims of a token that is valid now and of type `expected`.
    pub fn validate(&self, token: &str, expected: TokenType) -> Result<Claims, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256
            || header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
        {
            return Err(TokenError::Invalid);
        }
        let data = decode::<Claims>(token, &self.decoding, &self.validation())
            .map_err(|_| TokenError::Invalid)?;
        // Times are checked here against the injected clock (jsonwebtoken reads the system
        // clock), with the same 5 s of leeway either way.
        let now = self.clock.now().timestamp();
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
        let expired = data.claims.exp < now - leeway;
        let not_yet_valid = data.claims.nbf > now + leeway;
        if expired || not_yet_valid || data.claims.typ != expected {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }

    fn validation(&self) -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        // exp and nbf must be present (required above) and are checked in `validate` against
        // the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        validation.leeway = LEEWAY_SECS;
        validation
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;

    const KEY: [u8; 32] = [42; 32];

    fn service() -> TokenService {
        TokenService::new(
            &SecretSlice::from(KEY.to_vec()),
            "https://clinicd.example",
            "clinicd-api",
            Arc::new(crate::clock::SystemClock),
        )
    }

    fn access_now() -> (String, Claims) {
        service()
            .issue(
                TokenType::Access,
                Uuid::now_v7(),
                Uuid::now_v7(),
                Utc::now(),
                Duration::from_secs(900),
            )
            .expect("issue")
    }

    /// Signs arbitrary claims with our key and HS256: tokens that are genuine but wrong.
    fn sign(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&KEY),
        )
        .expect("sign")
    }

    fn claims_json(overrides: serde_json::Value) -> serde_json::Value {
        let now = Utc::now().timestamp();
        let mut claims = json!({
            "iss": "https://clinicd.example", "aud": "clinicd-api", "sub": Uuid::now_v7(),
            "exp": now + 600, "nbf": now, "iat": now, "jti": Uuid::now_v7(), "sid": Uuid::now_v7(), "typ": "access"
        });
        let (Some(map), Some(extra)) = (claims.as_object_mut(), overrides.as_object()) else {
            unreachable!()
        };
        for (key, value) in extra {
            if value.is_null() {
                map.remove(key);
            } else {
                map.insert(key.clone(), value.clone());
            }
        }
        claims
    }

    fn refused(token: &str) -> bool {
        service().validate(token, TokenType::Access) == Err(TokenError::Invalid)
    }

    #[test]
    fn a_fresh_access_token_validates() {
        let (token, claims) = access_now();
        assert_eq!(service().validate(&token, TokenType::Access), Ok(claims));
        assert!(
            !refused(&sign(claims_json(json!({})))),
            "the hand-made baseline is valid"
        );
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused_with_five_seconds_of_leeway() {
        let now = Utc::now().timestamp();
        assert!(
            refused(&sign(claims_json(json!({"exp": now - 10})))),
            "expired"
        );
        assert!(
            !refused(&sign(claims_json(json!({"exp": now - 2})))),
            "within the leeway"
        );
        assert!(
            refused(&sign(claims_json(json!({"nbf": now + 60})))),
            "not yet valid"
        );
        let (token, _) = service()
            .issue(
                TokenType::Access,
                Uuid::now_v7(),
                Uuid::now_v7(),
                Utc::now() - chrono::Duration::minutes(16),
                Duration::from_secs(900),
            )
            .expect("issue");
        assert!(refused(&token), "a 15-minute token issued 16 minutes ago");
    }

    #[test]
    fn expiry_follows_the_injected_clock() {
        let clock = Arc::new(crate::clock::ManualClock::new(Utc::now()));
        let service = TokenService::new(
            &SecretSlice::from(KEY.to_vec()),
            "https://clinicd.example",
            "clinicd-api",
            clock.clone(),
        );
        let (token, _) = service
            .issue(
                TokenType::Access,
                Uuid::now_v7(),
                Uuid::now_v7(),
                clock.now(),
                Duration::from_secs(900),
            )
            .expect("issue");
        assert!(service.validate(&token, TokenType::Access).is_ok());
        clock.advance(chrono::Duration::seconds(904));
        assert!(
            service.validate(&token, TokenType::Access).is_ok(),
            "within the 5 s leeway"
        );
        clock.advance(chrono::Duration::seconds(2));
        assert_eq!(
            service.validate(&token, TokenType::Access),
            Err(TokenError::Invalid),
            "expired"
        );
        let (early, _) = service
            .issue(
                TokenType::Access,
                Uuid::now_v7(),
                Uuid::now_v7(),
                clock.now() + chrono::Duration::seconds(30),
                Duration::from_secs(900),
            )
            .expect("issue");
        assert_eq!(
            service.validate(&early, TokenType::Access),
            Err(TokenError::Invalid),
            "not yet valid"
        );
    }

    #[test]
    fn wrong_or_missing_audience_and_issuer_are_refused() {
        assert!(refused(&sign(claims_json(json!({"aud": "other-api"})))));
        assert!(refused(&sign(claims_json(
            json!({"iss": "https://evil.example"})
        ))));
        for claim in ["aud", "iss", "exp", "nbf", "sub", "iat"] {
            assert!(
                refused(&sign(claims_json(json!({ claim: null })))),
                "missing {claim}"
            );
        }
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let (token, _) = access_now();
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        payload["sub"] = json!(Uuid::now_v7());
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        );
        assert!(refused(&forged));
        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        signature[0] ^= 1;
        assert!(refused(&format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode(signature)
        )));
        assert!(refused("not.a.token") && refused(""));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let payload = URL_SAFE_NO_PAD.encode(claims_json(json!({})).to_string());
        for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#] {
            let unsigned = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(header));
            assert!(refused(&unsigned), "{header}");
        }
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &claims_json(json!({})),
            &EncodingKey::from_secret(&KEY),
        )
        .expect("sign");
        assert!(refused(&hs512), "same key, another algorithm");
    }

    #[test]
    fn key_selecting_headers_never_select_a_key() {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("attacker-key".into());
        let other_key = encode(
            &header,
            &claims_json(json!({})),
            &EncodingKey::from_secret(b"attacker chosen key material!!!!"),
        )
        .expect("sign");
        assert!(refused(&other_key), "kid does not make us use another key");
        let mut header = Header::new(Algorithm::HS256);
        header.jku = Some("https://evil.example/jwks.json".into());
        let with_jku = encode(
            &header,
            &claims_json(json!({})),
            &EncodingKey::from_secret(&KEY),
        )
        .expect("sign");
        assert!(
            refused(&with_jku),
            "tokens naming a key URL are refused outright"
        );
    }

    #[test]
    fn token_types_are_not_interchangeable() {
        let (challenge, _) = service()
            .issue(
                TokenType::MfaChallenge,
                Uuid::now_v7(),
                Uuid::now_v7(),
                Utc::now(),
                Duration::from_secs(300),
            )
            .expect("issue");
        assert!(
            refused(&challenge),
            "an MFA challenge is not an access token"
        );
        assert!(
            service()
                .validate(&challenge, TokenType::MfaChallenge)
                .is_ok()
        );
        let (access, _) = access_now();
        assert_eq!(
            service().validate(&access, TokenType::MfaChallenge),
            Err(TokenError::Invalid)
        );
        assert!(refused(&sign(claims_json(json!({"typ": "refresh"})))));
    }

    // The property-test twin of the JWT fuzz target (docs/assurance.md): any bytes as a token,
    // any JSON as its header (alg, kid, jku, crit, b64...), any one-byte change to a genuine
    // token: an answer of Invalid, never a panic and never a token accepted.
    mod twin {
        use proptest::prelude::*;

        use super::*;

        fn b64(bytes: &[u8]) -> String {
            URL_SAFE_NO_PAD.encode(bytes)
        }

        fn header_json() -> impl Strategy<Value = String> {
            let value = prop_oneof![
                Just("\"HS256\"".to_owned()),
                Just("\"none\"".to_owned()),
                Just("\"RS256\"".to_owned()),
                Just("null".to_owned()),
                Just("false".to_owned()),
                Just("[\"b64\"]".to_owned()),
                "[ -~]{0,16}".prop_map(|s| serde_json::Value::String(s).to_string()),
            ];
            let key = prop_oneof![
                Just("alg"),
                Just("typ"),
                Just("kid"),
                Just("jku"),
                Just("jwk"),
                Just("x5u"),
                Just("crit"),
                Just("b64"),
                Just("cty"),
            ];
            proptest::collection::vec((key, value), 0..5).prop_map(|pairs| {
                let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_string_is_refused(token in any::<String>()) {
                prop_assert!(refused(&token));
            }

            #[test]
            fn any_three_parts_are_refused(
                a in proptest::collection::vec(any::<u8>(), 0..64),
                b in proptest::collection::vec(any::<u8>(), 0..64),
                c in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let token = [b64(&a), b64(&b), b64(&c)].join(".");
                prop_assert!(refused(&token));
            }

            #[test]
            fn a_genuine_signature_under_any_other_header_is_refused(header in header_json()) {
                // The signature is ours over the genuine header; swapping the header must
                // break it, whatever the header says about algorithms or keys.
                let (token, _) = access_now();
                let parts: Vec<&str> = token.split('.').collect();
                prop_assume!(URL_SAFE_NO_PAD.decode(parts[0]).ok().as_deref() != Some(header.as_bytes()));
                let swapped = [b64(header.as_bytes()).as_str(), parts[1], parts[2]].join(".");
                prop_assert!(refused(&swapped));
            }

            #[test]
            fn one_changed_byte_in_a_genuine_token_is_refused(at in any::<prop::sample::Index>(), to in any::<u8>()) {
                let (token, _) = access_now();
                let mut bytes = token.into_bytes();
                let i = at.index(bytes.len());
                prop_assume!(bytes[i] != to);
                bytes[i] = to;
                // Base64 here is canonical (no spare bits may vary), and the signature covers
                // the header and payload as sent: every change must break it.
                prop_assert!(refused(&String::from_utf8_lossy(&bytes)));
            }
        }
    }
}

//! Request ids: accepted from a well-formed `X-Request-Id` header or made here, echoed in the
//! response, attached to every log line of the request and to every problem body.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use actix_web::http::header::{HeaderMap, HeaderName};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
const MAX_LEN: usize = 64;

/// An opaque request identifier: 1 to 64 characters of `A-Z a-z 0-9 - _ . :`.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// Takes the caller's id when it is well formed (so a request can be followed across
    /// services); anything else is ignored, never echoed, and replaced by a fresh UUIDv7.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(Self::parse)
            .unwrap_or_else(Self::generate)
    }

    pub fn parse(candidate: &str) -> Option<Self> {
        let well_formed = !candidate.is_empty()
            && candidate.len() <= MAX_LEN
            && candidate
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        well_formed.then(|| Self(candidate.into()))
    }

    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

tokio::task_local! {
    static CURRENT: RequestId;
}

/// The id of the request being served on this task, if any. Lets error bodies carry the id
/// without threading the request through every error constructor.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

pub async fn scope<F: Future>(id: RequestId, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    #[test]
    fn accepts_well_formed_ids() {
        for id in [
            "abc",
            "0192b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b",
            "trace:1.2_3",
            &"a".repeat(64),
        ] {
            assert_eq!(
                RequestId::parse(id).map(|r| r.to_string()),
                Some(id.to_owned())
            );
        }
    }

    #[test]
    fn refuses_malformed_ids() {
        for id in [
            "",
            "has space",
            "new\nline",
            "<script>",
            "ü",
            &"a".repeat(65),
        ] {
            assert!(RequestId::parse(id).is_none(), "{id:?} should be refused");
        }
    }

    #[test]
    fn replaces_a_malformed_header_with_a_fresh_uuid() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("bad id with spaces"));
        let id = RequestId::from_headers(&headers);
        assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{id}");
    }

    proptest::proptest! {
        /// The property-test twin of a fuzz target: any header value gives a well-formed id,
        /// the caller's own only when it is short and of the safe characters.
        #[test]
        fn any_header_gives_a_safe_id(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                headers.insert(HEADER, value);
            }
            let id = RequestId::from_headers(&headers);
            let id = id.as_str();
            proptest::prop_assert!(!id.is_empty() && id.len() <= MAX_LEN);
            proptest::prop_assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')));
            if id.as_bytes() != raw.as_slice() {
                proptest::prop_assert!(uuid::Uuid::parse_str(id).is_ok());
            }
        }
    }
}

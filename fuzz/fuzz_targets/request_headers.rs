//! Headers every request carries: `X-Request-Id` (echoed and written into the audit trail) and
//! `X-Forwarded-For` (the client address rate limits, blocks and the audit trail use). The id
//! must come out safe; an untrusted peer must never be given another address, and a trusted
//! proxy's header must never make one up. Twins: crates/api/src/request_id.rs and
//! crates/api/src/client_ip.rs.
#![no_main]

use std::net::IpAddr;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use clinicd_api::client_ip::TrustedProxies;
use clinicd_api::request_id::RequestId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], &[u8], bool)| {
    let (id, forwarded, from_proxy) = input;
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(id) {
        headers.insert(HeaderName::from_static("x-request-id"), value);
    }
    if let Ok(value) = HeaderValue::from_bytes(forwarded) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    let id = RequestId::from_headers(&headers);
    assert!(!id.as_str().is_empty() && id.as_str().len() <= 64);
    assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)));

    let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap_or_default()]);
    let peer: IpAddr = if from_proxy { [10, 0, 0, 1].into() } else { [203, 0, 113, 7].into() };
    let client = proxies.client_ip(peer, &headers);
    if !from_proxy {
        assert_eq!(client, peer, "an untrusted peer named another address");
    } else if client != peer {
        let text = String::from_utf8_lossy(forwarded);
        let named = text.split(',').any(|hop| hop.trim().parse::<IpAddr>() == Ok(client));
        assert!(named, "an address the header does not hold");
    }
});

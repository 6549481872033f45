//! Which address counts as the client. Behind a load balancer the peer is the proxy, so the
//! client is read from `X-Forwarded-For`, but only through proxies we were told to trust:
//! a client can put anything in that header, so it is never taken blindly.

use std::net::IpAddr;

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// The resolved client address of a request, stored in the request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    /// The trusted networks (never blocked: many clients stand behind them).
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The peer itself unless it is a trusted proxy; then the right-most `X-Forwarded-For`
    /// entry that is not a trusted proxy (each proxy appends the address it saw, so entries to
    /// the left of the first untrusted hop may be forged). A malformed entry stops the walk at
    /// the last address we could vouch for.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.trusts(ip) => client = ip,
                Ok(ip) => return ip,
                Err(_) => return client,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")])
    }

    fn xff(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            actix_web::http::header::HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static(value),
        );
        headers
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_its_address() {
        assert_eq!(
            proxies().client_ip(ip("203.0.113.9"), &xff("198.51.100.1")),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &xff("198.51.100.1")),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_trusted_proxy_reports_the_first_untrusted_hop_from_the_right() {
        let headers = xff("6.6.6.6, 198.51.100.7, 10.1.1.1");
        assert_eq!(
            proxies().client_ip(ip("10.0.0.2"), &headers),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn malformed_entries_stop_at_the_last_vouched_address() {
        assert_eq!(
            proxies().client_ip(ip("10.0.0.2"), &xff("garbage, 10.9.9.9")),
            ip("10.9.9.9")
        );
        assert_eq!(
            proxies().client_ip(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    proptest::proptest! {
        /// The property-test twin of a fuzz target: whatever an attacker puts in the header, the
        /// answer is the peer, or an address the header holds, and an untrusted peer is always
        /// itself.
        #[test]
        fn forwarded_headers_never_panic_or_invent_an_address(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            trusted_peer in proptest::prelude::any::<bool>(),
        ) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                headers.insert(
                    actix_web::http::header::HeaderName::from_static("x-forwarded-for"),
                    value,
                );
            }
            let peer = if trusted_peer { ip("10.1.2.3") } else { ip("203.0.113.9") };
            let client = proxies().client_ip(peer, &headers);
            let text = String::from_utf8_lossy(&raw).into_owned();
            proptest::prop_assert!(
                client == peer || text.split(',').any(|hop| hop.trim().parse() == Ok(client))
            );
            if !trusted_peer {
                proptest::prop_assert_eq!(client, peer);
            }
        }
    }
}

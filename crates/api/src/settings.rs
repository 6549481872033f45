//! The HTTP layer's settings, built and validated by the server's configuration.

use std::collections::BTreeSet;

use crate::client_ip::TrustedProxies;
use crate::rate_limit::RateLimitSettings;

/// Default JSON body limit: 1 MiB.
pub const DEFAULT_JSON_LIMIT: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Production mode: only `https` origins may be allowed (checked when parsing).
    pub production: bool,
    pub allowed_origins: AllowedOrigins,
    pub trusted_proxies: TrustedProxies,
    pub rate_limits: RateLimitSettings,
    pub json_limit: usize,
    /// How long a break-the-glass grant lasts.
    pub break_glass_minutes: u32,
    /// Whether break-the-glass opens notes labelled psychiatric (PSY, PSYTHPN) to a holder of
    /// `restricted:psychotherapy` outside the care team (docs/lifecycle.md). Off by default.
    pub break_glass_opens_psychiatric: bool,
    /// How long a dual-control proposal waits for a second administrator.
    pub proposal_ttl_hours: u32,
    /// How far back and ahead a booking may start.
    pub booking: clinicd_domain::appointment::BookingWindow,
    /// Uploads: size limit, allowed types, retention of deleted files.
    pub files: clinicd_files::FileSettings,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            production: true,
            allowed_origins: AllowedOrigins::default(),
            trusted_proxies: TrustedProxies::default(),
            rate_limits: RateLimitSettings::default(),
            json_limit: DEFAULT_JSON_LIMIT,
            break_glass_minutes: clinicd_rbac::DEFAULT_BREAK_GLASS_MINUTES,
            break_glass_opens_psychiatric: false,
            proposal_ttl_hours: clinicd_rbac::proposals::DEFAULT_TTL_HOURS,
            booking: clinicd_domain::appointment::BookingWindow::default(),
            files: clinicd_files::FileSettings::default(),
        }
    }
}

/// Origins allowed to make credentialed cross-origin requests, compared exactly
/// (scheme, host and port; no wildcards, no paths).
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(BTreeSet<String>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginError {
    #[error(
        "`{0}` is not an origin: expected scheme://host[:port] with no path, e.g. https://clinic.example"
    )]
    Malformed(String),
    #[error("`{0}` is not https: production allows only https origins")]
    NotHttps(String),
}

impl AllowedOrigins {
    /// Parses a comma-separated list. An empty list allows no cross-origin caller.
    pub fn parse(list: &str, production: bool) -> Result<Self, OriginError> {
        let mut origins = BTreeSet::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            origins.insert(parse_origin(entry, production)?);
        }
        Ok(Self(origins))
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.0.contains(origin)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

fn parse_origin(entry: &str, production: bool) -> Result<String, OriginError> {
    let malformed = || OriginError::Malformed(entry.to_owned());
    let (scheme, rest) = entry.split_once("://").ok_or_else(malformed)?;
    if scheme != "https" && scheme != "http" {
        return Err(malformed());
    }
    let (host_ok, port) = match rest.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:8443`.
        Some(bracketed) => {
            let (inside, tail) = bracketed.split_once(']').ok_or_else(malformed)?;
            let port = match tail {
                "" => None,
                tail => Some(tail.strip_prefix(':').ok_or_else(malformed)?),
            };
            (inside.parse::<std::net::Ipv6Addr>().is_ok(), port)
        }
        None => {
            let (host, port) = match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            };
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
                && host.bytes().any(|b| b.is_ascii_alphanumeric());
            (host_ok, port)
        }
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if !host_ok || !port_ok {
        return Err(malformed());
    }
    if production && scheme != "https" {
        return Err(OriginError::NotHttps(entry.to_owned()));
    }
    // Browsers send the host in lower case.
    Ok(entry.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_origins() {
        let origins =
            AllowedOrigins::parse("https://app.clinic.example, https://localhost:8443", true)
                .expect("valid");
        assert!(origins.allows("https://app.clinic.example"));
        assert!(origins.allows("https://localhost:8443"));
        assert!(!origins.allows("https://localhost"));
        assert!(!origins.allows("https://evil.app.clinic.example"));
        assert!(AllowedOrigins::parse("https://[::1]:8443", true).is_ok());
        assert!(
            AllowedOrigins::parse("", true)
                .expect("empty is valid")
                .iter()
                .next()
                .is_none()
        );
    }

    #[test]
    fn refuses_malformed_origins() {
        for bad in [
            "*",
            "app.clinic.example",
            "https://",
            "https://app.clinic.example/",
            "https://app.clinic.example/path",
            "ftp://app.clinic.example",
            "https://app.clinic.example:0",
            "https://app.clinic.example:99999",
            "https://*.clinic.example",
            "null",
            "https://[::1",
            "https://[zz]:80",
        ] {
            assert_eq!(
                AllowedOrigins::parse(bad, false).map(|_| ()),
                Err(OriginError::Malformed(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn production_refuses_plain_http_origins() {
        assert_eq!(
            AllowedOrigins::parse("http://app.clinic.example", true).map(|_| ()),
            Err(OriginError::NotHttps("http://app.clinic.example".into()))
        );
        assert!(AllowedOrigins::parse("http://localhost:5173", false).is_ok());
    }
}

//! Rate limits (GCRA, via governor): one per-client-IP limit for every route, plus a limit per
//! route class (`api`, `login`, `upload`) from a table in configuration.
//!
//! The `api` class and the per-IP limit live in each instance's memory: behind a load balancer
//! with N instances a client can reach N times them (set them as the global figure divided by
//! N). The security classes (`login`, which covers the MFA steps, `upload`, `export`) are shared
//! by every instance when `CLINICD_SHARED_LIMITS` is on: decided in Postgres by the secops
//! crate's GCRA ([`check_class`]). If Postgres cannot decide, the login class fails closed
//! (503) and the others fall back to this process's limiters, counted and logged.

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use clinicd_secops::{Decision, Rate};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use uuid::Uuid;

use crate::problem::ApiError;
use crate::state::ApiState;

/// A route's rate-limit class, declared in the route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateClass {
    /// Ordinary API calls: keyed by user on routes that need a permission, by IP on public
    /// and session routes (whose callers the throttle layer cannot know yet).
    Api,
    /// Login steps: keyed by IP and by username.
    Login,
    /// File uploads: keyed by user.
    Upload,
    /// Whole-record exports: keyed by user.
    Export,
}

impl RateClass {
    pub fn policy_name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Login => "login",
            Self::Upload => "upload",
            Self::Export => "export",
        }
    }

    /// Classes that guard against attacks rather than floods: shared across instances.
    pub fn is_security(self) -> bool {
        !matches!(self, Self::Api)
    }
}

/// Whom a class limit counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    Ip(IpAddr),
    User(Uuid),
    IpAndUsername(IpAddr, String),
}

/// "N requests per window", written `N/window` in configuration, e.g. `100/1m`, `5/15m`,
/// `10/1h`. Enforced as a burst of N refilling evenly over the window.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct QuotaSpec {
    pub count: NonZeroU32,
    pub window: Duration,
}

impl QuotaSpec {
    fn quota(self) -> Quota {
        // `window / count` is never zero: `parse` bounds both.
        Quota::with_period(self.window / self.count.get())
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.count)
    }
}

impl fmt::Debug for QuotaSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.count, self.window.as_secs())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "expected COUNT/WINDOW such as 100/1m, 5/15m or 10/1h (count 1..=1000000, window 1s..=24h)"
)]
pub struct QuotaSpecError;

impl FromStr for QuotaSpec {
    type Err = QuotaSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, window) = s.trim().split_once('/').ok_or(QuotaSpecError)?;
        let count: u32 = count.trim().parse().map_err(|_| QuotaSpecError)?;
        let count = NonZeroU32::new(count)
            .filter(|c| c.get() <= 1_000_000)
            .ok_or(QuotaSpecError)?;
        let window = parse_window(window.trim()).ok_or(QuotaSpecError)?;
        if window < Duration::from_secs(1) || window > Duration::from_secs(86_400) {
            return Err(QuotaSpecError);
        }
        Ok(Self { count, window })
    }
}

fn parse_window(s: &str) -> Option<Duration> {
    let unit_at = s.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = s.split_at(unit_at);
    let number: u64 = if number.is_empty() {
        1
    } else {
        number.parse().ok()?
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return None,
    };
    number.checked_mul(seconds).map(Duration::from_secs)
}

/// The configured limits.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub per_ip: QuotaSpec,
    pub api: QuotaSpec,
    pub login: QuotaSpec,
    pub upload: QuotaSpec,
    pub export: QuotaSpec,
}

impl Default for RateLimitSettings {
    /// The security plan's figures; `per_ip` is a ceiling above `api` so that several users
    /// behind one clinic NAT are not starved.
    fn default() -> Self {
        let spec = |count, secs| QuotaSpec {
            count: NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN),
            window: Duration::from_secs(secs),
        };
        Self {
            per_ip: spec(600, 60),
            api: spec(100, 60),
            login: spec(5, 15 * 60),
            upload: spec(10, 3600),
            export: spec(20, 3600),
        }
    }
}

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

fn keyed<K: Clone + Hash + Eq>(spec: QuotaSpec) -> Keyed<K> {
    RateLimiter::keyed(spec.quota()).with_middleware::<StateInformationMiddleware>()
}

/// The state of one policy after a request was counted, for the `RateLimit` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState {
    pub policy: &'static str,
    pub spec: QuotaSpec,
    pub remaining: u32,
    /// Seconds until the full quota is available again.
    pub reset_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub policy: &'static str,
    pub spec: QuotaSpec,
    pub retry_after: Duration,
}

/// All of the process's limiters.
pub struct Limits {
    settings: RateLimitSettings,
    per_ip: Keyed<IpAddr>,
    api: Keyed<RateKey>,
    login: Keyed<RateKey>,
    upload: Keyed<RateKey>,
    export: Keyed<RateKey>,
    clock: DefaultClock,
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Limits {
    pub fn new(settings: RateLimitSettings) -> Self {
        Self {
            per_ip: keyed(settings.per_ip),
            api: keyed(settings.api),
            login: keyed(settings.login),
            upload: keyed(settings.upload),
            export: keyed(settings.export),
            clock: DefaultClock::default(),
            settings,
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<PolicyState, Refusal> {
        self.decide("ip", self.settings.per_ip, self.per_ip.check_key(&ip))
    }

    pub fn spec(&self, class: RateClass) -> QuotaSpec {
        match class {
            RateClass::Api => self.settings.api,
            RateClass::Login => self.settings.login,
            RateClass::Upload => self.settings.upload,
            RateClass::Export => self.settings.export,
        }
    }

    pub fn check(&self, class: RateClass, key: &RateKey) -> Result<PolicyState, Refusal> {
        let (limiter, spec) = match class {
            RateClass::Api => (&self.api, self.settings.api),
            RateClass::Login => (&self.login, self.settings.login),
            RateClass::Upload => (&self.upload, self.settings.upload),
            RateClass::Export => (&self.export, self.settings.export),
        };
        self.decide(class.policy_name(), spec, limiter.check_key(key))
    }

    fn decide(
        &self,
        policy: &'static str,
        spec: QuotaSpec,
        outcome: Result<
            governor::middleware::StateSnapshot,
            governor::NotUntil<<DefaultClock as Clock>::Instant>,
        >,
    ) -> Result<PolicyState, Refusal> {
        match outcome {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = spec.count.get().saturating_sub(remaining);
                let reset = snapshot.quota().replenish_interval() * used;
                Ok(PolicyState {
                    policy,
                    spec,
                    remaining,
                    reset_secs: reset.as_secs_f64().ceil() as u64,
                })
            }
            Err(not_until) => Err(Refusal {
                policy,
                spec,
                retry_after: not_until.wait_time_from(self.clock.now()),
            }),
        }
    }

    /// Forgets keys whose buckets are full again, so memory tracks recent clients only.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
        for limiter in [&self.api, &self.login, &self.upload, &self.export] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Counts a request against its class: in Postgres for a security class when limits are
/// shared, else in this process. `Err` only when the login class cannot be decided (fail
/// closed: 503).
pub async fn check_class(
    state: &ApiState,
    class: RateClass,
    key: &RateKey,
) -> Result<Result<PolicyState, Refusal>, ApiError> {
    let shared = state
        .secops
        .limiter
        .as_ref()
        .filter(|_| class.is_security());
    let Some(limiter) = shared else {
        return Ok(state.limits.check(class, key));
    };
    let spec = state.limits.spec(class);
    let decided = async {
        let key = shared_key(state, key).await?;
        let rate = Rate {
            count: spec.count.get(),
            window: spec.window,
        };
        limiter
            .check(class.policy_name(), &key, rate)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    match decided {
        Ok(Decision::Allowed { remaining, reset }) => Ok(Ok(PolicyState {
            policy: class.policy_name(),
            spec,
            remaining,
            reset_secs: reset.as_secs_f64().ceil() as u64,
        })),
        Ok(Decision::Refused { retry_after }) => Ok(Err(Refusal {
            policy: class.policy_name(),
            spec,
            retry_after,
        })),
        Err(error) => {
            state
                .metrics
                .count_shared_limit_failure(class.policy_name());
            if class == RateClass::Login {
                tracing::error!(policy = class.policy_name(), %error, "shared rate limit unavailable; login refused (fail closed)");
                Err(ApiError::Unavailable)
            } else {
                tracing::warn!(policy = class.policy_name(), %error, "shared rate limit unavailable; using this instance's limit");
                Ok(state.limits.check(class, key))
            }
        }
    }
}

/// The key of a shared bucket. A username is stored only as a keyed hash: people type
/// passwords into the username field.
async fn shared_key(state: &ApiState, key: &RateKey) -> Result<String, String> {
    Ok(match key {
        RateKey::Ip(ip) => format!("ip:{ip}"),
        RateKey::User(user) => format!("user:{user}"),
        RateKey::IpAndUsername(ip, name) => {
            let hashed = state.secops.keyed(name).await.map_err(|e| e.to_string())?;
            format!("ipuser:{ip}:{hashed}")
        }
    })
}

/// `RateLimit-Policy` and `RateLimit` header values (IETF draft-ietf-httpapi-ratelimit-headers,
/// structured-field form: `"api";q=100;w=60`).
pub fn policy_header(states: &[(&'static str, QuotaSpec)]) -> String {
    states
        .iter()
        .map(|(name, spec)| format!("\"{name}\";q={};w={}", spec.count, spec.window.as_secs()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn state_header(states: &[PolicyState]) -> String {
    states
        .iter()
        .map(|s| format!("\"{}\";r={};t={}", s.policy, s.remaining, s.reset_secs))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The caller's daily export limit (docs/lifecycle.md): counts `patient` against it, or refuses
/// with `429 export_limit` (and an alert to the security office). Shared by every instance. If
/// the count cannot be kept, the export is refused (503): a limit that fails open is none.
pub async fn take_export(
    state: &crate::state::ApiState,
    grants: &clinicd_rbac::Grants,
    patient: uuid::Uuid,
) -> Result<(), ApiError> {
    use clinicd_secops::export_quota::Quota;
    match state
        .secops
        .take_export(grants.user.0, &grants.roles, patient)
        .await
    {
        Ok(Quota::Allowed) => Ok(()),
        Ok(Quota::Exceeded { limit, retry_after }) => {
            Err(ApiError::ExportLimit { limit, retry_after })
        }
        Err(error) => {
            tracing::error!(%error, "the export count could not be kept: refusing the export");
            Err(ApiError::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quota_specs() {
        let spec: QuotaSpec = "5/15m".parse().expect("valid");
        assert_eq!(
            (spec.count.get(), spec.window),
            (5, Duration::from_secs(900))
        );
        let spec: QuotaSpec = " 100 / m ".parse().expect("valid");
        assert_eq!(
            (spec.count.get(), spec.window),
            (100, Duration::from_secs(60))
        );
        assert_eq!(
            "10/1h".parse::<QuotaSpec>().map(|s| s.window.as_secs()),
            Ok(3600)
        );
    }

    #[test]
    fn refuses_malformed_quota_specs() {
        for bad in [
            "",
            "5",
            "0/1m",
            "-1/1m",
            "5/0s",
            "5/1d",
            "5/25h",
            "x/1m",
            "5/1m/2",
            "2000000/1s",
        ] {
            assert_eq!(bad.parse::<QuotaSpec>(), Err(QuotaSpecError), "{bad:?}");
        }
    }

    #[test]
    fn refuses_past_the_burst_and_says_when_to_retry() {
        let spec: QuotaSpec = "2/1h".parse().expect("valid");
        let limits = Limits::new(RateLimitSettings {
            per_ip: spec,
            ..Default::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(limits.check_ip(ip).map(|s| s.remaining), Ok(1));
        assert_eq!(limits.check_ip(ip).map(|s| s.remaining), Ok(0));
        let refusal = limits
            .check_ip(ip)
            .expect_err("third request is over the limit");
        assert_eq!(refusal.policy, "ip");
        // One cell refills every 30 minutes.
        assert!(
            refusal.retry_after > Duration::from_secs(29 * 60),
            "{:?}",
            refusal.retry_after
        );
        assert!(
            refusal.retry_after <= Duration::from_secs(30 * 60),
            "{:?}",
            refusal.retry_after
        );
        // Another client is unaffected.
        assert!(limits.check_ip("192.0.2.2".parse().expect("ip")).is_ok());
    }

    #[test]
    fn class_limits_are_keyed_separately() {
        let spec: QuotaSpec = "1/1h".parse().expect("valid");
        let limits = Limits::new(RateLimitSettings {
            login: spec,
            ..Default::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let alice = RateKey::IpAndUsername(ip, "alice".into());
        let bob = RateKey::IpAndUsername(ip, "bob".into());
        assert!(limits.check(RateClass::Login, &alice).is_ok());
        assert!(limits.check(RateClass::Login, &alice).is_err());
        assert!(limits.check(RateClass::Login, &bob).is_ok());
        assert!(
            limits.check(RateClass::Api, &alice).is_ok(),
            "classes do not share buckets"
        );
    }

    #[test]
    fn formats_ietf_headers() {
        let spec: QuotaSpec = "100/1m".parse().expect("valid");
        assert_eq!(policy_header(&[("api", spec)]), "\"api\";q=100;w=60");
        let state = PolicyState {
            policy: "api",
            spec,
            remaining: 99,
            reset_secs: 1,
        };
        assert_eq!(state_header(&[state]), "\"api\";r=99;t=1");
    }
}

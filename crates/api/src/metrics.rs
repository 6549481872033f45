//! Prometheus metrics: request counts and latency per route template and status, rate-limit
//! refusals and refused cross-origin requests. Labels are route templates and codes only, so
//! no id or PHI can become a label. Served on the separate admin listener, not the API.

use clinicd_domain::read_connections::ReadConnections;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    rate_limited: IntCounterVec,
    cors_refused: IntCounterVec,
    audit_failures: prometheus::IntCounter,
    session_checks: IntCounterVec,
    security: Security,
}

/// Where a request admitted on a remembered session had its session confirmed.
#[derive(Debug, Clone, Copy)]
pub enum SessionCheckKind {
    /// In the statement that read the record or the search's candidates.
    InStatement,
    /// That statement failed the check: checked in full, then read again.
    Full,
    /// The handler answered without such a statement: checked in full before the answer left.
    AfterHandler,
}

impl SessionCheckKind {
    const ALL: [Self; 3] = [Self::InStatement, Self::Full, Self::AfterHandler];

    fn label(self) -> &'static str {
        match self {
            Self::InStatement => "in_statement",
            Self::Full => "full",
            Self::AfterHandler => "after_handler",
        }
    }
}

/// The security dashboard's numbers (refreshed from the database every 30 s by each instance)
/// and this instance's security counters.
#[derive(Debug, Clone)]
struct Security {
    alerts: IntGaugeVec,
    blocks_active: IntGauge,
    failed_logins: IntGauge,
    refusals: IntGaugeVec,
    break_glass_pending: IntGauge,
    dead_deliveries: IntGauge,
    audit_head_seq: IntGauge,
    checkpoint_time: IntGauge,
    checkpoint_failed: IntGauge,
    key_age: IntGaugeVec,
    key_rotation_due: IntGaugeVec,
    blocklist_stale: IntGauge,
    blocked: IntCounterVec,
    shared_limit_failures: IntCounterVec,
    signal_failures: prometheus::IntCounter,
}

impl Security {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        fn gauge(
            registry: &Registry,
            name: &str,
            help: &str,
        ) -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        }
        fn gauges(
            registry: &Registry,
            name: &str,
            help: &str,
            label: &str,
        ) -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        }
        fn counters(
            registry: &Registry,
            name: &str,
            help: &str,
            label: &str,
        ) -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let signal_failures = prometheus::IntCounter::new(
            "security_signal_failures_total",
            "Abuse signals that could not be recorded (the shared store was unreachable)",
        )?;
        registry.register(Box::new(signal_failures.clone()))?;
        Ok(Self {
            alerts: gauges(
                registry,
                "security_alerts",
                "Unresolved security alerts by state",
                "state",
            )?,
            blocks_active: gauge(
                registry,
                "security_blocks_active",
                "Active blocks of addresses and accounts",
            )?,
            failed_logins: gauge(
                registry,
                "security_failed_logins_24h",
                "Failed or refused logins in the last 24 hours",
            )?,
            refusals: gauges(
                registry,
                "security_refusals_24h",
                "Refused requests in the last 24 hours by problem code (`all`: their sum)",
                "class",
            )?,
            break_glass_pending: gauge(
                registry,
                "security_break_glass_pending_review",
                "Emergency accesses awaiting review",
            )?,
            dead_deliveries: gauge(
                registry,
                "security_alert_deliveries_dead",
                "Alert deliveries that gave up",
            )?,
            audit_head_seq: gauge(
                registry,
                "security_audit_head_seq",
                "The audit chain's last sequence number",
            )?,
            checkpoint_time: gauge(
                registry,
                "security_audit_last_checkpoint_timestamp_seconds",
                "When the last audit checkpoint was written (0: never)",
            )?,
            checkpoint_failed: gauge(
                registry,
                "security_audit_checkpoint_failed",
                "1 if the last audit checkpoint run failed",
            )?,
            key_age: gauges(
                registry,
                "security_key_age_days",
                "Age of the active key of each purpose",
                "purpose",
            )?,
            key_rotation_due: gauges(
                registry,
                "security_key_rotation_due",
                "1 if the active key of a purpose is due for rotation",
                "purpose",
            )?,
            blocklist_stale: gauge(
                registry,
                "security_blocklist_stale",
                "1 if this instance could not refresh its block list",
            )?,
            blocked: counters(
                registry,
                "security_blocked_requests_total",
                "Requests refused by a block, by target",
                "target",
            )?,
            shared_limit_failures: counters(
                registry,
                "shared_limit_failures_total",
                "Shared rate-limit decisions that failed (login fails closed; others fall back to this instance)",
                "policy",
            )?,
            signal_failures,
        })
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("clinicd".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by method, route template and status",
            ),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to produce a response head",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["method", "route"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new("rate_limited_total", "Requests refused with 429, by policy"),
            &["policy"],
        )?;
        let cors_refused = IntCounterVec::new(
            Opts::new(
                "cors_refused_total",
                "Cross-origin requests refused, by kind",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        let audit_failures = prometheus::IntCounter::new(
            "audit_failures_total",
            "Responses withheld (503) because their audit event could not be committed",
        )?;
        registry.register(Box::new(cors_refused.clone()))?;
        registry.register(Box::new(audit_failures.clone()))?;
        let session_checks = IntCounterVec::new(
            Opts::new(
                "remembered_session_checks_total",
                "Requests admitted on a remembered session, by where the session was confirmed",
            ),
            &["where"],
        )?;
        registry.register(Box::new(session_checks.clone()))?;
        for kind in SessionCheckKind::ALL {
            session_checks.with_label_values(&[kind.label()]);
        }
        let security = Security::new(&registry)?;
        // Every known label present from the start (at 0), so rules and dashboards see the
        // series before the first event rather than "no data".
        for target in ["ip", "account"] {
            security.blocked.with_label_values(&[target]);
        }
        for policy in ["login", "upload", "export"] {
            security.shared_limit_failures.with_label_values(&[policy]);
        }
        for state in ["open", "acknowledged"] {
            security.alerts.with_label_values(&[state]);
        }
        for policy in ["ip", "api", "login", "upload", "export"] {
            rate_limited.with_label_values(&[policy]);
        }
        for kind in ["preflight", "request"] {
            cors_refused.with_label_values(&[kind]);
        }
        Ok(Self {
            security,
            registry,
            requests,
            latency,
            rate_limited,
            cors_refused,
            session_checks,
            audit_failures,
        })
    }

    /// Sets the dashboard gauges from a freshly read dashboard.
    pub fn observe_security(&self, board: &clinicd_secops::dashboard::Dashboard, stale: bool) {
        let s = &self.security;
        s.alerts.with_label_values(&["open"]).set(board.alerts.open);
        s.alerts
            .with_label_values(&["acknowledged"])
            .set(board.alerts.acknowledged);
        s.blocks_active.set(board.active_blocks);
        s.failed_logins.set(board.failed_logins_24h);
        s.refusals.reset();
        let all: i64 = board.refusals_24h.iter().map(|r| r.count).sum();
        s.refusals.with_label_values(&["all"]).set(all);
        for refusal in &board.refusals_24h {
            s.refusals
                .with_label_values(&[refusal.class.as_str()])
                .set(refusal.count);
        }
        s.break_glass_pending.set(board.break_glass_pending_review);
        s.dead_deliveries.set(board.dead_deliveries);
        s.audit_head_seq.set(board.audit.head_seq.unwrap_or(0));
        s.checkpoint_time
            .set(board.audit.last_checkpoint_at.map_or(0, |t| t.timestamp()));
        s.checkpoint_failed
            .set(i64::from(board.audit.last_checkpoint_failed));
        for key in &board.keys {
            s.key_age
                .with_label_values(&[key.purpose.as_str()])
                .set(key.age_days);
            s.key_rotation_due
                .with_label_values(&[key.purpose.as_str()])
                .set(i64::from(key.rotation_due));
        }
        s.blocklist_stale.set(i64::from(stale));
    }

    pub fn count_session_check(&self, kind: SessionCheckKind) {
        self.session_checks.with_label_values(&[kind.label()]).inc();
    }

    /// Requests admitted on a remembered session whose session was confirmed `kind`.
    pub fn session_checks(&self, kind: SessionCheckKind) -> u64 {
        self.session_checks.with_label_values(&[kind.label()]).get()
    }

    pub fn count_blocked(&self, target: &str) {
        self.security.blocked.with_label_values(&[target]).inc();
    }

    pub fn count_shared_limit_failure(&self, policy: &str) {
        self.security
            .shared_limit_failures
            .with_label_values(&[policy])
            .inc();
    }

    pub fn count_signal_failure(&self) {
        self.security.signal_failures.inc();
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    pub fn count_rate_limited(&self, policy: &str) {
        self.rate_limited.with_label_values(&[policy]).inc();
    }

    pub fn count_audit_failure(&self) {
        self.audit_failures.inc();
    }

    pub fn count_cors_refused(&self, kind: &str) {
        self.cors_refused.with_label_values(&[kind]).inc();
    }

    pub fn rate_limited(&self, policy: &str) -> u64 {
        self.rate_limited.with_label_values(&[policy]).get()
    }

    /// Adds another crate's metrics (the backup state, for one) to the same exposition.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// Exports the database pool's connections, read from the pool at each scrape (no refresh
    /// loop, so never stale): a soak or a leak shows as growth between scrapes.
    pub fn watch_pool(&self, pool: sqlx::PgPool) -> Result<(), prometheus::Error> {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let collector = PoolCollector {
            open: gauge(
                "db_pool_connections",
                "Connections the pool holds open (idle and in use)",
            )?,
            idle: gauge("db_pool_idle_connections", "Open connections not in use")?,
            max: gauge(
                "db_pool_max_connections",
                "The pool's limit (CLINICD_DB_MAX_CONNECTIONS)",
            )?,
            pool,
        };
        self.registry.register(Box::new(collector))
    }

    /// Exports the API workers' own pools ([`crate::WorkerPools`]), summed over the workers and
    /// read at each scrape like [`Metrics::watch_pool`]: with both, a scrape shows every
    /// connection the instance holds.
    pub fn watch_worker_pools(&self, pools: crate::WorkerPools) -> Result<(), prometheus::Error> {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let collector = WorkerPoolCollector {
            pools: gauge(
                "db_worker_pools",
                "The API workers' own connection sets for patient reads (one per worker running)",
            )?,
            open: gauge(
                "db_worker_pool_connections",
                "Connections the workers hold open for patient reads (idle and in use), all workers together",
            )?,
            idle: gauge(
                "db_worker_pool_idle_connections",
                "Open connections of the workers' sets not in use, all workers together",
            )?,
            max: gauge(
                "db_worker_pool_max_connections",
                "The workers' sets' limits together (each half CLINICD_DB_MAX_CONNECTIONS, at least 2)",
            )?,
            source: pools,
        };
        self.registry.register(Box::new(collector))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// The pool's numbers at scrape time (see [`Metrics::watch_pool`]).
struct PoolCollector {
    pool: sqlx::PgPool,
    open: IntGauge,
    idle: IntGauge,
    max: IntGauge,
}

impl prometheus::core::Collector for PoolCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        [&self.open, &self.idle, &self.max]
            .into_iter()
            .flat_map(|g| g.desc())
            .collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.open.set(i64::from(self.pool.size()));
        self.idle
            .set(i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX));
        self.max
            .set(i64::from(self.pool.options().get_max_connections()));
        [&self.open, &self.idle, &self.max]
            .into_iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}

/// The workers' pools' numbers at scrape time, summed (see [`Metrics::watch_worker_pools`]).
struct WorkerPoolCollector {
    source: crate::WorkerPools,
    pools: IntGauge,
    open: IntGauge,
    idle: IntGauge,
    max: IntGauge,
}

impl prometheus::core::Collector for WorkerPoolCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        [&self.pools, &self.open, &self.idle, &self.max]
            .into_iter()
            .flat_map(|g| g.desc())
            .collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let made = self.source.made();
        let sum = |f: &dyn Fn(&ReadConnections) -> i64| made.iter().map(|own| f(own)).sum::<i64>();
        self.pools
            .set(i64::try_from(made.len()).unwrap_or(i64::MAX));
        self.open.set(sum(&|own| i64::from(own.size())));
        self.idle.set(sum(&|own| {
            i64::try_from(own.num_idle()).unwrap_or(i64::MAX)
        }));
        self.max.set(sum(&|own| i64::from(own.max_connections())));
        [&self.pools, &self.open, &self.idle, &self.max]
            .into_iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}

//! Prometheus metrics: request counts and latency per route template and status, rate-limit
//! refusals and refused cross-origin requests. Labels are route templates and codes only, so
//! no id or PHI can become a label. Served on the separate admin listener, not the API.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    rate_limited: IntCounterVec,
    cors_refused: IntCounterVec,
    audit_failures: prometheus::IntCounter,
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
        Ok(Self {
            registry,
            requests,
            latency,
            rate_limited,
            cors_refused,
            audit_failures,
        })
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

//! What every handler and middleware shares, registered once as app data.

use std::sync::Arc;

use sqlx::PgPool;

use crate::metrics::Metrics;
use crate::rate_limit::Limits;
use crate::settings::HttpSettings;

#[derive(Debug, Clone)]
pub struct ApiState {
    pub db: PgPool,
    pub settings: Arc<HttpSettings>,
    pub limits: Arc<Limits>,
    pub metrics: Metrics,
}

impl ApiState {
    pub fn new(db: PgPool, settings: HttpSettings, metrics: Metrics) -> Self {
        Self {
            db,
            limits: Arc::new(Limits::new(settings.rate_limits.clone())),
            settings: Arc::new(settings),
            metrics,
        }
    }
}

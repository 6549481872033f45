//! What every handler and middleware shares, registered once as app data.

use std::sync::Arc;

use clinicd_audit::AuditWriter;
use clinicd_identity::Identity;
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
    pub identity: Arc<Identity>,
    pub audit: AuditWriter,
}

impl ApiState {
    pub fn new(
        db: PgPool,
        settings: HttpSettings,
        metrics: Metrics,
        identity: Arc<Identity>,
        audit: AuditWriter,
    ) -> Self {
        Self {
            identity,
            audit,
            db,
            limits: Arc::new(Limits::new(settings.rate_limits.clone())),
            settings: Arc::new(settings),
            metrics,
        }
    }
}

//! What every handler and middleware shares, registered once as app data.

use std::sync::Arc;

use clinicd_audit::AuditWriter;
use clinicd_domain::{AppointmentStore, ConsentStore, NoteStore, PatientStore};
use clinicd_files::Files;
use clinicd_identity::Identity;
use clinicd_lifecycle::Lifecycle;
use clinicd_rbac::Rbac;
use clinicd_secops::SecOps;
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
    pub rbac: Arc<Rbac>,
    pub patients: PatientStore,
    pub appointments: AppointmentStore,
    pub notes: NoteStore,
    /// Consents patients have signed (Part 2 disclosures), under the same keyring.
    pub consents: ConsentStore,
    pub files: Files,
    pub secops: SecOps,
    pub lifecycle: Lifecycle,
}

/// The services the handlers call. The API does not build them: the binary composes them
/// (`crates/clinicd/src/startup.rs`), and the API's tests with their own fakes
/// (`clinicd-test-support`).
#[derive(Debug, Clone)]
pub struct Services {
    pub identity: Arc<Identity>,
    pub audit: AuditWriter,
    pub rbac: Arc<Rbac>,
    pub patients: PatientStore,
    pub appointments: AppointmentStore,
    pub notes: NoteStore,
    pub files: Files,
    pub secops: SecOps,
    pub lifecycle: Lifecycle,
}

impl ApiState {
    pub fn new(db: PgPool, settings: HttpSettings, metrics: Metrics, services: Services) -> Self {
        let Services {
            identity,
            audit,
            rbac,
            patients,
            appointments,
            notes,
            files,
            secops,
            lifecycle,
        } = services;
        Self {
            consents: ConsentStore::new(db.clone(), identity.keyring.clone()),
            rbac,
            patients,
            appointments,
            notes,
            files,
            secops,
            lifecycle,
            identity,
            audit,
            db,
            limits: Arc::new(Limits::new(settings.rate_limits.clone())),
            settings: Arc::new(settings),
            metrics,
        }
    }
}

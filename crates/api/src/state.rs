//! What every handler and middleware shares, registered once as app data.

use std::sync::Arc;

use clinicd_audit::AuditWriter;
use clinicd_domain::{AppointmentStore, NoteStore, PatientStore};
use clinicd_files::{Files, ObjectStore};
use clinicd_identity::Identity;
use clinicd_rbac::Rbac;
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
    pub files: Files,
}

impl ApiState {
    pub fn new(
        db: PgPool,
        settings: HttpSettings,
        metrics: Metrics,
        identity: Arc<Identity>,
        audit: AuditWriter,
        file_store: Arc<dyn ObjectStore>,
    ) -> Self {
        let rbac = Arc::new(Rbac::new(
            db.clone(),
            identity.keyring.clone(),
            identity.clock.clone(),
            settings.break_glass_minutes,
        ));
        let patients = PatientStore::new(db.clone(), identity.keyring.clone());
        let appointments = AppointmentStore::new(db.clone());
        let notes = NoteStore::new(db.clone(), identity.keyring.clone());
        let files = Files::new(
            db.clone(),
            identity.keyring.clone(),
            file_store,
            settings.files.clone(),
        );
        Self {
            rbac,
            patients,
            appointments,
            notes,
            files,
            identity,
            audit,
            db,
            limits: Arc::new(Limits::new(settings.rate_limits.clone())),
            settings: Arc::new(settings),
            metrics,
        }
    }
}

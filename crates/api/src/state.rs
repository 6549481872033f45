//! What every handler and middleware shares, registered once as app data.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use clinicd_audit::AuditWriter;
use clinicd_domain::read_connections::ReadConnections;
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
    /// Where each worker's patient store gets its pool (see [`ApiState::for_worker`]).
    pub worker_pools: WorkerPools,
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
            worker_pools: WorkerPools::default(),
            db,
            limits: Arc::new(Limits::new(settings.rate_limits.clone())),
            settings: Arc::new(settings),
            metrics,
        }
    }

    /// This state for the API worker that calls it (actix-web builds the app once per worker,
    /// on the worker's own thread): its patient store reads records through connections of its
    /// own when the binary provides them (without sqlx's release ping, see `ReadConnections`). A pooled connection's socket belongs to the runtime that opened it,
    /// so on the shared pool the reply to one worker's query often woke another thread's
    /// reactor, which then woke the worker: two thread switches per round trip where one does.
    /// Each worker's connections are opened on its own runtime. Same statements, same rules;
    /// the read ran ×1.10 at 16 and 64 clients against the shared pool with as many
    /// connections (docs/performance.md).
    pub fn for_worker(mut self) -> Self {
        if let Some(own) = self.worker_pools.make() {
            self.patients = self.patients.on_connections(own);
        }
        self
    }
}

/// Makes each API worker's own connections for patient reads ([`ReadConnections`]), for
/// [`ApiState::for_worker`], and keeps each set it made so that the metrics can count their
/// connections ([`crate::Metrics::watch_worker_pools`]). The default has none (every worker
/// reads through the shared pool).
#[derive(Clone, Default)]
pub struct WorkerPools {
    source: Source,
    /// Weak: a worker's connections close when its app goes (a worker restarted after a panic).
    made: Arc<Mutex<Vec<Weak<ReadConnections>>>>,
}

#[derive(Clone, Default)]
enum Source {
    #[default]
    Shared,
    PerWorker(Arc<dyn Fn() -> ReadConnections + Send + Sync>),
    One(Arc<ReadConnections>),
}

impl WorkerPools {
    /// `make` runs once per worker, on the worker's thread; connections are opened on first
    /// use, so on the worker's runtime.
    pub fn new(make: impl Fn() -> ReadConnections + Send + Sync + 'static) -> Self {
        Self {
            source: Source::PerWorker(Arc::new(make)),
            made: Arc::default(),
        }
    }

    /// Every app built from this state reads through `own`: for tests, which build an app per
    /// request, where connections per app would open a connection per request.
    pub fn one(own: ReadConnections) -> Self {
        Self {
            source: Source::One(Arc::new(own)),
            made: Arc::default(),
        }
    }

    /// The calling worker's connections, or `None` when workers share the shared pool.
    fn make(&self) -> Option<Arc<ReadConnections>> {
        match &self.source {
            Source::Shared => None,
            Source::One(own) => Some(Arc::clone(own)),
            Source::PerWorker(make) => {
                let own = Arc::new(make());
                let mut made = self.made_pools();
                made.retain(|set| set.strong_count() > 0);
                made.push(Arc::downgrade(&own));
                Some(own)
            }
        }
    }

    /// The sets of the workers running: one per worker (a worker that actix-web restarts after
    /// a panic makes a new one; the old one's connections close with the old app).
    pub fn made(&self) -> Vec<Arc<ReadConnections>> {
        match &self.source {
            Source::One(own) => vec![Arc::clone(own)],
            Source::Shared | Source::PerWorker(_) => {
                self.made_pools().iter().filter_map(Weak::upgrade).collect()
            }
        }
    }

    fn made_pools(&self) -> std::sync::MutexGuard<'_, Vec<Weak<ReadConnections>>> {
        self.made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for WorkerPools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.source {
            Source::Shared => "shared",
            Source::PerWorker(_) => "one per worker",
            Source::One(_) => "one for every worker",
        };
        write!(f, "WorkerPools({kind})")
    }
}

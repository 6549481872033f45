//! Start-up in one place: [`Application::build`] binds every listener (port 0 works, for
//! tests) and returns something to run; the binary only parses configuration and calls it.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use clinicd_api::middleware::security_headers::security_headers;
use clinicd_api::rate_limit::Limits;
use clinicd_api::{ApiError, ApiState, HttpSettings, Metrics, Services};
use clinicd_audit::checkpoint::{
    CheckpointStore, LocalCheckpoints, S3Checkpoints, s3_client_from_env,
};
use clinicd_audit::retention::{ArchiveStore, LocalArchives, S3Archives};
use clinicd_audit::{AuditWriter, WriterSettings};
use clinicd_crypto::Keyring;
use clinicd_domain::read_connections::{ACQUIRE_TIMEOUT, ReadConnections};
use clinicd_domain::{AppointmentStore, NoteStore, PatientStore};
use clinicd_files::s3::S3Store;
use clinicd_files::{Files, LocalStore, ObjectStore};
use clinicd_identity::Identity;
use clinicd_identity::challenge::SiteVerifyChallenge;
use clinicd_identity::clock::SystemClock;
use clinicd_identity::otp::{LogOtpSender, WebhookOtpSender};
use clinicd_lifecycle::{LedgerStore, Lifecycle, LocalLedger, S3Ledger};
use clinicd_rbac::Rbac;
use clinicd_secops::SecOps;
use rustls::ServerConfig;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::{MfaFallback, Settings, StorageSettings, TlsSettings};
use crate::jobs::JobContext;
use crate::tls;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

const LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a stopping server waits for its job in progress.
const JOB_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start a listener: {0}")]
    Listen(#[source] std::io::Error),
    #[error("invalid database settings: {0}")]
    Database(#[source] sqlx::Error),
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the key provider or key hierarchy is unusable: {0:#}")]
    Keys(#[source] anyhow::Error),
    #[error("cannot set up identity: {0}")]
    Identity(String),
    #[error("cannot prepare the file store: {0}")]
    Storage(String),
    #[error("the erasure ledger cannot be replayed (docs/lifecycle.md): {0}")]
    Lifecycle(String),
    #[error(transparent)]
    Jobs(#[from] crate::jobs::JobsError),
    #[error("cannot create metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The running listeners: the HTTPS API, the admin (metrics) listener and, optionally, the
/// plain-HTTP listener that only redirects to HTTPS.
pub struct Application {
    api_port: u16,
    metrics_port: u16,
    redirect_port: Option<u16>,
    servers: Vec<Server>,
    limits: Arc<Limits>,
    /// This instance's share of the scheduled work (see [`crate::jobs`]).
    jobs: Arc<crate::jobs::Supervisor>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("api_port", &self.api_port)
            .field("metrics_port", &self.metrics_port)
            .field("redirect_port", &self.redirect_port)
            .finish_non_exhaustive()
    }
}

/// A connection idle longer than this is pinged before it is handed out (the shared pool and the
/// workers' own connections alike).
pub use clinicd_domain::read_connections::PING_IDLE_AFTER;

/// The server's pool. sqlx pings every idle connection before handing it out by default: a
/// second round trip (Sync and ReadyForQuery) for every statement, which cost as much Postgres
/// and server CPU as the statement itself on the read path (docs/performance.md). Here only a
/// connection idle past [`PING_IDLE_AFTER`] is pinged. sqlx still pings each connection when it
/// goes back to the pool, so a connection broken while in use is dropped there and never handed
/// out again; one that breaks while idle for less than the threshold (a database restart) fails
/// its next statement, which is answered 503 like any other database fault, and is then dropped.
/// The API workers' own connections for patient reads skip the ping on release as well
/// (`clinicd_domain::read_connections`).
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IDLE_AFTER {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
}

/// Each API worker's own connections for patient reads (`ApiState::for_worker`): half the
/// shared pool's size (at least 2), with the shared pool's connect options, opened on first use
/// so on the worker's runtime. An instance so holds at most `max_connections × (1 + workers /
/// 2)` connections.
pub fn worker_pools(shared: &PgPool) -> clinicd_api::WorkerPools {
    let size = (shared.options().get_max_connections() / 2).max(2);
    let options = shared.connect_options();
    clinicd_api::WorkerPools::new(move || ReadConnections::new((*options).clone(), size))
}

impl Application {
    /// Connects to Postgres (lazily: readiness reports an unreachable database), applies
    /// migrations when configured, and binds every listener.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let options = settings
            .database
            .connect_options()
            .map_err(StartupError::Database)?;
        let pool = pool_options(settings.database.max_connections).connect_lazy_with(options);
        if settings.database.migrate_on_start {
            MIGRATOR.run(&pool).await?;
        }
        Self::build_with_pool(settings, pool).await
    }

    /// As [`build`](Self::build) with a pool from the caller (tests pass `#[sqlx::test]`'s).
    pub async fn build_with_pool(settings: Settings, pool: PgPool) -> Result<Self, StartupError> {
        let tls_config = server_tls(&settings.tls)?;
        let metrics = Metrics::new()?;
        crate::backup::metrics::BackupMetrics::register(&metrics)?.follow(pool.clone());
        metrics.watch_pool(pool.clone())?;
        // Fail fast when the key provider is unusable, and make sure every purpose has its
        // branch key before the first request needs one.
        let keyring = Arc::new(
            crate::keys::keyring(&settings.keys, pool.clone())
                .await
                .map_err(StartupError::Keys)?,
        );
        keyring
            .bootstrap()
            .await
            .map_err(|e| StartupError::Keys(e.into()))?;
        // Another instance's crypto-shredding reaches this one's key cache within a second.
        tokio::spawn(keyring.clone().follow_destroyed_keys());
        let checkpoints = checkpoint_store(&settings).await;
        let audit = AuditWriter::start(pool.clone(), keyring.clone(), WriterSettings::default())
            .with_checkpoints(checkpoints.clone());
        let files = file_store(&settings).await?;
        let secops = secops(&settings, &pool, &keyring);
        let lifecycle = lifecycle(&settings, &pool, &keyring, files.clone()).await;
        // A restored backup may still hold patients erased after it was taken: the ledger
        // outside the database erases them again before anything is served (fail closed).
        let replayed = clinicd_lifecycle::ledger::replay(&lifecycle)
            .await
            .map_err(|e| StartupError::Lifecycle(e.to_string()))?;
        if !replayed.erased_again.is_empty() {
            tracing::warn!(
                patients = replayed.erased_again.len(),
                "erased again from the erasure ledger (a restore brought them back)"
            );
        }
        let jobs = crate::jobs::Supervisor::start(
            JobContext {
                db: pool.clone(),
                keyring: keyring.clone(),
                writer: audit.clone(),
                checkpoints,
                archives: archive_store(&settings).await,
                files: Files::new(
                    pool.clone(),
                    keyring.clone(),
                    files.clone(),
                    settings.http.files.clone(),
                ),
                retention_years: settings.audit.retention_years,
                secops: secops.clone(),
                lifecycle: lifecycle.clone(),
                instance: uuid::Uuid::new_v4(),
            },
            settings.audit.checkpoint_interval,
        )
        .await?;
        let identity = identity(&settings, pool.clone(), keyring)?;
        secops.follow_blocks();
        follow_security_metrics(secops.clone(), metrics.clone());
        let services = services(
            &pool,
            &settings.http,
            Arc::new(identity),
            audit,
            files,
            secops,
            lifecycle,
        );
        let mut state = ApiState::new(
            pool.clone(),
            settings.http.clone(),
            metrics.clone(),
            services,
        );
        state.worker_pools = worker_pools(&pool);
        metrics.watch_worker_pools(state.worker_pools.clone())?;
        let limits = state.limits.clone();

        let api_listener = bind("the HTTPS API", settings.listen_addr)?;
        let api_port = port(&api_listener)?;
        let workers = settings.workers.unwrap_or_else(default_workers);
        let api = HttpServer::new(move || clinicd_api::app(state.clone()))
            .workers(workers)
            .listen_rustls_0_23(api_listener, tls_config.clone())
            .map_err(StartupError::Listen)?
            .run();
        let mut servers = vec![api];

        let metrics_listener = bind("the metrics listener", settings.metrics_addr)?;
        let metrics_port = port(&metrics_listener)?;
        let metrics_server =
            HttpServer::new(move || clinicd_api::admin_app(metrics.clone())).workers(1);
        // Metrics carry no PHI, but off loopback they still travel only over TLS.
        let metrics_server = if settings.metrics_addr.ip().is_loopback() {
            metrics_server.listen(metrics_listener)
        } else {
            metrics_server.listen_rustls_0_23(metrics_listener, tls_config)
        };
        servers.push(metrics_server.map_err(StartupError::Listen)?.run());

        let mut redirect_port = None;
        if let Some(addr) = settings.redirect_addr {
            let listener = bind("the HTTP redirect listener", addr)?;
            redirect_port = Some(port(&listener)?);
            servers.push(redirect_server(listener, settings.public_https_port)?);
        }
        Ok(Self {
            api_port,
            metrics_port,
            redirect_port,
            servers,
            limits,
            jobs: Arc::new(jobs),
        })
    }

    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    pub fn redirect_port(&self) -> Option<u16> {
        self.redirect_port
    }

    /// Handles to stop the listeners gracefully.
    pub fn handles(&self) -> Vec<ServerHandle> {
        self.servers.iter().map(Server::handle).collect()
    }

    /// Serves until a listener stops (Ctrl-C or SIGTERM stop them all gracefully).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let limits = self.limits;
        let pruner = tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIMITER_PRUNE_INTERVAL);
            loop {
                tick.tick().await;
                limits.prune();
            }
        });
        let jobs = self.jobs.clone();
        let worker = tokio::spawn(async move { jobs.run().await });
        let result = futures_util::future::try_join_all(self.servers)
            .await
            .map(|_| ());
        pruner.abort();
        // A job in progress gets the worker's grace period to finish; the queue retries it
        // elsewhere otherwise.
        self.jobs.request_shutdown();
        if tokio::time::timeout(JOB_SHUTDOWN_GRACE, worker)
            .await
            .is_err()
        {
            tracing::warn!("the job worker did not stop in time");
        }
        result
    }
}

/// The identity services as configured: sessions, login, MFA, with the out-of-band sender and
/// the login challenge when they are set.
pub fn identity(
    settings: &Settings,
    pool: PgPool,
    keyring: Arc<clinicd_crypto::Keyring>,
) -> Result<Identity, StartupError> {
    let identity = Identity::new(
        pool,
        &settings.token_signing_key,
        keyring,
        settings.identity,
        Arc::new(SystemClock),
    )
    .map_err(|e| StartupError::Identity(e.to_string()))?;
    with_login_extras(identity, settings)
}

/// The optional out-of-band code sender and login challenge verifier.
fn with_login_extras(identity: Identity, settings: &Settings) -> Result<Identity, StartupError> {
    let identity = match &settings.mfa_fallback {
        MfaFallback::Off => identity,
        MfaFallback::Log => identity.with_otp_sender(Arc::new(LogOtpSender)),
        MfaFallback::Webhook { url, signing_key } => {
            let sender = WebhookOtpSender::new(url.clone(), signing_key)
                .map_err(|e| StartupError::Identity(e.to_string()))?;
            identity.with_otp_sender(Arc::new(sender))
        }
    };
    Ok(match &settings.login_challenge {
        None => identity,
        Some(challenge) => {
            let verifier =
                SiteVerifyChallenge::new(challenge.verify_url.clone(), challenge.secret.clone())
                    .map_err(|e| StartupError::Identity(e.to_string()))?;
            identity.with_challenge_verifier(Arc::new(verifier))
        }
    })
}

/// Where uploaded files go: S3 (`files/` under the prefix) or a local directory. The local
/// directory is created here, so a server that cannot write it fails at start, not at the
/// first upload.
pub async fn file_store(settings: &Settings) -> Result<Arc<dyn ObjectStore>, StartupError> {
    Ok(match &settings.storage {
        StorageSettings::S3 {
            bucket,
            prefix,
            sse_kms_key_id,
        } => {
            let store = S3Store::new(s3_client_from_env().await, bucket, prefix);
            Arc::new(match sse_kms_key_id {
                Some(key) => store.with_sse_kms(key),
                None => store,
            })
        }
        StorageSettings::Local { dir } => {
            std::fs::create_dir_all(dir).map_err(|e| StartupError::Storage(e.to_string()))?;
            Arc::new(LocalStore::new(dir))
        }
    })
}

/// Where audit checkpoints go: the object store when S3 is configured, else a directory.
pub async fn checkpoint_store(settings: &Settings) -> Arc<dyn CheckpointStore> {
    match &settings.storage {
        StorageSettings::S3 { bucket, prefix, .. } => Arc::new(
            S3Checkpoints::from_env(
                bucket.clone(),
                format!("{prefix}audit-checkpoints/"),
                settings.audit.checkpoint_lock_days,
            )
            .await,
        ),
        StorageSettings::Local { .. } => {
            Arc::new(LocalCheckpoints::new(&settings.audit.checkpoint_dir))
        }
    }
}

/// Where `clinicd audit maintain` puts expired partitions: the object store or a directory.
pub async fn archive_store(settings: &Settings) -> Arc<dyn ArchiveStore> {
    match &settings.storage {
        StorageSettings::S3 { bucket, prefix, .. } => {
            Arc::new(S3Archives::from_env(bucket.clone(), format!("{prefix}audit-archive/")).await)
        }
        StorageSettings::Local { .. } => Arc::new(LocalArchives::new(&settings.audit.archive_dir)),
    }
}

fn server_tls(settings: &TlsSettings) -> Result<ServerConfig, StartupError> {
    let (cert, key) = match settings {
        TlsSettings::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSettings::SelfSigned { dir } => tls::ensure_self_signed(dir)?,
    };
    Ok(tls::load_server_config(&cert, &key)?)
}

fn bind(what: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr).map_err(|source| StartupError::Bind { what, addr, source })
}

fn port(listener: &TcpListener) -> Result<u16, StartupError> {
    Ok(listener.local_addr().map_err(StartupError::Listen)?.port())
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The plain-HTTP listener: every request is answered with a redirect to HTTPS and nothing
/// else, so the API is never served in clear.
fn redirect_server(listener: TcpListener, https_port: u16) -> Result<Server, StartupError> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(https_port))
            .default_service(web::to(redirect_to_https))
            .wrap(from_fn(security_headers))
    })
    .workers(1)
    .listen(listener)
    .map_err(StartupError::Listen)?
    .run();
    Ok(server)
}

async fn redirect_to_https(req: HttpRequest, https_port: web::Data<u16>) -> HttpResponse {
    let Some(host) = request_host(&req) else {
        return ApiError::Other(actix_web::http::StatusCode::BAD_REQUEST).error_response();
    };
    let port = match **https_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, format!("https://{host}{port}{path}")))
        .finish()
}

/// The host name the client asked for, without its port, if it is a plausible host name or
/// address (so a crafted Host header cannot inject into the Location header).
fn request_host(req: &HttpRequest) -> Option<String> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let name = match host.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split_once(']')?.0),
        None => host.split(':').next()?.to_owned(),
    };
    let plausible = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    plausible.then_some(name)
}

/// The composition: every service the API calls, built once, here.
fn services(
    db: &PgPool,
    http: &HttpSettings,
    identity: Arc<Identity>,
    audit: AuditWriter,
    file_store: Arc<dyn ObjectStore>,
    secops: SecOps,
    lifecycle: Lifecycle,
) -> Services {
    let keyring = identity.keyring.clone();
    Services {
        rbac: Arc::new(Rbac::new(
            db.clone(),
            keyring.clone(),
            identity.clock.clone(),
            http.break_glass_minutes,
        )),
        patients: PatientStore::new(db.clone(), keyring.clone()),
        appointments: AppointmentStore::new(db.clone()),
        notes: NoteStore::new(db.clone(), keyring.clone()),
        files: Files::new(db.clone(), keyring, file_store, http.files.clone()),
        identity,
        audit,
        secops,
        lifecycle,
    }
}

/// The data lifecycle: retention policy, and the erasure ledger's copy outside the database
/// (beside the audit checkpoints).
pub async fn lifecycle(
    settings: &Settings,
    db: &PgPool,
    keyring: &Arc<Keyring>,
    file_store: Arc<dyn ObjectStore>,
) -> Lifecycle {
    let ledger: Arc<dyn LedgerStore> = match &settings.storage {
        StorageSettings::S3 { bucket, prefix, .. } => Arc::new(S3Ledger::new(
            s3_client_from_env().await,
            bucket.clone(),
            format!("{prefix}erasure-ledger/"),
        )),
        StorageSettings::Local { .. } => {
            Arc::new(LocalLedger::new(settings.data_dir.join("erasure-ledger")))
        }
    };
    Lifecycle {
        db: db.clone(),
        keyring: keyring.clone(),
        patients: PatientStore::new(db.clone(), keyring.clone()),
        files: Files::new(
            db.clone(),
            keyring.clone(),
            file_store,
            settings.http.files.clone(),
        ),
        ledger,
        policy: settings.retention,
    }
}

/// Security operations for this process: the trusted proxies are never blocked.
fn secops(settings: &Settings, pool: &PgPool, keyring: &Arc<clinicd_crypto::Keyring>) -> SecOps {
    let mut secops = settings.secops.clone();
    secops
        .abuse
        .allow
        .extend_from_slice(settings.http.trusted_proxies.networks());
    SecOps::new(pool.clone(), keyring.clone(), secops)
}

/// Refreshes the dashboard's metrics every 30 s (each instance exports the same figures;
/// the shipped rules take the maximum across instances).
fn follow_security_metrics(secops: SecOps, metrics: Metrics) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            match secops.dashboard().await {
                Ok(board) => metrics.observe_security(&board, secops.blocks.is_stale()),
                Err(error) => tracing::warn!(%error, "could not refresh the security metrics"),
            }
        }
    });
}

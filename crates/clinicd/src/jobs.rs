//! Scheduled work, done once across instances, on graphile_worker: a job queue in Postgres
//! whose crontab records each schedule's last tick in its own table, so however many instances
//! run, each tick is scheduled once, and each job is claimed by one worker (`SKIP LOCKED`).
//! Failed jobs are retried with backoff; every job is idempotent, so a retry or a backfilled
//! tick does no harm. (apalis-cron was the other candidate: it pipes each instance's ticks into
//! storage, so two instances would schedule each tick twice unless we deduplicated ourselves.)
//!
//! | job | when | what |
//! |---|---|---|
//! | `forward_security_events` | every minute | identity's security events into the audit trail |
//! | `audit_checkpoint` | every `CLINICD_AUDIT_CHECKPOINT_SECS` (whole minutes, at most hourly) | a signed checkpoint of the chain's head to WORM storage |
//! | `audit_partitions` | daily 01:10 UTC, and at start | partitions twelve months ahead; rows stranded in the default partition re-homed |
//! | `audit_archive` | daily 02:10 UTC | partitions past retention archived and detached |
//! | `files_purge` | daily 03:10 UTC | deleted files past retention removed, each audited |
//! | `forget_login_attempts` | hourly | failure counters whose window and lock are long over |
//! | `detect_misuse` | every 5 minutes | the insider-misuse rules over the trail; alerts raised |
//! | `deliver_alerts` | every minute | due alert deliveries (webhook, e-mail), retried with backoff |
//! | `secops_upkeep` | hourly | abuse signals and shared rate buckets past their window |
//!
//! Each run is recorded in `job_runs` (which tick, which instance, how it went), for operators.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use clinicd_audit::checkpoint::{CheckpointStore, write_checkpoint};
use clinicd_audit::retention::{ArchiveStore, archive_expired, ensure_partitions_ahead};
use clinicd_audit::{Action, AuditWriter, NewEvent, Note, Outcome, Recorder};
use clinicd_crypto::Keyring;
use clinicd_files::Files;
use clinicd_files::service::Audited;
use graphile_worker::{
    Cron, CrontabFill, IntoTaskHandlerResult, JobSpec, TaskHandler, Worker, WorkerContext,
    WorkerOptions,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// The schema graphile_worker keeps its tables in.
pub const SCHEMA: &str = "clinicd_jobs";
/// How many months of partitions are kept ahead.
const PARTITIONS_AHEAD: u32 = 12;

/// What the jobs work with, shared by every job of this instance.
#[derive(Clone)]
pub struct JobContext {
    pub db: PgPool,
    pub keyring: Arc<Keyring>,
    pub writer: AuditWriter,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub archives: Arc<dyn ArchiveStore>,
    pub files: Files,
    pub retention_years: u32,
    pub secops: clinicd_secops::SecOps,
    pub lifecycle: clinicd_lifecycle::Lifecycle,
    /// This process, in `job_runs`.
    pub instance: Uuid,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// How often the checkpoint job runs, in minutes, from the configured interval: whole minutes,
/// at most an hour apart (the crontab's granularity).
pub fn checkpoint_minutes(interval: std::time::Duration) -> u32 {
    let minutes = interval.as_secs().div_ceil(60);
    u32::try_from(minutes.clamp(1, 60)).unwrap_or(60)
}

/// The shortest and longest wait before the job worker is started again after it stopped.
const RESTART_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const RESTART_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Keeps this instance's job worker running. graphile_worker's `run` ends with an error when
/// the database is unreachable for a while (a restart, a failover), and it cannot be run again
/// after that; checkpoints, event forwarding and retention must resume on their own once the
/// database is back, so a fresh worker is built and run, with backoff, until shutdown.
pub struct Supervisor {
    context: JobContext,
    checkpoint_every: std::time::Duration,
    /// The worker running now, so that shutdown can reach it.
    current: std::sync::Mutex<Option<Arc<Worker>>>,
    stopping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Builds the first worker now, so that a server whose queue cannot be set up fails at start.
    pub async fn start(
        context: JobContext,
        checkpoint_every: std::time::Duration,
    ) -> Result<Self, JobsError> {
        let first = worker(context.clone(), checkpoint_every).await?;
        Ok(Self {
            context,
            checkpoint_every,
            current: std::sync::Mutex::new(Some(Arc::new(first))),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Runs the worker, and a new one whenever it stops with an error, until
    /// [`Supervisor::request_shutdown`].
    pub async fn run(&self) {
        let mut backoff = RESTART_MIN;
        loop {
            // Shutdown can come while the database is still down and no worker is running.
            if self.stopped() {
                return;
            }
            let worker = match self.current() {
                Some(worker) => worker,
                None => match worker(self.context.clone(), self.checkpoint_every).await {
                    Ok(worker) => {
                        let worker = Arc::new(worker);
                        *self.slot() = Some(worker.clone());
                        tracing::info!("the job worker started again");
                        worker
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "the job worker cannot start yet");
                        backoff = self.pause(backoff).await;
                        continue;
                    }
                },
            };
            if self.stopped() {
                return;
            }
            let began = tokio::time::Instant::now();
            let outcome = worker.run().await;
            *self.slot() = None;
            match outcome {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(error = %error, "the job worker stopped; starting it again")
                }
            }
            if self.stopped() {
                return;
            }
            // A worker that ran a good while before failing starts over from the shortest wait.
            if began.elapsed() > RESTART_MAX {
                backoff = RESTART_MIN;
            }
            backoff = self.pause(backoff).await;
        }
    }

    /// Asks the running worker to finish its jobs and stop, and the supervisor not to start
    /// another.
    pub fn request_shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(worker) = self.slot().as_ref() {
            worker.request_shutdown();
        }
    }

    fn stopped(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn current(&self) -> Option<Arc<Worker>> {
        self.slot().clone()
    }

    /// The slot holding the running worker. A panic while it was held cannot leave it
    /// inconsistent (it is only ever replaced whole), so a poisoned lock is used as is.
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Worker>>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits `backoff` and returns the next, doubled up to the longest wait.
    async fn pause(&self, backoff: std::time::Duration) -> std::time::Duration {
        tokio::time::sleep(backoff).await;
        (backoff * 2).min(RESTART_MAX)
    }
}

/// Starts the job worker of this instance; the caller runs it (`Worker::run`) and asks it to
/// stop at shutdown.
pub async fn worker(
    context: JobContext,
    checkpoint_every: std::time::Duration,
) -> Result<Worker, JobsError> {
    let minutes = checkpoint_minutes(checkpoint_every);
    let checkpoint = if minutes >= 60 {
        Cron::hourly_at::<AuditCheckpoint>(5)
    } else {
        Cron::every_n_minutes::<AuditCheckpoint>(minutes)
    };
    let worker = WorkerOptions::default()
        .schema(SCHEMA)
        .concurrency(2)
        .pg_pool(context.db.clone())
        .listen_os_shutdown_signals(false)
        .define_job::<ForwardSecurityEvents>()
        .define_job::<AuditCheckpoint>()
        .define_job::<AuditPartitions>()
        .define_job::<AuditArchive>()
        .define_job::<FilesPurge>()
        .define_job::<ForgetLoginAttempts>()
        .define_job::<DetectMisuse>()
        .define_job::<DeliverAlerts>()
        .define_job::<SecopsUpkeep>()
        .define_job::<LifecycleRetention>()
        .add_extension(context)
        .with_cron(
            Cron::every_minute::<ForwardSecurityEvents>()
                .fill(CrontabFill::minutes(10))
                .payload_value(serde_json::json!({})),
        )
        .with_cron(
            checkpoint
                .map_err(cron_error)?
                .fill(CrontabFill::hours(1))
                .payload_value(serde_json::json!({})),
        )
        .with_cron(
            Cron::daily_at::<AuditPartitions>(1, 10)
                .map_err(cron_error)?
                .fill(CrontabFill::days(2))
                .payload_value(serde_json::json!({})),
        )
        .with_cron(
            Cron::daily_at::<AuditArchive>(2, 10)
                .map_err(cron_error)?
                .fill(CrontabFill::days(2))
                .payload_value(serde_json::json!({})),
        )
        .with_cron(
            Cron::daily_at::<FilesPurge>(3, 10)
                .map_err(cron_error)?
                .fill(CrontabFill::days(2))
                .payload_value(serde_json::json!({})),
        )
        .with_cron(
            Cron::every_n_minutes::<DetectMisuse>(5)
                .map_err(cron_error)?
                .fill(CrontabFill::minutes(30))
                .payload_value(serde_json::json!({})),
        )
        .with_cron(
            Cron::every_minute::<DeliverAlerts>()
                .fill(CrontabFill::minutes(5))
                .payload_value(serde_json::json!({})),
        )
        .with_cron(
            Cron::hourly_at::<SecopsUpkeep>(25)
                .map_err(cron_error)?
                .payload_value(serde_json::json!({})),
        )
        .with_cron(
            Cron::daily_at::<LifecycleRetention>(4, 10)
                .map_err(cron_error)?
                .fill(CrontabFill::days(2))
                .payload_value(serde_json::json!({})),
        )
        .with_cron(
            Cron::hourly_at::<ForgetLoginAttempts>(20)
                .map_err(cron_error)?
                .payload_value(serde_json::json!({})),
        )
        .init()
        .await?;
    // Partitions at start too: a server back after a long pause must not wait for 01:10.
    // The job key makes it one job however many instances start at once.
    worker
        .create_utils()
        .add_job(
            AuditPartitions::default(),
            JobSpec {
                job_key: Some("audit_partitions_at_start".into()),
                ..JobSpec::default()
            },
        )
        .await?;
    Ok(worker)
}

fn cron_error(error: impl std::fmt::Display) -> JobsError {
    JobsError::Schedule(error.to_string())
}

/// Why the job runner did not start.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("invalid schedule: {0}")]
    Schedule(String),
    #[error("cannot start the job worker: {0}")]
    Build(#[from] graphile_worker::WorkerBuildError),
    #[error("cannot queue a job: {0}")]
    Queue(#[from] graphile_worker::errors::GraphileWorkerError),
}

/// The tick a cron job was scheduled for (graphile_worker adds it to the payload).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Tick {
    #[serde(rename = "_cron", default, skip_serializing)]
    cron: Option<CronStamp>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct CronStamp {
    ts: String,
}

impl Tick {
    fn scheduled_for(&self) -> Option<DateTime<Utc>> {
        let stamp = self.cron.as_ref()?;
        DateTime::parse_from_rfc3339(&stamp.ts)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Runs one job's work and records the run; an error is retried by the queue.
async fn run(
    ctx: &WorkerContext,
    job: &'static str,
    tick: &Tick,
    work: impl AsyncFnOnce(&JobContext) -> Result<serde_json::Value, String>,
) -> Result<(), String> {
    let context = ctx
        .get_ext::<JobContext>()
        .ok_or("the job context is missing")?
        .clone();
    let started = Utc::now();
    let outcome = work(&context).await;
    let (status, detail) = match &outcome {
        Ok(detail) => ("ok", detail.clone()),
        Err(error) => ("failed", serde_json::json!({ "error": error })),
    };
    if let Err(error) = sqlx::query!("INSERT INTO job_runs (job, scheduled_for, instance, started_at, finished_at, outcome, detail) \
         VALUES ($1, $2, $3, $4, now(), $5, $6)", job, tick.scheduled_for(), context.instance, started, status, detail)
    .execute(&context.db)
    .await
    {
        tracing::warn!(job, error = %error, "a job's run was not recorded");
    }
    match outcome {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(job, error = %error, "scheduled job failed; it will be retried");
            Err(error)
        }
    }
}

macro_rules! job {
    ($name:ident, $id:literal, |$context:ident| $work:expr) => {
        #[derive(Debug, Clone, Default, Deserialize, Serialize)]
        pub struct $name(#[serde(default)] Tick);

        impl TaskHandler for $name {
            const IDENTIFIER: &'static str = $id;

            async fn run(self, ctx: WorkerContext) -> impl IntoTaskHandlerResult {
                run(&ctx, $id, &self.0, async |$context: &JobContext| $work).await
            }
        }
    };
}

job!(
    ForwardSecurityEvents,
    "forward_security_events",
    |context| {
        let mut forwarded = 0;
        loop {
            let moved = clinicd_identity::security_events::forward(&context.db, &context.keyring)
                .await
                .map_err(|e| e.to_string())?;
            if moved == 0 {
                return Ok(serde_json::json!({ "forwarded": forwarded }));
            }
            forwarded += moved;
        }
    }
);

job!(AuditCheckpoint, "audit_checkpoint", |context| {
    let written = write_checkpoint(&context.db, &context.keyring, context.checkpoints.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({ "seq": written.map(|c| c.seq) }))
});

job!(AuditPartitions, "audit_partitions", |context| {
    let created = ensure_partitions_ahead(&context.db, Utc::now(), PARTITIONS_AHEAD)
        .await
        .map_err(|e| e.to_string())?;
    let detail = serde_json::json!({ "partitions_created": created });
    if !created.is_empty() {
        system_event(context, Action::ConfigChange, "audit_partitions", &detail).await?;
    }
    Ok(detail)
});

job!(AuditArchive, "audit_archive", |context| {
    // Archiving detaches partitions, which only the trail's owner may do. A server whose role
    // may only append (docs/audit.md) leaves it to `clinicd audit maintain` run as the owner.
    let owner: bool = sqlx::query_scalar!(
        "SELECT pg_has_role(current_user, relowner, 'USAGE') AS \"owner!\" FROM pg_class \
         WHERE oid = 'audit_events'::regclass"
    )
    .fetch_one(&context.db)
    .await
    .map_err(|e| e.to_string())?;
    if !owner {
        tracing::warn!(
            "audit archiving skipped: run `clinicd audit maintain` as the trail's owner"
        );
        return Ok(serde_json::json!({ "skipped": "the server's role does not own the trail" }));
    }
    let archived = match archive_expired(
        &context.db,
        &context.keyring,
        &context.writer,
        context.archives.as_ref(),
        context.retention_years,
        Utc::now(),
    )
    .await
    {
        Ok(archived) => archived,
        Err(clinicd_audit::AuditError::Held(hold)) => {
            tracing::info!(hold_id = %hold, "audit archiving skipped: legal hold");
            return Ok(serde_json::json!({ "skipped": "legal hold", "hold_id": hold }));
        }
        Err(error) => return Err(error.to_string()),
    };
    // Each archived partition has its own event (written by `archive_expired`).
    Ok(serde_json::json!({ "archived": archived }))
});

job!(FilesPurge, "files_purge", |context| {
    let writer = context.writer.clone();
    let purged = context
        .files
        .purge(Utc::now(), &move |file, patient| {
            purge_event(&writer, file, patient)
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({ "purged": purged }))
});

job!(ForgetLoginAttempts, "forget_login_attempts", |context| {
    let forgotten = clinicd_identity::login::forget_stale_attempts(&context.db)
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({ "forgotten": forgotten }))
});

job!(DetectMisuse, "detect_misuse", |context| {
    let report = context
        .secops
        .detect(&clinicd_domain::patient::FAMILY_NAME_INDEX)
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({ "findings": report.findings, "new_alerts": report.new_alerts }))
});

job!(DeliverAlerts, "deliver_alerts", |context| {
    let pass = context.secops.deliver().await.map_err(|e| e.to_string())?;
    Ok(serde_json::json!({ "sent": pass.sent, "retried": pass.retried, "dead": pass.dead }))
});

// Retention (docs/lifecycle.md): files erasure requests for what has passed retention and is
// not held; erases them too when the policy approves by itself (CLINICD_RETENTION_AUTO_ERASE).
job!(LifecycleRetention, "lifecycle_retention", |context| {
    let run = clinicd_lifecycle::retention::run(&context.lifecycle, Utc::now())
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(run).unwrap_or_default())
});

job!(SecopsUpkeep, "secops_upkeep", |context| {
    let forgotten = context.secops.forget().await.map_err(|e| e.to_string())?;
    Ok(serde_json::json!({ "forgotten": forgotten }))
});

/// A change the scheduler made to the trail's own storage, in the trail (as `clinicd audit
/// maintain` records it).
async fn system_event(
    context: &JobContext,
    action: Action,
    resource: &str,
    detail: &serde_json::Value,
) -> Result<(), String> {
    let mut event = NewEvent::new(action, Outcome::Success);
    event.resource_type = Some(resource.into());
    event.reason = Some("scheduled".into());
    event.user_agent = Some(format!("clinicd/{} scheduler", env!("CARGO_PKG_VERSION")));
    event.metadata = detail.clone();
    context
        .writer
        .record(event)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The audit event of a purged file: a system deletion, with the job named.
fn purge_event(writer: &AuditWriter, file: Uuid, patient: Uuid) -> Audited {
    let mut event = NewEvent::new(Action::Delete, Outcome::Success);
    event.resource_type = Some("file".into());
    event.reason = Some("retention".into());
    event.user_agent = Some(format!("clinicd/{} files_purge", env!("CARGO_PKG_VERSION")));
    Audited {
        recorder: Recorder::new(writer.clone(), event, Default::default()),
        status: None,
        note: Note {
            resource_id: Some(file.to_string()),
            patient_id: Some(patient),
            metadata: Some(serde_json::json!({ "job": "files_purge", "purged": true })),
            ..Note::default()
        },
    }
}

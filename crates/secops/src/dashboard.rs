//! The security officer's picture in one call: open alerts, active blocks, failed logins,
//! refusals by class, emergency accesses awaiting review, the audit chain's head and last
//! checkpoint, key ages and rotation due, backup status. Every number here is also a
//! Prometheus metric (the API's `Metrics::observe_security`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::alerts::{self, Alert};
use crate::blocks::{self, Block};

#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    pub generated_at: DateTime<Utc>,
    pub alerts: AlertCounts,
    /// The newest unresolved alerts (at most 20).
    pub recent_alerts: Vec<Alert>,
    pub active_blocks: i64,
    /// The newest active blocks (at most 20).
    pub blocks: Vec<Block>,
    /// Login requests refused or failed in the last 24 hours (the requests' own events, not the
    /// identity events forwarded beside them).
    pub failed_logins_24h: i64,
    /// Refused requests in the last 24 hours by problem code.
    pub refusals_24h: Vec<RefusalCount>,
    pub break_glass_pending_review: i64,
    pub audit: AuditStatus,
    pub keys: Vec<KeyAge>,
    pub backup: BackupStatus,
    /// Alert deliveries that gave up (dead letters).
    pub dead_deliveries: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertCounts {
    pub open: i64,
    pub acknowledged: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefusalCount {
    pub class: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditStatus {
    pub head_seq: Option<i64>,
    pub head_at: Option<DateTime<Utc>>,
    /// When the last signed checkpoint was written to WORM storage (the scheduled job).
    pub last_checkpoint_at: Option<DateTime<Utc>>,
    /// Whether the last checkpoint run failed (it verifies the chain's head it signs).
    pub last_checkpoint_failed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyAge {
    pub purpose: String,
    pub version: i32,
    pub age_days: i64,
    pub rotation_due: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupStatus {
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_run_failed: bool,
}

/// Reads the picture; `rotation_days` is the key age at which rotation is due.
pub async fn read(db: &PgPool, rotation_days: u32) -> Result<Dashboard, sqlx::Error> {
    let counts = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE state = 'open') AS "open!",
                  count(*) FILTER (WHERE state = 'acknowledged') AS "acknowledged!"
             FROM security_alerts WHERE state <> 'resolved'"#
    )
    .fetch_one(db)
    .await?;
    let mut recent = alerts::list(db, Some("open"), 20).await?;
    recent.extend(alerts::list(db, Some("acknowledged"), 20).await?);
    recent.sort_by_key(|a| std::cmp::Reverse(a.last_seen));
    recent.truncate(20);
    let blocks = blocks::list(db, true, 20).await?;
    let active_blocks = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM blocks WHERE lifted_at IS NULL AND expires_at > now()"#
    )
    .fetch_one(db)
    .await?;
    let failed_logins_24h = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM audit_events
            WHERE occurred_at > now() - interval '24 hours' AND action = 'login_failed' AND http_method IS NOT NULL"#
    )
    .fetch_one(db)
    .await?;
    let refusals_24h = sqlx::query_as!(
        RefusalCount,
        r#"SELECT coalesce(reason, 'unknown') AS "class!", count(*) AS "count!" FROM audit_events
            WHERE occurred_at > now() - interval '24 hours' AND outcome = 'denied'
            GROUP BY 1 ORDER BY 2 DESC LIMIT 30"#
    )
    .fetch_all(db)
    .await?;
    let break_glass_pending_review = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM break_glass_grants WHERE reviewed_at IS NULL"#
    )
    .fetch_one(db)
    .await?;
    let dead_deliveries = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM alert_deliveries WHERE state = 'dead'"#
    )
    .fetch_one(db)
    .await?;
    Ok(Dashboard {
        generated_at: Utc::now(),
        alerts: AlertCounts {
            open: counts.open,
            acknowledged: counts.acknowledged,
        },
        recent_alerts: recent,
        active_blocks,
        blocks,
        failed_logins_24h,
        refusals_24h,
        break_glass_pending_review,
        audit: audit_status(db).await?,
        keys: key_ages(db, rotation_days).await?,
        backup: backup_status(db).await?,
        dead_deliveries,
    })
}

async fn audit_status(db: &PgPool) -> Result<AuditStatus, sqlx::Error> {
    let head = sqlx::query!("SELECT seq, written_at FROM audit_heads ORDER BY seq DESC LIMIT 1")
        .fetch_optional(db)
        .await?;
    let checkpoint = sqlx::query!(
        r#"SELECT max(finished_at) FILTER (WHERE outcome = 'ok') AS last_ok,
                  (array_agg(outcome ORDER BY finished_at DESC))[1] AS last_outcome
             FROM job_runs WHERE job = 'audit_checkpoint'"#
    )
    .fetch_one(db)
    .await?;
    Ok(AuditStatus {
        head_seq: head.as_ref().map(|h| h.seq),
        head_at: head.map(|h| h.written_at),
        last_checkpoint_at: checkpoint.last_ok,
        last_checkpoint_failed: checkpoint.last_outcome.as_deref() == Some("failed"),
    })
}

async fn key_ages(db: &PgPool, rotation_days: u32) -> Result<Vec<KeyAge>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT purpose, version, extract(day FROM now() - created_at)::bigint AS "age!"
             FROM data_keys WHERE status = 'active' ORDER BY purpose"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| KeyAge {
            purpose: row.purpose,
            version: row.version,
            age_days: row.age,
            rotation_due: row.age >= i64::from(rotation_days),
        })
        .collect())
}

async fn backup_status(db: &PgPool) -> Result<BackupStatus, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT max(finished_at) FILTER (WHERE outcome = 'ok' AND command = 'now') AS last_ok,
                  (array_agg(outcome ORDER BY finished_at DESC) FILTER (WHERE command = 'now'))[1] AS last_outcome
             FROM backup_runs"#
    )
    .fetch_one(db)
    .await?;
    Ok(BackupStatus {
        last_success_at: row.last_ok,
        last_run_failed: row.last_outcome.as_deref() == Some("failed"),
    })
}

//! Security alerts: raised by automatic blocks and the misuse rules, deduplicated (one
//! unresolved alert per key; a repeat counts an occurrence and is not delivered again), moved
//! from open to acknowledged to resolved by an officer, each step with who and when.
//!
//! Alert text never holds PHI: rule names, user ids and usernames (staff, not patients),
//! addresses, counts and audit event ids.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// An alert to raise.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub rule: String,
    pub severity: Severity,
    /// Repeats with the same key while the alert is unresolved only count an occurrence.
    pub dedup_key: String,
    pub subject_user: Option<Uuid>,
    pub subject_ip: Option<String>,
    /// One line for a human: who, what, how many. No PHI.
    pub summary: String,
    pub evidence: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub id: Uuid,
    pub rule: String,
    pub severity: String,
    pub subject_user: Option<Uuid>,
    pub subject_ip: Option<String>,
    pub summary: String,
    pub evidence: serde_json::Value,
    pub occurrences: i32,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub state: String,
    pub acknowledged_by: Option<Uuid>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<Uuid>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
}

/// Where alerts go, and how many deliveries a channel may take per hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Channels {
    pub webhook: bool,
    pub email: bool,
    pub per_hour: u32,
}

/// The outcome of raising an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub id: Uuid,
    /// False when an unresolved alert with the same key took the occurrence.
    pub new: bool,
}

/// Raises (or repeats) an alert and queues its deliveries, in `conn`'s transaction.
pub async fn raise(
    conn: &mut PgConnection,
    alert: &NewAlert,
    channels: Channels,
    now: DateTime<Utc>,
) -> Result<Raised, sqlx::Error> {
    let row = sqlx::query!(
        r#"INSERT INTO security_alerts AS a (id, rule, severity, dedup_key, subject_user, subject_ip,
                                             summary, evidence, first_seen, last_seen)
           VALUES ($1, $2, $3, $4, $5, $6::text::inet, $7, $8, $9, $9)
           ON CONFLICT (dedup_key) WHERE state <> 'resolved' DO UPDATE
              SET occurrences = a.occurrences + 1, last_seen = EXCLUDED.last_seen,
                  evidence = EXCLUDED.evidence, summary = EXCLUDED.summary
           RETURNING id, (xmax = 0) AS "new!""#,
        Uuid::now_v7(),
        alert.rule,
        alert.severity.as_str(),
        alert.dedup_key,
        alert.subject_user,
        alert.subject_ip,
        truncate(&alert.summary, 500),
        alert.evidence,
        now
    )
    .fetch_one(&mut *conn)
    .await?;
    if row.new {
        for (channel, on) in [("webhook", channels.webhook), ("email", channels.email)] {
            if on {
                queue_delivery(conn, row.id, channel, channels.per_hour, now).await?;
            }
        }
    }
    Ok(Raised {
        id: row.id,
        new: row.new,
    })
}

/// Queues one delivery; over the channel's hourly cap it is recorded as suppressed instead (the
/// alert itself stays visible in the API and on the dashboard).
async fn queue_delivery(
    conn: &mut PgConnection,
    alert: Uuid,
    channel: &str,
    per_hour: u32,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let recent = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM alert_deliveries
            WHERE channel = $1 AND created_at > $2::timestamptz - interval '1 hour' AND state <> 'suppressed'"#,
        channel,
        now
    )
    .fetch_one(&mut *conn)
    .await?;
    let state = if recent >= i64::from(per_hour) {
        tracing::warn!(channel, "alert delivery cap reached; delivery suppressed");
        "suppressed"
    } else {
        "pending"
    };
    sqlx::query!(
        "INSERT INTO alert_deliveries (id, alert_id, channel, state, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
        Uuid::now_v7(),
        alert,
        channel,
        state,
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Alerts, newest first, optionally of one state.
pub async fn list(db: &PgPool, state: Option<&str>, limit: i64) -> Result<Vec<Alert>, sqlx::Error> {
    sqlx::query_as!(
        Alert,
        r#"SELECT id, rule, severity, subject_user, host(subject_ip) AS subject_ip, summary, evidence,
                  occurrences, first_seen, last_seen, state, acknowledged_by, acknowledged_at,
                  resolved_by, resolved_at, resolution
             FROM security_alerts
            WHERE $1::text IS NULL OR state = $1
            ORDER BY last_seen DESC LIMIT $2"#,
        state,
        limit
    )
    .fetch_all(db)
    .await
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Alert>, sqlx::Error> {
    sqlx::query_as!(
        Alert,
        r#"SELECT id, rule, severity, subject_user, host(subject_ip) AS subject_ip, summary, evidence,
                  occurrences, first_seen, last_seen, state, acknowledged_by, acknowledged_at,
                  resolved_by, resolved_at, resolution
             FROM security_alerts WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Why a state change was refused.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("no such alert")]
    NotFound,
    #[error("the alert is {0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Open → acknowledged.
pub async fn acknowledge(
    conn: &mut PgConnection,
    id: Uuid,
    by: Uuid,
    now: DateTime<Utc>,
) -> Result<Alert, TransitionError> {
    let done = sqlx::query!(
        "UPDATE security_alerts SET state = 'acknowledged', acknowledged_by = $2, acknowledged_at = $3 \
          WHERE id = $1 AND state = 'open'",
        id,
        by,
        now
    )
    .execute(&mut *conn)
    .await?;
    after_transition(conn, id, done.rows_affected()).await
}

/// Open or acknowledged → resolved, with what was found.
pub async fn resolve(
    conn: &mut PgConnection,
    id: Uuid,
    by: Uuid,
    resolution: &str,
    now: DateTime<Utc>,
) -> Result<Alert, TransitionError> {
    let done = sqlx::query!(
        "UPDATE security_alerts SET state = 'resolved', resolved_by = $2, resolved_at = $3, resolution = $4, \
                acknowledged_by = coalesce(acknowledged_by, $2), acknowledged_at = coalesce(acknowledged_at, $3) \
          WHERE id = $1 AND state <> 'resolved'",
        id,
        by,
        now,
        resolution
    )
    .execute(&mut *conn)
    .await?;
    after_transition(conn, id, done.rows_affected()).await
}

async fn after_transition(
    conn: &mut PgConnection,
    id: Uuid,
    changed: u64,
) -> Result<Alert, TransitionError> {
    let alert = get(conn, id).await?.ok_or(TransitionError::NotFound)?;
    if changed == 0 {
        return Err(TransitionError::Invalid(alert.state));
    }
    Ok(alert)
}

/// A delivery as the admin API shows it (dead letters included).
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: Uuid,
    pub alert_id: Uuid,
    pub channel: String,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

pub async fn deliveries(
    db: &PgPool,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as!(
        Delivery,
        "SELECT id, alert_id, channel, state, attempts, next_attempt_at, last_error, created_at, sent_at \
           FROM alert_deliveries WHERE $1::text IS NULL OR state = $1 \
          ORDER BY created_at DESC LIMIT $2",
        state,
        limit
    )
    .fetch_all(db)
    .await
}

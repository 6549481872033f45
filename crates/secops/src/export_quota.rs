//! Export controls (docs/lifecycle.md): how many patients' records one person may take out of
//! the system per day: whole-record exports and file downloads, counted as distinct patients per
//! user per UTC day (a second download of the same patient's file costs nothing). The limit is
//! per role (the highest of the user's roles, else the default), and the count lives in Postgres,
//! so every instance enforces one limit. Going over is refused (429) and raises an alert.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::alerts::{self, Channels, NewAlert, Severity};

/// Per-user daily limits, by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportLimits {
    /// For a user none of whose roles has a limit of its own.
    pub default: u32,
    pub by_role: BTreeMap<String, u32>,
}

impl Default for ExportLimits {
    fn default() -> Self {
        Self {
            default: 25,
            by_role: BTreeMap::new(),
        }
    }
}

impl ExportLimits {
    /// The limit of a user holding `roles`: the highest set for any of them, else the default.
    pub fn for_roles(&self, roles: &[String]) -> u32 {
        roles
            .iter()
            .filter_map(|role| self.by_role.get(role))
            .max()
            .copied()
            .unwrap_or(self.default)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Allowed,
    /// Over the day's limit: try again after the UTC day ends.
    Exceeded {
        limit: u32,
        retry_after: Duration,
    },
}

/// Per-user lock key space (an arbitrary constant, unique in clinicd).
const QUOTA_LOCK_SEED: i64 = 7_022_629_598_042_026_703;

fn day(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive()
}

fn until_tomorrow(now: DateTime<Utc>) -> Duration {
    let tomorrow = day(now)
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc());
    tomorrow
        .and_then(|t| (t - now).to_std().ok())
        .unwrap_or(Duration::from_secs(60))
}

/// Counts `patient` against `user`'s day, or refuses if that would pass `limit`. One user's
/// decisions are serialised (an advisory lock on the user), so two instances at once cannot
/// both take the last slot.
pub async fn take(
    db: &PgPool,
    user: Uuid,
    patient: Uuid,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Quota, sqlx::Error> {
    let today = day(now);
    let mut tx = db.begin().await?;
    sqlx::query_scalar!(
        r#"SELECT true AS "locked!" FROM pg_advisory_xact_lock(hashtextextended($1::uuid::text, $2))"#,
        user,
        QUOTA_LOCK_SEED
    )
    .fetch_one(&mut *tx)
    .await?;
    let counted = sqlx::query!(
        r#"SELECT count(*) AS "taken!", coalesce(bool_or(patient_id = $3), false) AS "already!"
             FROM export_usage WHERE user_id = $1 AND day = $2"#,
        user,
        today,
        patient
    )
    .fetch_one(&mut *tx)
    .await?;
    if counted.already {
        return Ok(Quota::Allowed);
    }
    if counted.taken >= i64::from(limit) {
        return Ok(Quota::Exceeded {
            limit,
            retry_after: until_tomorrow(now),
        });
    }
    sqlx::query!(
        "INSERT INTO export_usage (user_id, day, patient_id, first_at) VALUES ($1, $2, $3, $4)",
        user,
        today,
        patient,
        now
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Quota::Allowed)
}

/// The alert for a user over their limit (one per user and day; repeats count occurrences).
pub async fn alert(
    db: &PgPool,
    user: Uuid,
    limit: u32,
    channels: Channels,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut conn = db.acquire().await?;
    alerts::raise(
        &mut conn,
        &NewAlert {
            rule: "export_limit".into(),
            severity: Severity::High,
            dedup_key: format!("export_limit:{user}:{}", day(now)),
            subject_user: Some(user),
            subject_ip: None,
            summary: format!(
                "a user reached their daily limit of {limit} patients exported or downloaded"
            ),
            evidence: serde_json::json!({ "limit": limit, "day": day(now) }),
        },
        channels,
        now,
    )
    .await?;
    Ok(())
}

/// Forgets days before yesterday (the secops upkeep job).
pub async fn forget(db: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let cutoff = day(now).pred_opt().unwrap_or(day(now));
    Ok(
        sqlx::query!("DELETE FROM export_usage WHERE day < $1", cutoff)
            .execute(db)
            .await?
            .rows_affected(),
    )
}

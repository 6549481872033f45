//! Reading the trail: filtered pages (newest first, cursor by sequence number), totals, and the
//! accounting of disclosures for one patient (HIPAA §164.528).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::AuditError;
use crate::event::StoredEvent;

pub const MAX_PAGE: i64 = 500;

/// Every field narrows the result; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub actor: Option<Uuid>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    pub outcome: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// One page, newest first: events with a sequence number below `before` (all if `None`).
pub async fn page(
    db: &PgPool,
    filter: &EventFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<StoredEvent>, AuditError> {
    Ok(sqlx::query_as!(StoredEvent, "SELECT * FROM audit_events \
         WHERE ($1::uuid IS NULL OR actor_user_id = $1) AND ($2::text IS NULL OR action = $2) \
           AND ($3::text IS NULL OR resource_type = $3) AND ($4::text IS NULL OR resource_id = $4) \
           AND ($5::uuid IS NULL OR patient_id = $5) AND ($6::text IS NULL OR outcome = $6) \
           AND ($7::timestamptz IS NULL OR occurred_at >= $7) AND ($8::timestamptz IS NULL OR occurred_at < $8) \
           AND ($9::bigint IS NULL OR seq < $9) \
         ORDER BY seq DESC LIMIT $10", filter.actor, filter.action.as_deref(), filter.resource_type.as_deref(), filter.resource_id.as_deref(), filter.patient_id, filter.outcome.as_deref(), filter.from, filter.to, before, limit.clamp(1, MAX_PAGE))
    .fetch_all(db)
    .await?)
}

/// One event by sequence number.
pub async fn event(db: &PgPool, seq: i64) -> Result<Option<StoredEvent>, AuditError> {
    Ok(sqlx::query_as!(
        StoredEvent,
        "SELECT * FROM audit_events WHERE seq = $1",
        seq
    )
    .fetch_optional(db)
    .await?)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Stats {
    pub total: i64,
    pub failures: i64,
    pub logins: i64,
    pub failed_logins: i64,
    pub views: i64,
    pub denials: i64,
    pub last_activity: Option<DateTime<Utc>>,
}

/// Totals over `[from, to)` (everything when unbounded).
pub async fn stats(
    db: &PgPool,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Stats, AuditError> {
    Ok(sqlx::query_as!(Stats, "SELECT count(*) AS \"total!\", \
                count(*) FILTER (WHERE outcome IN ('failure', 'error')) AS \"failures!\", \
                count(*) FILTER (WHERE action = 'login' AND outcome = 'success') AS \"logins!\", \
                count(*) FILTER (WHERE action = 'login_failed') AS \"failed_logins!\", \
                count(*) FILTER (WHERE action = 'view') AS \"views!\", \
                count(*) FILTER (WHERE outcome = 'denied') AS \"denials!\", \
                max(occurred_at) AS last_activity \
         FROM audit_events \
         WHERE ($1::timestamptz IS NULL OR occurred_at >= $1) AND ($2::timestamptz IS NULL OR occurred_at < $2)", from, to)
    .fetch_one(db)
    .await?)
}

/// The largest page of an accounting of disclosures.
pub const MAX_DISCLOSURES_PAGE: i64 = 1000;

/// Every event that disclosed one patient's data in `[from, to)`, oldest first, after sequence
/// number `after`: the events naming the patient, and those whose answer listed them (a search,
/// a list); not the trail's own reads by the privacy office, which disclose nothing new. Audit
/// rows outlive the records: this works for a deleted or shredded patient.
pub async fn disclosures(
    db: &PgPool,
    patient: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<StoredEvent>, AuditError> {
    Ok(sqlx::query_as!(StoredEvent, "SELECT e.* FROM audit_disclosures d \
         JOIN audit_events e ON e.seq = d.seq AND e.occurred_at = d.occurred_at \
         WHERE d.patient_id = $1 AND e.action NOT IN ('audit_read', 'audit_verify') \
           AND ($2::timestamptz IS NULL OR d.occurred_at >= $2) AND ($3::timestamptz IS NULL OR d.occurred_at < $3) \
           AND ($4::bigint IS NULL OR d.seq > $4) \
         ORDER BY d.seq LIMIT $5", patient, from, to, after, limit.clamp(1, MAX_DISCLOSURES_PAGE))
    .fetch_all(db)
    .await?)
}

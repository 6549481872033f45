//! Legal holds: on a set of patients or on everything, placed and released with a reason and a
//! case reference. While one is in force nothing of a covered patient is deleted, purged,
//! archived or erased, by any path: each asks `legal_hold_for` in its own transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{LifecycleError, checked_text};

/// The lifecycle lock (an arbitrary constant, unique in clinicd): destructive paths take it
/// shared inside `legal_hold_for`, placing a hold takes it exclusively.
const LIFECYCLE_LOCK: i64 = 7_022_629_598_042_026_701;

/// At most this many patients in one hold (a larger matter is a hold on everything).
pub const MAX_PATIENTS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldScope {
    Patients,
    All,
}

impl HoldScope {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "patients" => Some(Self::Patients),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patients => "patients",
            Self::All => "all",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewHold {
    pub scope: HoldScope,
    pub patients: Vec<Uuid>,
    pub reason: String,
    pub case_reference: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub id: Uuid,
    pub scope: HoldScope,
    pub patients: Vec<Uuid>,
    pub reason: String,
    pub case_reference: String,
    pub placed_by: Uuid,
    pub placed_at: DateTime<Utc>,
    pub released_by: Option<Uuid>,
    pub released_at: Option<DateTime<Utc>>,
    pub release_reason: Option<String>,
}

struct Row {
    id: Uuid,
    scope: String,
    patients: Vec<Uuid>,
    reason: String,
    case_reference: String,
    placed_by: Uuid,
    placed_at: DateTime<Utc>,
    released_by: Option<Uuid>,
    released_at: Option<DateTime<Utc>>,
    release_reason: Option<String>,
}

impl From<Row> for Hold {
    fn from(row: Row) -> Self {
        Hold {
            id: row.id,
            scope: HoldScope::parse(&row.scope).unwrap_or(HoldScope::All),
            patients: row.patients,
            reason: row.reason,
            case_reference: row.case_reference,
            placed_by: row.placed_by,
            placed_at: row.placed_at,
            released_by: row.released_by,
            released_at: row.released_at,
            release_reason: row.release_reason,
        }
    }
}

/// Checks a new hold: a reason and a case reference, and patients exactly when the scope is
/// `patients` (1 to [`MAX_PATIENTS`], duplicates folded).
pub fn validate(mut hold: NewHold) -> Result<NewHold, LifecycleError> {
    hold.reason = checked_text("reason", &hold.reason, 500)?;
    hold.case_reference = checked_text("case_reference", &hold.case_reference, 100)?;
    hold.patients.sort_unstable();
    hold.patients.dedup();
    match hold.scope {
        HoldScope::All if !hold.patients.is_empty() => Err(LifecycleError::Invalid {
            field: "patient_ids",
            reason: "a hold on everything names no patients".into(),
        }),
        HoldScope::Patients if hold.patients.is_empty() || hold.patients.len() > MAX_PATIENTS => {
            Err(LifecycleError::Invalid {
                field: "patient_ids",
                reason: format!("must name 1 to {MAX_PATIENTS} patients"),
            })
        }
        _ => Ok(hold),
    }
}

/// Places a hold in the caller's transaction (committed with its audit event). Waits for any
/// destruction under way; every later one sees the hold.
pub async fn place(
    tx: &mut PgConnection,
    hold: NewHold,
    by: Uuid,
    now: DateTime<Utc>,
) -> Result<Hold, LifecycleError> {
    let hold = validate(hold)?;
    sqlx::query_scalar!(
        r#"SELECT true AS "locked!" FROM pg_advisory_xact_lock($1)"#,
        LIFECYCLE_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    let known: i64 = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM patients WHERE id = ANY($1)"#,
        &hold.patients
    )
    .fetch_one(&mut *tx)
    .await?;
    if usize::try_from(known).ok() != Some(hold.patients.len()) {
        return Err(LifecycleError::Invalid {
            field: "patient_ids",
            reason: "names a patient that does not exist".into(),
        });
    }
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO legal_holds (id, scope, reason, case_reference, placed_by, placed_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        id,
        hold.scope.as_str(),
        hold.reason,
        hold.case_reference,
        by,
        now
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO legal_hold_patients (hold_id, patient_id) SELECT $1, unnest($2::uuid[])",
        id,
        &hold.patients
    )
    .execute(&mut *tx)
    .await?;
    Ok(Hold {
        id,
        scope: hold.scope,
        patients: hold.patients,
        reason: hold.reason,
        case_reference: hold.case_reference,
        placed_by: by,
        placed_at: now,
        released_by: None,
        released_at: None,
        release_reason: None,
    })
}

/// Releases a hold in the caller's transaction.
pub async fn release(
    tx: &mut PgConnection,
    id: Uuid,
    by: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Hold, LifecycleError> {
    let reason = checked_text("reason", reason, 500)?;
    let released = sqlx::query_scalar!(
        "SELECT released_at FROM legal_holds WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(LifecycleError::NotFound)?;
    if released.is_some() {
        return Err(LifecycleError::Released);
    }
    sqlx::query!(
        "UPDATE legal_holds SET released_by = $2, released_at = $3, release_reason = $4 WHERE id = $1",
        id,
        by,
        now,
        reason
    )
    .execute(&mut *tx)
    .await?;
    get(tx, id).await?.ok_or(LifecycleError::NotFound)
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Hold>, LifecycleError> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT h.id, h.scope, h.reason, h.case_reference, h.placed_by, h.placed_at, h.released_by,
                  h.released_at, h.release_reason,
                  ARRAY(SELECT p.patient_id FROM legal_hold_patients p WHERE p.hold_id = h.id ORDER BY p.patient_id) AS "patients!"
             FROM legal_holds h WHERE h.id = $1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Hold::from))
}

/// Holds, newest first: the active ones only, or all of them.
pub async fn list(conn: &mut PgConnection, active_only: bool) -> Result<Vec<Hold>, LifecycleError> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT h.id, h.scope, h.reason, h.case_reference, h.placed_by, h.placed_at, h.released_by,
                  h.released_at, h.release_reason,
                  ARRAY(SELECT p.patient_id FROM legal_hold_patients p WHERE p.hold_id = h.id ORDER BY p.patient_id) AS "patients!"
             FROM legal_holds h WHERE NOT $1 OR h.released_at IS NULL
            ORDER BY h.placed_at DESC, h.id DESC LIMIT 500"#,
        active_only
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Hold::from).collect())
}

/// The hold that covers `patient` now, if any (taking the lifecycle lock shared until the
/// caller's transaction ends).
pub async fn hold_for(
    conn: &mut PgConnection,
    patient: Uuid,
) -> Result<Option<Uuid>, LifecycleError> {
    Ok(
        sqlx::query_scalar!("SELECT legal_hold_for($1) AS hold", patient)
            .fetch_one(&mut *conn)
            .await?,
    )
}

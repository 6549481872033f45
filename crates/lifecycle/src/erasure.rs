//! Erasure by crypto-shredding. One person (or the retention policy) asks, naming the patient
//! and the legal basis; another approves. Approval destroys the patient's subject keys (every
//! field, note, file key and sealed audit value under them becomes unrecoverable), deletes their
//! blind indexes, name tokens, notes, appointments, care-team rows, file rows and file objects,
//! reduces the patient row to a tombstone, appends the erasure to the ledger (inside and outside
//! the database) and stores a certificate of destruction. Refused while a legal hold covers the
//! patient (no basis overrides a hold) and while retention still keeps the record, unless the
//! basis overrides retention ([`Basis::overrides_retention`]).

use chrono::{DateTime, Utc};
use clinicd_audit::{Action, NewEvent, Outcome};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ledger::{self, LedgerEntry};
use crate::{Lifecycle, LifecycleError, checked_text, holds, retention};

/// Why a patient is erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Every retention period of the record has run out (filed by the retention job, or by a
    /// records manager who checked it): overrides nothing, since it is retention's own end.
    RetentionExpired,
    /// The patient asked (a state privacy law's deletion right; HIPAA itself gives none): only
    /// once retention has run out.
    PatientRequest,
    /// A court ordered the record destroyed (expungement): overrides retention, not a hold.
    CourtOrder,
    /// The record was created in error (a duplicate, the wrong person) and holds no clinical
    /// note: overrides retention, since there is no care to document.
    CreatedInError,
}

impl Basis {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "retention_expired" => Some(Self::RetentionExpired),
            "patient_request" => Some(Self::PatientRequest),
            "court_order" => Some(Self::CourtOrder),
            "created_in_error" => Some(Self::CreatedInError),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetentionExpired => "retention_expired",
            Self::PatientRequest => "patient_request",
            Self::CourtOrder => "court_order",
            Self::CreatedInError => "created_in_error",
        }
    }

    /// Whether this basis may erase a record that retention still keeps. No basis overrides a
    /// legal hold: the hold's holder releases it first, with a reason.
    pub fn overrides_retention(self) -> bool {
        matches!(self, Self::CourtOrder | Self::CreatedInError)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Pending,
    Rejected,
    Completed,
}

/// What an erasure destroyed, by count and key id: the certificate's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destroyed {
    /// The destroyed subject keys, as `<patient id>/v<version>`.
    pub subject_keys: Vec<String>,
    pub clinical_notes: u64,
    pub appointments: u64,
    /// Files whose rows went; their objects are deleted from the store as the erasure commits.
    pub files: u64,
}

/// The certificate of destruction: what was destroyed, when, on whose request and approval.
/// Ids only, no PHI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub certificate_id: Uuid,
    pub request_id: Uuid,
    pub patient_id: Uuid,
    pub basis: Basis,
    /// `None`: filed by the retention policy.
    pub requested_by: Option<Uuid>,
    pub requested_at: DateTime<Utc>,
    /// `None`: approved by the retention policy (CLINICD_RETENTION_AUTO_ERASE).
    pub approved_by: Option<Uuid>,
    pub erased_at: DateTime<Utc>,
    pub destroyed: Destroyed,
    /// The patient's before/after values in the audit trail and its archives were sealed under
    /// the destroyed keys; the chain (over ciphertext) still verifies.
    pub audit_values: String,
    pub ledger_seq: i64,
    pub ledger_hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErasureRequest {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub basis: Basis,
    pub reason: String,
    pub requested_by: Option<Uuid>,
    pub requested_at: DateTime<Utc>,
    pub state: RequestState,
    pub decided_by: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_reason: Option<String>,
    /// A completed request's [`Certificate`] (or, for one completed by a ledger replay after a
    /// restore, `{"replayed_from_ledger": seq}`).
    pub certificate: Option<serde_json::Value>,
}

struct Row {
    id: Uuid,
    patient_id: Uuid,
    basis: String,
    reason: String,
    requested_by: Option<Uuid>,
    requested_at: DateTime<Utc>,
    state: String,
    decided_by: Option<Uuid>,
    decided_at: Option<DateTime<Utc>>,
    decision_reason: Option<String>,
    certificate: Option<serde_json::Value>,
}

impl TryFrom<Row> for ErasureRequest {
    type Error = LifecycleError;

    fn try_from(row: Row) -> Result<Self, LifecycleError> {
        let corrupt =
            || LifecycleError::Ledger(format!("erasure request {} does not parse", row.id));
        Ok(ErasureRequest {
            id: row.id,
            patient_id: row.patient_id,
            basis: Basis::parse(&row.basis).ok_or_else(corrupt)?,
            reason: row.reason.clone(),
            requested_by: row.requested_by,
            requested_at: row.requested_at,
            state: match row.state.as_str() {
                "pending" => RequestState::Pending,
                "rejected" => RequestState::Rejected,
                "completed" => RequestState::Completed,
                _ => return Err(corrupt()),
            },
            decided_by: row.decided_by,
            decided_at: row.decided_at,
            decision_reason: row.decision_reason.clone(),
            certificate: row.certificate.clone(),
        })
    }
}

/// Fails unless the patient exists, is not erased and is not held; locks the patient's row
/// until the caller's transaction ends.
async fn erasable(
    lifecycle: &Lifecycle,
    tx: &mut PgConnection,
    patient: Uuid,
) -> Result<(), LifecycleError> {
    match lifecycle.patients.erased_at(tx, patient).await {
        Ok(None) => {}
        Ok(Some(_)) => return Err(LifecycleError::AlreadyErased),
        Err(clinicd_domain::StoreError::NotFound) => return Err(LifecycleError::NotFound),
        Err(other) => return Err(other.into()),
    }
    if let Some(hold) = holds::hold_for(tx, patient).await? {
        return Err(LifecycleError::Held(hold));
    }
    Ok(())
}

/// Files a request in the caller's transaction. `by` is `None` for the retention policy.
pub async fn request(
    lifecycle: &Lifecycle,
    tx: &mut PgConnection,
    patient: Uuid,
    basis: Basis,
    reason: &str,
    by: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<ErasureRequest, LifecycleError> {
    let reason = checked_text("reason", reason, 500)?;
    erasable(lifecycle, tx, patient).await?;
    retention::permits(lifecycle, tx, patient, basis, now).await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query!(
        "INSERT INTO erasure_requests (id, patient_id, basis, reason, requested_by, requested_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (patient_id) WHERE state = 'pending' DO NOTHING",
        id,
        patient,
        basis.as_str(),
        reason,
        by,
        now
    )
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() != 1 {
        return Err(LifecycleError::PendingExists);
    }
    get(tx, id).await?.ok_or(LifecycleError::NotFound)
}

/// Approves a pending request and erases the patient, in the caller's transaction (committed
/// with its audit event); once it commits, the caller calls [`finish`] to write the ledger entry
/// outside and delete the file objects. `by` is `None` for the retention policy's own approval.
pub async fn approve(
    lifecycle: &Lifecycle,
    tx: &mut PgConnection,
    id: Uuid,
    by: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<ErasureRequest, LifecycleError> {
    let pending = pending(tx, id).await?;
    if by.is_some() && by == pending.requested_by {
        return Err(LifecycleError::OwnRequest);
    }
    erasable(lifecycle, tx, pending.patient_id).await?;
    retention::permits(lifecycle, tx, pending.patient_id, pending.basis, now).await?;
    let destroyed = erase(lifecycle, tx, pending.patient_id, id, now).await?;
    let entry = ledger::append(tx, &lifecycle.keyring, pending.patient_id, id, now).await?;
    let certificate = Certificate {
        certificate_id: Uuid::now_v7(),
        request_id: id,
        patient_id: pending.patient_id,
        basis: pending.basis,
        requested_by: pending.requested_by,
        requested_at: pending.requested_at,
        approved_by: by,
        erased_at: entry.erased_at,
        destroyed,
        audit_values:
            "sealed under the destroyed subject keys: unrecoverable in the trail and its archives"
                .into(),
        ledger_seq: entry.seq,
        ledger_hash: entry.hash,
    };
    let body =
        serde_json::to_value(&certificate).map_err(|e| LifecycleError::Ledger(e.to_string()))?;
    sqlx::query!(
        "UPDATE erasure_requests SET state = 'completed', decided_by = $2, decided_at = $3, certificate = $4 \
         WHERE id = $1",
        id,
        by,
        entry.erased_at,
        body
    )
    .execute(&mut *tx)
    .await?;
    get(tx, id).await?.ok_or(LifecycleError::NotFound)
}

/// Rejects (or, by its own requester, withdraws) a pending request.
pub async fn reject(
    tx: &mut PgConnection,
    id: Uuid,
    by: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<ErasureRequest, LifecycleError> {
    let reason = checked_text("reason", reason, 500)?;
    pending(tx, id).await?;
    // The requester may withdraw their own request: decided_by stays NULL then (the table
    // refuses a decider equal to the requester, which is an approval's rule).
    sqlx::query!(
        "UPDATE erasure_requests SET state = 'rejected', \
           decided_by = CASE WHEN requested_by = $2 THEN NULL ELSE $2 END, decided_at = $3, decision_reason = $4 \
         WHERE id = $1",
        id,
        by,
        now,
        reason
    )
    .execute(&mut *tx)
    .await?;
    get(tx, id).await?.ok_or(LifecycleError::NotFound)
}

/// The request, locked, if it is still pending.
async fn pending(tx: &mut PgConnection, id: Uuid) -> Result<ErasureRequest, LifecycleError> {
    sqlx::query_scalar!(
        "SELECT id FROM erasure_requests WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(LifecycleError::NotFound)?;
    let request = get(tx, id).await?.ok_or(LifecycleError::NotFound)?;
    if request.state != RequestState::Pending {
        return Err(LifecycleError::Decided);
    }
    Ok(request)
}

pub async fn get(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ErasureRequest>, LifecycleError> {
    sqlx::query_as!(
        Row,
        "SELECT id, patient_id, basis, reason, requested_by, requested_at, state, decided_by, decided_at, \
                decision_reason, certificate FROM erasure_requests WHERE id = $1",
        id
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(ErasureRequest::try_from)
    .transpose()
}

/// Requests, newest first; only the pending ones if asked.
pub async fn list(
    conn: &mut PgConnection,
    pending_only: bool,
) -> Result<Vec<ErasureRequest>, LifecycleError> {
    sqlx::query_as!(
        Row,
        "SELECT id, patient_id, basis, reason, requested_by, requested_at, state, decided_by, decided_at, \
                decision_reason, certificate FROM erasure_requests \
          WHERE NOT $1 OR state = 'pending' ORDER BY requested_at DESC, id DESC LIMIT 500",
        pending_only
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(ErasureRequest::try_from)
    .collect()
}

/// The destruction itself, in the caller's transaction: keys, indexes and tokens, notes,
/// appointments, file rows (their objects queued for deletion), the tombstone and the ledger
/// entry is the caller's: an approval appends one, a replay records the one it replays).
async fn erase(
    lifecycle: &Lifecycle,
    tx: &mut PgConnection,
    patient: Uuid,
    request: Uuid,
    now: DateTime<Utc>,
) -> Result<Destroyed, LifecycleError> {
    // Lets this transaction, and only for this patient, remove signed notes.
    sqlx::query_scalar!(
        r#"SELECT set_config('clinicd.erasing', $1, true) AS "set!""#,
        patient.to_string()
    )
    .fetch_one(&mut *tx)
    .await?;
    let versions = lifecycle.patients.shred(tx, patient).await?;
    let objects = lifecycle.files.erase_patient_rows(tx, patient).await?;
    sqlx::query!(
        "INSERT INTO erasure_objects (object_key, request_id) SELECT unnest($1::text[]), $2 \
         ON CONFLICT (object_key) DO NOTHING",
        &objects,
        request
    )
    .execute(&mut *tx)
    .await?;
    let removed = lifecycle.patients.tombstone(tx, patient, now).await?;
    Ok(Destroyed {
        subject_keys: versions.iter().map(|v| format!("{patient}/v{v}")).collect(),
        clinical_notes: removed.notes,
        appointments: removed.appointments,
        files: objects.len() as u64,
    })
}

/// What follows a committed erasure outside the database: the ledger entry written out, the
/// file objects deleted from the store. Idempotent; on failure the database still lists what is
/// left, and the next call (the retention job, the next start) finishes it.
pub async fn finish(lifecycle: &Lifecycle) -> Result<(), LifecycleError> {
    let outside = lifecycle.ledger.all().await?;
    let mut conn = lifecycle.db.acquire().await?;
    let inside = ledger::database_entries(&mut conn).await?;
    drop(conn);
    for entry in inside.iter().skip(outside.len()) {
        lifecycle.ledger.put(entry).await?;
    }
    delete_queued_objects(lifecycle).await
}

/// Deletes the objects queued by erasures, a batch at a time.
pub(crate) async fn delete_queued_objects(lifecycle: &Lifecycle) -> Result<(), LifecycleError> {
    loop {
        let keys: Vec<String> = sqlx::query_scalar!(
            "SELECT object_key FROM erasure_objects ORDER BY queued_at, object_key LIMIT 100"
        )
        .fetch_all(&lifecycle.db)
        .await?;
        if keys.is_empty() {
            return Ok(());
        }
        lifecycle.files.delete_objects(&keys).await?;
        sqlx::query!(
            "DELETE FROM erasure_objects WHERE object_key = ANY($1)",
            &keys
        )
        .execute(&lifecycle.db)
        .await?;
    }
}

/// Replays one ledger entry the database lacks: erases the patient again if the database still
/// holds them (a restored backup), whatever holds or retention say (the erasure happened), and
/// records the entry. Returns whether the patient was erased again.
pub(crate) async fn replay_entry(
    lifecycle: &Lifecycle,
    entry: &LedgerEntry,
) -> Result<bool, LifecycleError> {
    let mut tx = lifecycle.db.begin().await?;
    let present = match lifecycle
        .patients
        .erased_at(&mut tx, entry.patient_id)
        .await
    {
        Ok(erased) => erased.is_none(),
        Err(clinicd_domain::StoreError::NotFound) => false,
        Err(other) => return Err(other.into()),
    };
    if present {
        let destroyed = erase(
            lifecycle,
            &mut tx,
            entry.patient_id,
            entry.request_id,
            Utc::now(),
        )
        .await?;
        let mut event = NewEvent::new(Action::Erasure, Outcome::Success);
        event.resource_type = Some("patient".into());
        event.resource_id = Some(entry.patient_id.to_string());
        event.patient_id = Some(entry.patient_id);
        event.reason = Some("ledger_replay".into());
        event.user_agent = Some(format!("clinicd/{} lifecycle", env!("CARGO_PKG_VERSION")));
        event.metadata = serde_json::json!({ "ledger_seq": entry.seq, "request_id": entry.request_id,
            "destroyed": destroyed });
        clinicd_audit::writer::append_in(&mut tx, &lifecycle.keyring, &[&event]).await?;
        sqlx::query!(
            "UPDATE erasure_requests SET state = 'completed', decided_at = $2, \
               certificate = jsonb_build_object('replayed_from_ledger', $3::bigint) \
             WHERE id = $1 AND state = 'pending'",
            entry.request_id,
            entry.erased_at,
            entry.seq
        )
        .execute(&mut *tx)
        .await?;
    }
    ledger::insert(&mut tx, entry).await?;
    tx.commit().await?;
    Ok(present)
}

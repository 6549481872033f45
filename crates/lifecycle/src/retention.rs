//! Retention: how long each class of record is kept, and which patients have passed it.
//!
//! A patient's record is kept until the latest of: the last encounter (a visit that took place,
//! a clinical note's encounter date, or registration if there was neither) plus the record
//! period; the last note's encounter date plus the note period; the last live file's upload plus
//! the file period; and, for a patient who was a minor at the last encounter, their
//! `minor_age`th birthday plus the record period. No period may be set under the floor (6 years,
//! HIPAA's documentation rule). The audit trail's own period is the audit crate's
//! (CLINICD_AUDIT_RETENTION_YEARS, same floor).

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use clinicd_audit::{Action, NewEvent, Outcome};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::erasure::{self, Basis};
use crate::{Lifecycle, LifecycleError, holds};

/// No retention period may be shorter (45 CFR 164.316(b)(2): six years).
pub const FLOOR_YEARS: u32 = 6;
pub const DEFAULT_YEARS: u32 = 7;
pub const DEFAULT_MINOR_AGE: u32 = 21;
/// Adulthood, for the minors' rule.
const MAJORITY: u32 = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    pub record_years: u32,
    pub note_years: u32,
    pub file_years: u32,
    /// A patient who was a minor at the last encounter is kept until this birthday plus the
    /// record period.
    pub minor_age: u32,
    /// Whether the retention job erases what has passed retention by itself (the policy is
    /// then the approval), rather than filing requests for a person to approve.
    pub auto_erase: bool,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            record_years: DEFAULT_YEARS,
            note_years: DEFAULT_YEARS,
            file_years: DEFAULT_YEARS,
            minor_age: DEFAULT_MINOR_AGE,
            auto_erase: false,
        }
    }
}

impl RetentionPolicy {
    /// Refuses a period under the floor or a minors' age under majority.
    pub fn validate(self) -> Result<Self, String> {
        for (name, years) in [
            ("record", self.record_years),
            ("note", self.note_years),
            ("file", self.file_years),
        ] {
            if !(FLOOR_YEARS..=100).contains(&years) {
                return Err(format!(
                    "the {name} retention period must be {FLOOR_YEARS} to 100 years"
                ));
            }
        }
        if !(MAJORITY..=30).contains(&self.minor_age) {
            return Err(format!(
                "the minors' retention age must be {MAJORITY} to 30"
            ));
        }
        Ok(self)
    }
}

/// Which rule keeps a record longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Record,
    Minor,
    Note,
    File,
}

/// A patient whose retention has run out. Ids and whole days only: no name, no date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Due {
    pub patient_id: Uuid,
    /// The rule that kept the record longest (and has now run out too).
    pub rule: Rule,
    /// Whole days since the last rule ran out.
    pub overdue_days: i64,
    /// A legal hold that keeps it anyway.
    pub hold_id: Option<Uuid>,
    /// A pending erasure request for it.
    pub pending_request: Option<Uuid>,
}

struct Facts {
    id: Uuid,
    created_at: DateTime<Utc>,
    last_visit: Option<DateTime<Utc>>,
    last_note: Option<NaiveDate>,
    last_file: Option<DateTime<Utc>>,
}

fn plus_years(at: DateTime<Utc>, years: u32) -> DateTime<Utc> {
    at.checked_add_months(Months::new(12 * years))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn day(date: NaiveDate) -> DateTime<Utc> {
    date.and_hms_opt(0, 0, 0)
        .map_or(DateTime::<Utc>::MIN_UTC, |d| d.and_utc())
}

async fn facts(conn: &mut PgConnection, only: Option<Uuid>) -> Result<Vec<Facts>, LifecycleError> {
    Ok(sqlx::query_as!(
        Facts,
        r#"SELECT p.id, p.created_at,
                  (SELECT max(a.starts_at) FROM appointments a
                    WHERE a.patient_id = p.id AND a.status IN ('arrived', 'completed')) AS last_visit,
                  (SELECT max(n.encounter_date) FROM clinical_notes n WHERE n.patient_id = p.id) AS last_note,
                  (SELECT max(f.created_at) FROM files f WHERE f.patient_id = p.id AND f.deleted_at IS NULL) AS last_file
             FROM patients p
            WHERE p.erased_at IS NULL AND ($1::uuid IS NULL OR p.id = $1)
            ORDER BY p.id"#,
        only
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// When retention ends for one patient, and by which rule. Decrypts the date of birth only
/// when the other rules have run out (the minors' rule can only lengthen them).
async fn retained_until(
    lifecycle: &Lifecycle,
    facts: &Facts,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, Rule), LifecycleError> {
    let policy = lifecycle.policy;
    let last_encounter = [facts.last_visit, facts.last_note.map(day)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(facts.created_at);
    let mut until = (
        plus_years(last_encounter, policy.record_years),
        Rule::Record,
    );
    for candidate in [
        facts
            .last_note
            .map(|n| (plus_years(day(n), policy.note_years), Rule::Note)),
        facts
            .last_file
            .map(|f| (plus_years(f, policy.file_years), Rule::File)),
    ]
    .into_iter()
    .flatten()
    {
        if candidate.0 > until.0 {
            until = candidate;
        }
    }
    if until.0 > now {
        return Ok(until);
    }
    let birth = match lifecycle.patients.get(facts.id).await {
        Ok(Some(patient)) => patient.data.date_of_birth.date(),
        Ok(None) => return Ok(until),
        // Keys already destroyed: nothing left to keep.
        Err(clinicd_domain::StoreError::Crypto(clinicd_crypto::CryptoError::KeyDestroyed)) => {
            return Ok(until);
        }
        Err(other) => return Err(other.into()),
    };
    let adult = birth
        .checked_add_months(Months::new(12 * MAJORITY))
        .map_or(DateTime::<Utc>::MAX_UTC, day);
    if last_encounter < adult {
        let minor_until = birth
            .checked_add_months(Months::new(12 * policy.minor_age))
            .map_or(DateTime::<Utc>::MAX_UTC, |b| {
                plus_years(day(b), policy.record_years)
            });
        if minor_until > until.0 {
            until = (minor_until, Rule::Minor);
        }
    }
    Ok(until)
}

/// Whether `basis` may erase `patient` now as far as retention goes.
pub async fn permits(
    lifecycle: &Lifecycle,
    tx: &mut PgConnection,
    patient: Uuid,
    basis: Basis,
    now: DateTime<Utc>,
) -> Result<(), LifecycleError> {
    if basis == Basis::CreatedInError {
        let notes: i64 = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM clinical_notes WHERE patient_id = $1"#,
            patient
        )
        .fetch_one(&mut *tx)
        .await?;
        if notes > 0 {
            return Err(LifecycleError::Retained(
                "the record holds clinical notes, so it was not created in error: ask on another basis"
                    .into(),
            ));
        }
    }
    if basis.overrides_retention() {
        return Ok(());
    }
    let Some(found) = facts(tx, Some(patient)).await?.into_iter().next() else {
        return Err(LifecycleError::NotFound);
    };
    let (until, rule) = retained_until(lifecycle, &found, now).await?;
    if until > now {
        let rule = match rule {
            Rule::Record => "the record period after the last encounter",
            Rule::Minor => "the minors' rule",
            Rule::Note => "the clinical notes' period",
            Rule::File => "the files' period",
        };
        return Err(LifecycleError::Retained(format!(
            "retention ({rule}) keeps this record until {}; the basis `{}` does not override retention",
            until.year(),
            basis.as_str()
        )));
    }
    Ok(())
}

/// Every patient past retention, with any hold that keeps them and any pending request: the
/// dry run (`clinicd lifecycle report`) and the job's work list.
pub async fn report(lifecycle: &Lifecycle, now: DateTime<Utc>) -> Result<Vec<Due>, LifecycleError> {
    // One connection at a time: never hold one while waiting for another (a small pool shared
    // with the other jobs would run dry).
    let all = {
        let mut conn = lifecycle.db.acquire().await?;
        facts(&mut conn, None).await?
    };
    let mut due = Vec::new();
    for facts in all {
        let (until, rule) = retained_until(lifecycle, &facts, now).await?;
        if until > now {
            continue;
        }
        let mut tx = lifecycle.db.begin().await?;
        let hold_id = holds::hold_for(&mut tx, facts.id).await?;
        tx.commit().await?;
        let pending_request = sqlx::query_scalar!(
            "SELECT id FROM erasure_requests WHERE patient_id = $1 AND state = 'pending'",
            facts.id
        )
        .fetch_optional(&lifecycle.db)
        .await?;
        due.push(Due {
            patient_id: facts.id,
            rule,
            overdue_days: (now - until).num_days(),
            hold_id,
            pending_request,
        });
    }
    Ok(due)
}

/// What one run of the retention job did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionRun {
    pub due: usize,
    pub held: usize,
    pub requests_filed: usize,
    pub erased: usize,
}

/// The retention job: files an erasure request (basis `retention_expired`, by the policy) for
/// every patient past retention that no hold keeps and no request awaits, and with
/// `auto_erase` approves it at once. Each step in its own transaction with its audit event.
pub async fn run(
    lifecycle: &Lifecycle,
    now: DateTime<Utc>,
) -> Result<RetentionRun, LifecycleError> {
    // What an earlier erasure left undone outside the database (an unreachable store).
    erasure::finish(lifecycle).await?;
    let due = report(lifecycle, now).await?;
    let mut run = RetentionRun {
        due: due.len(),
        ..RetentionRun::default()
    };
    for item in due {
        if item.hold_id.is_some() {
            run.held += 1;
            continue;
        }
        let request = match item.pending_request {
            Some(id) => id,
            None => {
                let mut tx = lifecycle.db.begin().await?;
                let filed = match erasure::request(
                    lifecycle,
                    &mut tx,
                    item.patient_id,
                    Basis::RetentionExpired,
                    "retention period ended",
                    None,
                    now,
                )
                .await
                {
                    Ok(filed) => filed,
                    // A hold or an encounter arrived meanwhile: next run.
                    Err(LifecycleError::Held(_) | LifecycleError::Retained(_)) => continue,
                    Err(other) => return Err(other),
                };
                record(&mut tx, lifecycle, Action::ErasureRequest, &filed).await?;
                tx.commit().await?;
                run.requests_filed += 1;
                filed.id
            }
        };
        if lifecycle.policy.auto_erase {
            let mut tx = lifecycle.db.begin().await?;
            match erasure::approve(lifecycle, &mut tx, request, None, now).await {
                Ok(done) => {
                    record(&mut tx, lifecycle, Action::Erasure, &done).await?;
                    tx.commit().await?;
                    run.erased += 1;
                }
                Err(LifecycleError::Held(_) | LifecycleError::Retained(_)) => {}
                Err(other) => return Err(other),
            }
        }
    }
    erasure::finish(lifecycle).await?;
    Ok(run)
}

/// The job's own audit event for a request it filed or approved.
async fn record(
    tx: &mut PgConnection,
    lifecycle: &Lifecycle,
    action: Action,
    request: &erasure::ErasureRequest,
) -> Result<(), LifecycleError> {
    let mut event = NewEvent::new(action, Outcome::Success);
    event.resource_type = Some("erasure_request".into());
    event.resource_id = Some(request.id.to_string());
    event.patient_id = Some(request.patient_id);
    event.reason = Some("retention".into());
    event.user_agent = Some(format!(
        "clinicd/{} lifecycle_retention",
        env!("CARGO_PKG_VERSION")
    ));
    event.metadata = serde_json::json!({ "job": "lifecycle_retention", "basis": request.basis,
        "state": request.state });
    clinicd_audit::writer::append_in(tx, &lifecycle.keyring, &[&event]).await?;
    Ok(())
}

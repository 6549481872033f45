//! Care teams: which users may reach which patients. Everyone who touches clinical data is
//! held to them (an Admin holds no clinical permission at all); a user outside the team gets
//! the same answer as for a patient that does not exist. Break-the-glass grants are the one
//! way around, and each is recorded and reviewed.

use chrono::{DateTime, Utc};
use clinicd_crypto::{Encrypted, FieldLocation, Owner, Purpose};
use clinicd_identity::users::UserId;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::Rbac;
use crate::error::RbacError;

/// How a user reaches a patient, if at all: the care-team rule's answer. "Reach" names this
/// rule and nothing else; the rule itself is the SQL function `patient_reach` (migration
/// 0018), which every scoped query calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    CareTeam,
    /// Through an unexpired break-the-glass grant.
    BreakGlass,
    None,
}

impl Reach {
    pub fn allowed(self) -> bool {
        !matches!(self, Reach::None)
    }

    /// As the SQL function names it (and the audit trail records it); `None` is `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::CareTeam => "care_team",
            Reach::BreakGlass => "break_glass",
            Reach::None => "none",
        }
    }

    /// From the SQL function's answer.
    pub fn from_sql(value: Option<&str>) -> Self {
        match value {
            Some("care_team") => Reach::CareTeam,
            Some("break_glass") => Reach::BreakGlass,
            _ => Reach::None,
        }
    }
}

/// The care-team rule for one user and one patient.
pub async fn reach(
    db: impl PgExecutor<'_>,
    user: UserId,
    patient: Uuid,
    now: DateTime<Utc>,
) -> Result<Reach, RbacError> {
    let reach: Option<String> =
        sqlx::query_scalar!("SELECT patient_reach($1, $2, $3)", user.0, patient, now)
            .fetch_one(db)
            .await?;
    Ok(Reach::from_sql(reach.as_deref()))
}

/// A member of a patient's care team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub assigned_by: Option<Uuid>,
    pub assigned_at: DateTime<Utc>,
    /// Why they were assigned (`None` for the registrant of the patient, and for assignments
    /// made before reasons were recorded).
    pub reason: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct MemberRow {
    user_id: Uuid,
    username: String,
    display_name: String,
    assigned_by: Option<Uuid>,
    assigned_at: DateTime<Utc>,
    reason: Option<Encrypted<String>>,
}

/// One assignment, as an audit before/after value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub patient_id: Uuid,
    pub user_id: Uuid,
    pub assigned_by: Option<Uuid>,
    pub reason: Option<String>,
}

pub const MIN_ASSIGNMENT_REASON_CHARS: usize = 10;
pub const MAX_ASSIGNMENT_REASON_CHARS: usize = 500;

fn reason_location(patient: Uuid, user: Uuid) -> FieldLocation<'static> {
    // Bound to the pair: a reason copied onto another assignment does not open.
    FieldLocation::new(
        "patient_assignments",
        "reason",
        Uuid::new_v5(&patient, user.as_bytes()),
    )
}

/// At least the minimum once trimmed, at most the maximum as sent (as the schema counts).
fn check_reason(reason: &str) -> Result<&str, RbacError> {
    let sent = reason.chars().count();
    let reason = reason.trim();
    let chars = if sent > MAX_ASSIGNMENT_REASON_CHARS {
        sent
    } else {
        reason.chars().count()
    };
    let printable = !reason.chars().any(|c| c.is_control());
    if printable && (MIN_ASSIGNMENT_REASON_CHARS..=MAX_ASSIGNMENT_REASON_CHARS).contains(&chars) {
        Ok(reason)
    } else {
        Err(RbacError::InvalidAssignmentReason)
    }
}

pub async fn patient_exists(db: impl PgExecutor<'_>, patient: Uuid) -> Result<bool, RbacError> {
    Ok(sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM patients WHERE id = $1) AS \"v!\"",
        patient
    )
    .fetch_one(db)
    .await?)
}

impl Rbac {
    /// The members of a patient's care team, by username.
    pub async fn members(&self, patient: Uuid) -> Result<Vec<Member>, RbacError> {
        if !patient_exists(&self.db, patient).await? {
            return Err(RbacError::NotFound);
        }
        let rows: Vec<MemberRow> = sqlx::query_as!(MemberRow, "SELECT u.id AS user_id, u.username, u.display_name, pa.assigned_by, pa.assigned_at, pa.reason AS \"reason: Encrypted<String>\" \
             FROM patient_assignments pa JOIN users u ON u.id = pa.user_id \
             WHERE pa.patient_id = $1 ORDER BY u.username", patient)
        .fetch_all(&self.db)
        .await?;
        let mut members = Vec::with_capacity(rows.len());
        for row in rows {
            let reason = match &row.reason {
                Some(sealed) => Some(
                    self.keyring
                        .open(&reason_location(patient, row.user_id), sealed)
                        .await?,
                ),
                None => None,
            };
            members.push(Member {
                user_id: row.user_id,
                username: row.username,
                display_name: row.display_name,
                assigned_by: row.assigned_by,
                assigned_at: row.assigned_at,
                reason,
            });
        }
        Ok(members)
    }

    /// Puts an active user on a patient's care team, in the caller's transaction, for a stated
    /// reason. Nobody assigns themselves: break-the-glass, recorded and reviewed, is the only
    /// way to reach a patient one was not given. `Ok(None)` if they already were on the team.
    pub async fn assign(
        &self,
        tx: &mut PgConnection,
        patient: Uuid,
        user: UserId,
        by: UserId,
        reason: &str,
    ) -> Result<Option<Assignment>, RbacError> {
        if user == by {
            return Err(RbacError::SelfAssignment);
        }
        let reason = check_reason(reason)?;
        let sealed = self
            .keyring
            .seal(
                Owner::Purpose(Purpose::Field),
                &reason_location(patient, user.0),
                &reason.to_owned(),
            )
            .await?;
        if !patient_exists(&mut *tx, patient).await? {
            return Err(RbacError::NotFound);
        }
        let active = clinicd_identity::users::is_active(&mut *tx, user).await?;
        if active != Some(true) {
            return Err(RbacError::UnknownUser);
        }
        let inserted = sqlx::query!("INSERT INTO patient_assignments (patient_id, user_id, assigned_by, reason) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING", patient, user.0, by.0, sealed as _)
        .execute(&mut *tx)
        .await?;
        Ok((inserted.rows_affected() == 1).then(|| Assignment {
            patient_id: patient,
            user_id: user.0,
            assigned_by: Some(by.0),
            reason: Some(reason.to_owned()),
        }))
    }

    /// Takes a user off a patient's care team, in the caller's transaction; returns the
    /// assignment that ended (`None` if they were not on it).
    pub async fn unassign(
        &self,
        tx: &mut PgConnection,
        patient: Uuid,
        user: UserId,
    ) -> Result<Option<Assignment>, RbacError> {
        if !patient_exists(&mut *tx, patient).await? {
            return Err(RbacError::NotFound);
        }
        let removed = sqlx::query!(
            r#"DELETE FROM patient_assignments WHERE patient_id = $1 AND user_id = $2
               RETURNING assigned_by, reason AS "reason: Encrypted<String>""#,
            patient,
            user.0
        )
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| (row.assigned_by, row.reason));
        let Some((assigned_by, sealed)) = removed else {
            return Ok(None);
        };
        let reason = match sealed {
            Some(sealed) => Some(
                self.keyring
                    .open(&reason_location(patient, user.0), &sealed)
                    .await?,
            ),
            None => None,
        };
        Ok(Some(Assignment {
            patient_id: patient,
            user_id: user.0,
            assigned_by,
            reason,
        }))
    }
}

/// Puts the registrant of a patient on the patient's team, in the registration's transaction:
/// the one assignment that names no reason and needs no other person.
pub async fn assign_registrant(
    tx: &mut sqlx::PgConnection,
    patient: Uuid,
    user: UserId,
) -> Result<(), RbacError> {
    sqlx::query!(
        "INSERT INTO patient_assignments (patient_id, user_id, assigned_by) VALUES ($1, $2, $2) \
         ON CONFLICT DO NOTHING",
        patient,
        user.0
    )
    .execute(tx)
    .await?;
    Ok(())
}

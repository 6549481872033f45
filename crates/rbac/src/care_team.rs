//! Care teams: which users may reach which patients. Everyone who touches clinical data is
//! held to them (an Admin holds no clinical permission at all); a user outside the team gets
//! the same answer as for a patient that does not exist. Break-the-glass grants are the one
//! way around, and each is recorded and reviewed.

use chrono::{DateTime, Utc};
use clinicd_identity::users::UserId;
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::error::RbacError;

/// How a user reaches a patient, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    CareTeam,
    /// Through an unexpired break-the-glass grant.
    BreakGlass {
        until: DateTime<Utc>,
    },
    None,
}

impl Reach {
    pub fn allowed(self) -> bool {
        !matches!(self, Reach::None)
    }
}

/// One query: team membership, else the latest unexpired emergency grant.
pub async fn reach(
    db: impl PgExecutor<'_>,
    user: UserId,
    patient: Uuid,
    now: DateTime<Utc>,
) -> Result<Reach, RbacError> {
    let (team, until): (bool, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM patient_assignments WHERE patient_id = $2 AND user_id = $1), \
                (SELECT max(expires_at) FROM break_glass_grants \
                  WHERE patient_id = $2 AND user_id = $1 AND expires_at > $3)",
    )
    .bind(user.0)
    .bind(patient)
    .bind(now)
    .fetch_one(db)
    .await?;
    Ok(match (team, until) {
        (true, _) => Reach::CareTeam,
        (false, Some(until)) => Reach::BreakGlass { until },
        (false, None) => Reach::None,
    })
}

/// A SQL condition that holds for the patients `user` can reach, for list and search queries:
/// `patient` is the patient-id expression, `user` and `now` the placeholders of the caller's id
/// and the current time (for example `reachable("p.id", "$1", "$2")`).
pub fn reachable(patient: &str, user: &str, now: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM patient_assignments pa WHERE pa.patient_id = {patient} AND pa.user_id = {user}) \
          OR EXISTS (SELECT 1 FROM break_glass_grants bg WHERE bg.patient_id = {patient} AND bg.user_id = {user} \
                     AND bg.expires_at > {now}))"
    )
}

/// A member of a patient's care team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Member {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub assigned_by: Option<Uuid>,
    pub assigned_at: DateTime<Utc>,
}

pub async fn patient_exists(db: impl PgExecutor<'_>, patient: Uuid) -> Result<bool, RbacError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM patients WHERE id = $1)")
            .bind(patient)
            .fetch_one(db)
            .await?,
    )
}

pub async fn members(db: &PgPool, patient: Uuid) -> Result<Vec<Member>, RbacError> {
    if !patient_exists(db, patient).await? {
        return Err(RbacError::NotFound);
    }
    Ok(sqlx::query_as(
        "SELECT u.id AS user_id, u.username, u.display_name, pa.assigned_by, pa.assigned_at \
         FROM patient_assignments pa JOIN users u ON u.id = pa.user_id \
         WHERE pa.patient_id = $1 ORDER BY u.username",
    )
    .bind(patient)
    .fetch_all(db)
    .await?)
}

/// Puts an active user on a patient's care team; `Ok(false)` if they already were.
pub async fn assign(
    db: &PgPool,
    patient: Uuid,
    user: UserId,
    by: UserId,
) -> Result<bool, RbacError> {
    let mut tx = db.begin().await?;
    if !patient_exists(&mut *tx, patient).await? {
        return Err(RbacError::NotFound);
    }
    let active: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND status = 'active')",
    )
    .bind(user.0)
    .fetch_one(&mut *tx)
    .await?;
    if !active {
        return Err(RbacError::UnknownUser);
    }
    let inserted = sqlx::query(
        "INSERT INTO patient_assignments (patient_id, user_id, assigned_by) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(patient)
    .bind(user.0)
    .bind(by.0)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(inserted.rows_affected() == 1)
}

/// Puts `user` on the team in the caller's transaction (the registering user joins the team of
/// the patient they register, in the same transaction).
pub async fn assign_in(
    tx: &mut sqlx::PgConnection,
    patient: Uuid,
    user: UserId,
    by: UserId,
) -> Result<(), RbacError> {
    sqlx::query(
        "INSERT INTO patient_assignments (patient_id, user_id, assigned_by) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(patient)
    .bind(user.0)
    .bind(by.0)
    .execute(tx)
    .await?;
    Ok(())
}

/// Takes a user off a patient's care team; `Ok(false)` if they were not on it.
pub async fn unassign(db: &PgPool, patient: Uuid, user: UserId) -> Result<bool, RbacError> {
    if !patient_exists(db, patient).await? {
        return Err(RbacError::NotFound);
    }
    let deleted =
        sqlx::query("DELETE FROM patient_assignments WHERE patient_id = $1 AND user_id = $2")
            .bind(patient)
            .bind(user.0)
            .execute(db)
            .await?;
    Ok(deleted.rows_affected() == 1)
}

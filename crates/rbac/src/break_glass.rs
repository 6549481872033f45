//! Break-the-glass: emergency access to a patient outside one's care team (HIPAA's emergency
//! access procedure). A grant needs a written reason, lasts a configured time, raises a
//! security event (forwarded into the audit trail with the grant id), and waits in a review
//! list until someone other than its holder has looked at it. The reason may describe the
//! patient, so it is stored only as a field ciphertext.

use chrono::{DateTime, Utc};
use clinicd_crypto::{FieldLocation, Owner, Purpose};
use clinicd_identity::sessions::{ClientInfo, SecurityEvent, record_event};
use clinicd_identity::users::UserId;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Rbac;
use crate::care_team::patient_exists;
use crate::error::RbacError;

pub const MIN_REASON_CHARS: usize = 20;
pub const MAX_REASON_CHARS: usize = 1000;

fn reason_location(id: Uuid) -> FieldLocation<'static> {
    FieldLocation::new("break_glass_grants", "reason", id)
}

/// A grant as its holder sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A grant as a reviewer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantReview {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub patient_id: Uuid,
    pub reason: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub active: bool,
    pub reviewed_by: Option<Uuid>,
    pub reviewed_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: Uuid,
    user_id: Uuid,
    username: String,
    patient_id: Uuid,
    reason: Vec<u8>,
    granted_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    reviewed_by: Option<Uuid>,
    reviewed_at: Option<DateTime<Utc>>,
}

/// At least the minimum once trimmed, at most the maximum as sent (as the schema counts).
fn check_reason(reason: &str) -> Result<&str, RbacError> {
    let sent = reason.chars().count();
    let reason = reason.trim();
    let chars = if sent > MAX_REASON_CHARS {
        sent
    } else {
        reason.chars().count()
    };
    if (MIN_REASON_CHARS..=MAX_REASON_CHARS).contains(&chars) {
        Ok(reason)
    } else {
        Err(RbacError::InvalidReason)
    }
}

impl Rbac {
    /// Grants `user` access to `patient` for the configured time, in the caller's transaction.
    /// `NotFound` if there is no such patient.
    pub async fn break_glass(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        session: Option<Uuid>,
        patient: Uuid,
        reason: &str,
        client: &ClientInfo,
    ) -> Result<Grant, RbacError> {
        let reason = check_reason(reason)?;
        let id = Uuid::now_v7();
        let sealed = self
            .keyring
            .encrypt(
                Owner::Purpose(Purpose::Field),
                &reason_location(id),
                reason.as_bytes(),
            )
            .await?;
        let now = self.clock.now();
        let expires_at = now + self.break_glass_lifetime;
        if !patient_exists(&mut *tx, patient).await? {
            return Err(RbacError::NotFound);
        }
        sqlx::query!("INSERT INTO break_glass_grants (id, user_id, patient_id, reason, granted_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)", id, user.0, patient, &sealed, now, expires_at)
        .execute(&mut *tx)
        .await?;
        // The event names the grant, not the patient or the reason: reviewers open the grant.
        let grant_ref = format!("grant {id}");
        let event = SecurityEvent {
            kind: "break_glass",
            user: Some(user.0),
            session,
            reason: Some(&grant_ref),
            actor: None,
        };
        record_event(tx, now, event, client).await?;
        tracing::warn!(grant = %id, user = %user.0, "break-the-glass access granted");
        Ok(Grant {
            id,
            patient_id: patient,
            granted_at: now,
            expires_at,
        })
    }

    /// Grants for review, newest first; `pending_only` leaves out reviewed ones.
    pub async fn break_glass_reviews(
        &self,
        pending_only: bool,
        limit: i64,
    ) -> Result<Vec<GrantReview>, RbacError> {
        let rows: Vec<GrantRow> = sqlx::query_as!(GrantRow, "SELECT g.id, g.user_id, u.username, g.patient_id, g.reason, g.granted_at, g.expires_at, \
                    g.reviewed_by, g.reviewed_at \
             FROM break_glass_grants g JOIN users u ON u.id = g.user_id \
             WHERE NOT $1 OR g.reviewed_at IS NULL ORDER BY g.granted_at DESC, g.id DESC LIMIT $2", pending_only, limit)
        .fetch_all(&self.db)
        .await?;
        let now = self.clock.now();
        let mut reviews = Vec::with_capacity(rows.len());
        for row in rows {
            let reason = self
                .keyring
                .decrypt(&reason_location(row.id), &row.reason)
                .await?;
            reviews.push(GrantReview {
                id: row.id,
                user_id: row.user_id,
                username: row.username,
                patient_id: row.patient_id,
                reason: String::from_utf8_lossy(&reason).into_owned(),
                granted_at: row.granted_at,
                expires_at: row.expires_at,
                active: row.expires_at > now,
                reviewed_by: row.reviewed_by,
                reviewed_at: row.reviewed_at,
            });
        }
        Ok(reviews)
    }

    /// Marks a grant reviewed, in the caller's transaction. No one reviews their own; a second
    /// review changes nothing.
    pub async fn review_break_glass(
        &self,
        tx: &mut PgConnection,
        grant: Uuid,
        reviewer: UserId,
    ) -> Result<(), RbacError> {
        let holder: Option<Uuid> = sqlx::query_scalar!(
            "SELECT user_id FROM break_glass_grants WHERE id = $1 FOR UPDATE",
            grant
        )
        .fetch_optional(&mut *tx)
        .await?;
        match holder {
            None => Err(RbacError::NotFound),
            Some(holder) if holder == reviewer.0 => Err(RbacError::OwnReview),
            Some(_) => {
                sqlx::query!(
                    "UPDATE break_glass_grants SET reviewed_by = $2, reviewed_at = $3 \
                     WHERE id = $1 AND reviewed_at IS NULL",
                    grant,
                    reviewer.0,
                    self.clock.now()
                )
                .execute(&mut *tx)
                .await?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_trimmed_and_bounded() {
        assert!(check_reason("too short").is_err());
        assert!(check_reason("   nineteen chars!!   ").is_err());
        assert_eq!(
            check_reason("  unconscious in ER, no team  ").ok(),
            Some("unconscious in ER, no team")
        );
        assert!(check_reason(&"x".repeat(1001)).is_err());
    }
}

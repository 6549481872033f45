//! Appointments: who sees whom, when. A provider is never booked twice at once: the database
//! refuses overlapping live bookings (an exclusion constraint), so two front desks booking the
//! same slot at the same moment cannot both succeed. Status moves forward only.

use chrono::{DateTime, Duration, Utc};
use clinicd_identity::users::UserId;
use clinicd_rbac::Permission;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::patient_store::{StoreError, Viewer};
use crate::types::{FieldError, refuse};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    NewPatient,
    FollowUp,
    Annual,
    Procedure,
    Telehealth,
    Other,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::NewPatient,
        Kind::FollowUp,
        Kind::Annual,
        Kind::Procedure,
        Kind::Telehealth,
        Kind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewPatient => "new_patient",
            Self::FollowUp => "follow_up",
            Self::Annual => "annual",
            Self::Procedure => "procedure",
            Self::Telehealth => "telehealth",
            Self::Other => "other",
        }
    }

    pub fn parse(field: &'static str, value: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == value)
            .map_or_else(
                || {
                    refuse(
                        field,
                        "must be new_patient, follow_up, annual, procedure, telehealth or other",
                    )
                },
                Ok,
            )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Booked,
    Arrived,
    Completed,
    Cancelled,
    NoShow,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Booked,
        Status::Arrived,
        Status::Completed,
        Status::Cancelled,
        Status::NoShow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Booked => "booked",
            Self::Arrived => "arrived",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::NoShow => "no_show",
        }
    }

    pub fn parse(field: &'static str, value: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .map_or_else(
                || {
                    refuse(
                        field,
                        "must be booked, arrived, completed, cancelled or no_show",
                    )
                },
                Ok,
            )
    }

    /// Whether a booking may move from `self` to `next` (staying put is allowed).
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        self == next
            || matches!(
                (self, next),
                (Booked, Arrived | Cancelled | NoShow) | (Arrived, Completed | Cancelled)
            )
    }
}

/// How far from now a booking may start: back-dated by at most `past_days` (a walk-in recorded
/// later), ahead by at most `future_days`. Dates outside it are mistakes or probes, and far
/// enough out they break date arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookingWindow {
    pub past_days: u32,
    pub future_days: u32,
}

impl Default for BookingWindow {
    fn default() -> Self {
        Self {
            past_days: 365,
            future_days: 3 * 366,
        }
    }
}

impl BookingWindow {
    /// Refuses a slot that starts outside the window around `now`.
    pub fn check(self, slot: Slot, now: DateTime<Utc>) -> Result<Slot, FieldError> {
        let earliest = now - Duration::days(i64::from(self.past_days));
        let latest = now + Duration::days(i64::from(self.future_days));
        if slot.starts_at < earliest || slot.starts_at > latest {
            return refuse(
                "starts_at",
                "is outside the booking window (CLINICD_BOOKING_PAST_DAYS, CLINICD_BOOKING_FUTURE_DAYS)",
            );
        }
        Ok(slot)
    }
}

/// A time slot: starts before it ends, at most 12 hours long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl Slot {
    pub fn new(starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Result<Self, FieldError> {
        if ends_at <= starts_at {
            return refuse("ends_at", "must be after starts_at");
        }
        if ends_at - starts_at > Duration::hours(12) {
            return refuse("ends_at", "must be at most 12 hours after starts_at");
        }
        Ok(Self { starts_at, ends_at })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Appointment {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub provider_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub kind: String,
    pub status: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error("the provider is already booked at that time")]
    Overlap,
    #[error("no such active clinician to book")]
    UnknownProvider,
    /// The patient is not one the booker may reach (or does not exist).
    #[error("the patient is not in the booker's care")]
    PatientOutOfReach,
    #[error("a booking cannot go from {from} to {to}")]
    Transition { from: String, to: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for BookingError {
    fn from(error: sqlx::Error) -> Self {
        match error.as_database_error().and_then(|e| e.code()) {
            Some(code) if code == "23P01" => Self::Overlap,
            _ => Self::Store(StoreError::Database(error)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppointmentStore {
    db: PgPool,
}

/// A change to a booking: what is `Some` changes.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub slot: Option<Slot>,
    pub kind: Option<Kind>,
    pub status: Option<Status>,
}

impl AppointmentStore {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Books `provider` for `patient` in the caller's transaction.
    pub async fn book(
        &self,
        tx: &mut PgConnection,
        patient: Uuid,
        provider: Uuid,
        slot: Slot,
        kind: Kind,
        booker: Viewer,
    ) -> Result<Appointment, BookingError> {
        // A booking is for a patient the booker may reach: the care-team rule, first.
        let reach =
            clinicd_rbac::care_team::reach(&mut *tx, UserId(booker.user), patient, booker.now)
                .await
                .map_err(StoreError::from)?;
        if !reach.allowed() {
            return Err(BookingError::PatientOutOfReach);
        }
        // An erased patient is a tombstone: nothing new is recorded for them (410).
        let erased = sqlx::query_scalar!(
            r#"SELECT erased_at IS NOT NULL AS "erased!" FROM patients WHERE id = $1"#,
            patient
        )
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(false);
        if erased {
            return Err(StoreError::Crypto(clinicd_crypto::CryptoError::KeyDestroyed).into());
        }
        let active =
            clinicd_identity::users::is_active(&mut *tx, UserId(provider)).await? == Some(true);
        // A clinician is someone who writes clinical notes: a reader or the front desk is not
        // booked to see patients.
        let clinician = clinicd_rbac::grants::load(&mut *tx, UserId(provider))
            .await?
            .permissions
            .contains(Permission::NoteWrite);
        if !active || !clinician {
            return Err(BookingError::UnknownProvider);
        }
        Ok(sqlx::query_as!(Appointment, "INSERT INTO appointments AS a (id, patient_id, provider_id, starts_at, ends_at, kind, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING a.id, a.patient_id, a.provider_id, a.starts_at, a.ends_at, a.kind, a.status, a.version, a.created_at, a.updated_at", Uuid::now_v7(), patient, provider, slot.starts_at, slot.ends_at, kind.as_str(), booker.user)
        .fetch_one(tx)
        .await?)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Appointment>, StoreError> {
        Ok(sqlx::query_as!(Appointment, "SELECT a.id, a.patient_id, a.provider_id, a.starts_at, a.ends_at, a.kind, a.status, a.version, a.created_at, a.updated_at FROM appointments a WHERE a.id = $1", id)
        .fetch_optional(&self.db)
        .await?)
    }

    /// Applies a change if the booking is still at `expected_version`, in the caller's
    /// transaction.
    pub async fn change(
        &self,
        tx: &mut PgConnection,
        current: &Appointment,
        expected_version: i32,
        change: &Change,
    ) -> Result<Appointment, BookingError> {
        if current.version != expected_version {
            return Err(StoreError::VersionMismatch(current.version).into());
        }
        if let Some(next) = change.status {
            let from = Status::parse("status", &current.status).map_err(|_| StoreError::Corrupt)?;
            if !from.can_become(next) {
                return Err(BookingError::Transition {
                    from: from.as_str().to_owned(),
                    to: next.as_str().to_owned(),
                });
            }
        }
        let updated: Option<Appointment> = sqlx::query_as!(Appointment, "UPDATE appointments AS a SET starts_at = coalesce($3, starts_at), ends_at = coalesce($4, ends_at), \
               kind = coalesce($5, kind), status = coalesce($6, status), version = version + 1, updated_at = now() \
             WHERE a.id = $1 AND a.version = $2 RETURNING a.id, a.patient_id, a.provider_id, a.starts_at, a.ends_at, a.kind, a.status, a.version, a.created_at, a.updated_at", current.id, expected_version, change.slot.map(|s| s.starts_at), change.slot.map(|s| s.ends_at), change.kind.map(Kind::as_str), change.status.map(Status::as_str))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(appointment) = updated {
            return Ok(appointment);
        }
        let version: Option<i32> =
            sqlx::query_scalar!("SELECT version FROM appointments WHERE id = $1", current.id)
                .fetch_optional(tx)
                .await?;
        Err(version
            .map_or(StoreError::NotFound, StoreError::VersionMismatch)
            .into())
    }

    /// A patient's bookings, by start.
    pub async fn for_patient(&self, patient: Uuid) -> Result<Vec<Appointment>, StoreError> {
        Ok(sqlx::query_as!(Appointment, "SELECT a.id, a.patient_id, a.provider_id, a.starts_at, a.ends_at, a.kind, a.status, a.version, a.created_at, a.updated_at FROM appointments a WHERE a.patient_id = $1 ORDER BY a.starts_at, a.id", patient)
        .fetch_all(&self.db)
        .await?)
    }

    /// A patient's bookings if `viewer` may reach the patient (`None` otherwise, as for a
    /// patient that does not exist).
    pub async fn for_patient_in_reach(
        &self,
        patient: Uuid,
        viewer: Viewer,
    ) -> Result<Option<Vec<Appointment>>, StoreError> {
        let reach =
            clinicd_rbac::care_team::reach(&self.db, UserId(viewer.user), patient, viewer.now)
                .await?;
        if reach.allowed() {
            Ok(Some(self.for_patient(patient).await?))
        } else {
            Ok(None)
        }
    }

    /// A provider's bookings starting in `[from, to)`, of patients `viewer` may reach.
    pub async fn for_provider(
        &self,
        provider: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        viewer: Viewer,
    ) -> Result<Vec<Appointment>, StoreError> {
        Ok(sqlx::query_as!(Appointment, "SELECT a.id, a.patient_id, a.provider_id, a.starts_at, a.ends_at, a.kind, a.status, a.version, a.created_at, a.updated_at FROM appointments a WHERE a.provider_id = $1 AND a.starts_at >= $2 \
             AND a.starts_at < $3 AND patient_reach($4, a.patient_id, $5) IS NOT NULL \
             ORDER BY a.starts_at, a.id", provider, from, to, viewer.user, viewer.now)
        .fetch_all(&self.db)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_moves_forward_only() {
        use Status::*;
        assert!(Booked.can_become(Arrived));
        assert!(Arrived.can_become(Completed));
        assert!(Booked.can_become(NoShow));
        assert!(!Completed.can_become(Booked));
        assert!(!Cancelled.can_become(Arrived));
        assert!(
            !Booked.can_become(Completed),
            "a visit is arrived before completed"
        );
    }

    #[test]
    fn slots() {
        let t = Utc::now();
        assert!(Slot::new(t, t).is_err());
        assert!(Slot::new(t, t - Duration::minutes(1)).is_err());
        assert!(Slot::new(t, t + Duration::hours(13)).is_err());
        assert!(Slot::new(t, t + Duration::minutes(30)).is_ok());
    }
}

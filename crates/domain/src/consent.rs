//! Consents a patient has signed. Today one kind: a 42 CFR Part 2 consent to disclose
//! substance-use treatment records (notes coded `ETH`) to a named recipient, for a purpose,
//! until a date (§2.31 asks for each). An export to that recipient for that purpose carries the
//! patient's substance-use notes while the consent is in force; revoking it stops that at once.
//!
//! The terms are one field ciphertext under the patient's subject key: a row reading "Part 2"
//! beside a patient id would itself disclose substance-use treatment.

use chrono::{DateTime, NaiveDate, Utc};
use clinicd_crypto::{FieldLocation, Keyring, Owner, SubjectId};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::export::Purpose;
use crate::patient_store::StoreError;
use crate::types::{FieldError, refuse};

/// What a consent allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentKind {
    /// Disclosure of substance-use treatment records under 42 CFR Part 2.
    Part2Disclosure,
}

/// A consent's terms, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub kind: ConsentKind,
    /// Who may receive the records, as an export names them (compared without case).
    pub recipient: String,
    pub purpose: Purpose,
    pub signed_on: NaiveDate,
    /// The last day the consent is in force.
    pub expires_on: NaiveDate,
}

impl Terms {
    /// Checks the dates against `today`: signed not in the future, expiring on or after the day
    /// it was signed and not already past (a consent recorded expired would allow nothing), at
    /// most ten years on. The patient's own access needs no consent, so `individual` is refused.
    pub fn validate(self, today: NaiveDate) -> Result<Self, FieldError> {
        if self.purpose == Purpose::Individual {
            return refuse(
                "purpose",
                "a patient's own access needs no consent: name an outside purpose",
            );
        }
        if self.signed_on > today {
            return refuse("signed_on", "is in the future");
        }
        if self.expires_on < self.signed_on || self.expires_on < today {
            return refuse(
                "expires_on",
                "must be on or after the day it was signed, and not past",
            );
        }
        if self.expires_on > today + chrono::Days::new(3653) {
            return refuse("expires_on", "is more than ten years away");
        }
        Ok(self)
    }
}

/// A recorded consent, its terms opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub terms: Terms,
    pub recorded_by: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub revoked_by: Option<Uuid>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Consent {
    /// Whether this consent lets substance-use records go to `recipient` for `purpose` on
    /// `today`: a Part 2 consent, not revoked, not expired, naming that recipient and purpose.
    pub fn permits_part2(&self, recipient: &str, purpose: Purpose, today: NaiveDate) -> bool {
        self.terms.kind == ConsentKind::Part2Disclosure
            && self.revoked_at.is_none()
            && self.terms.signed_on <= today
            && today <= self.terms.expires_on
            && self.terms.purpose == purpose
            && self.terms.recipient.trim().to_lowercase() == recipient.trim().to_lowercase()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("the consent is already revoked")]
    AlreadyRevoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ConsentError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(error))
    }
}

impl From<clinicd_crypto::CryptoError> for ConsentError {
    fn from(error: clinicd_crypto::CryptoError) -> Self {
        Self::Store(StoreError::Crypto(error))
    }
}

struct Row {
    id: Uuid,
    patient_id: Uuid,
    terms: Vec<u8>,
    recorded_by: Uuid,
    recorded_at: DateTime<Utc>,
    revoked_by: Option<Uuid>,
    revoked_at: Option<DateTime<Utc>>,
}

fn location(consent: Uuid) -> FieldLocation<'static> {
    FieldLocation::new("patient_consents", "terms", consent)
}

#[derive(Debug, Clone)]
pub struct ConsentStore {
    db: PgPool,
    keyring: std::sync::Arc<Keyring>,
}

impl ConsentStore {
    pub fn new(db: PgPool, keyring: std::sync::Arc<Keyring>) -> Self {
        Self { db, keyring }
    }

    /// Records a consent, in the caller's transaction (its audit event commits with it).
    pub async fn record(
        &self,
        tx: &mut PgConnection,
        patient: Uuid,
        terms: Terms,
        by: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Consent, ConsentError> {
        let id = Uuid::now_v7();
        let plain = serde_json::to_vec(&terms).map_err(|_| StoreError::Corrupt)?;
        let sealed = self
            .keyring
            .encrypt(Owner::Subject(SubjectId(patient)), &location(id), &plain)
            .await?;
        sqlx::query!(
            "INSERT INTO patient_consents (id, patient_id, terms, recorded_by, recorded_at) \
             VALUES ($1, $2, $3, $4, $5)",
            id,
            patient,
            &sealed,
            by,
            at
        )
        .execute(tx)
        .await?;
        Ok(Consent {
            id,
            patient_id: patient,
            terms,
            recorded_by: by,
            recorded_at: at,
            revoked_by: None,
            revoked_at: None,
        })
    }

    /// A patient's consents, oldest first, revoked ones included.
    pub async fn for_patient(&self, patient: Uuid) -> Result<Vec<Consent>, ConsentError> {
        let rows = sqlx::query_as!(
            Row,
            "SELECT id, patient_id, terms, recorded_by, recorded_at, revoked_by, revoked_at \
             FROM patient_consents WHERE patient_id = $1 ORDER BY recorded_at, id",
            patient
        )
        .fetch_all(&self.db)
        .await?;
        let mut consents = Vec::with_capacity(rows.len());
        for row in rows {
            consents.push(self.open(row).await?);
        }
        Ok(consents)
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Consent>, ConsentError> {
        let row = sqlx::query_as!(
            Row,
            "SELECT id, patient_id, terms, recorded_by, recorded_at, revoked_by, revoked_at \
             FROM patient_consents WHERE id = $1",
            id
        )
        .fetch_optional(&self.db)
        .await?;
        match row {
            Some(row) => Ok(Some(self.open(row).await?)),
            None => Ok(None),
        }
    }

    /// Revokes a consent, in the caller's transaction.
    pub async fn revoke(
        &self,
        tx: &mut PgConnection,
        consent: &Consent,
        by: Uuid,
        at: DateTime<Utc>,
    ) -> Result<Consent, ConsentError> {
        let updated = sqlx::query!(
            "UPDATE patient_consents SET revoked_by = $2, revoked_at = $3 \
             WHERE id = $1 AND revoked_at IS NULL",
            consent.id,
            by,
            at
        )
        .execute(tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(ConsentError::AlreadyRevoked);
        }
        Ok(Consent {
            revoked_by: Some(by),
            revoked_at: Some(at),
            ..consent.clone()
        })
    }

    async fn open(&self, row: Row) -> Result<Consent, ConsentError> {
        let plain = self.keyring.decrypt(&location(row.id), &row.terms).await?;
        let terms: Terms = serde_json::from_slice(&plain).map_err(|_| StoreError::Corrupt)?;
        Ok(Consent {
            id: row.id,
            patient_id: row.patient_id,
            terms,
            recorded_by: row.recorded_by,
            recorded_at: row.recorded_at,
            revoked_by: row.revoked_by,
            revoked_at: row.revoked_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn consent(revoked: bool) -> Consent {
        Consent {
            id: Uuid::now_v7(),
            patient_id: Uuid::now_v7(),
            terms: Terms {
                kind: ConsentKind::Part2Disclosure,
                recipient: "Riverside Recovery Clinic".into(),
                purpose: Purpose::Treatment,
                signed_on: day("2026-01-10"),
                expires_on: day("2026-12-31"),
            },
            recorded_by: Uuid::now_v7(),
            recorded_at: Utc::now(),
            revoked_by: revoked.then(Uuid::now_v7),
            revoked_at: revoked.then(Utc::now),
        }
    }

    #[test]
    fn a_consent_permits_its_recipient_and_purpose_while_in_force() {
        let c = consent(false);
        let today = day("2026-06-01");
        assert!(c.permits_part2(" riverside recovery clinic ", Purpose::Treatment, today));
        assert!(c.permits_part2(
            "Riverside Recovery Clinic",
            Purpose::Treatment,
            day("2026-12-31")
        ));
        assert!(!c.permits_part2(
            "Riverside Recovery Clinic",
            Purpose::Treatment,
            day("2027-01-01")
        ));
        assert!(!c.permits_part2(
            "Riverside Recovery Clinic",
            Purpose::Treatment,
            day("2026-01-09")
        ));
        assert!(!c.permits_part2("Other Clinic", Purpose::Treatment, today));
        assert!(!c.permits_part2("Riverside Recovery Clinic", Purpose::Payment, today));
        assert!(!consent(true).permits_part2(
            "Riverside Recovery Clinic",
            Purpose::Treatment,
            today
        ));
    }

    #[test]
    fn terms_are_checked_against_today() {
        let today = day("2026-06-01");
        let terms = consent(false).terms;
        assert!(terms.clone().validate(today).is_ok());
        let field = |t: Terms| t.validate(today).unwrap_err().field;
        assert_eq!(
            field(Terms {
                purpose: Purpose::Individual,
                ..terms.clone()
            }),
            "purpose"
        );
        assert_eq!(
            field(Terms {
                signed_on: day("2026-06-02"),
                ..terms.clone()
            }),
            "signed_on"
        );
        assert_eq!(
            field(Terms {
                expires_on: day("2026-05-31"),
                ..terms.clone()
            }),
            "expires_on"
        );
        assert_eq!(
            field(Terms {
                expires_on: day("2037-01-01"),
                ..terms
            }),
            "expires_on"
        );
    }
}

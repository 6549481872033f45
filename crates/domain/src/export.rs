//! A patient's whole record going out: for a right-of-access request (HIPAA §164.524) or
//! another disclosure the privacy office answers. The release names who receives the record
//! and why, both kept in the patient's accounting of disclosures (§164.528); the record is
//! gathered in one place so that every export holds the same parts.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::appointment::{Appointment, AppointmentStore};
use crate::note::{Note, NoteError, NoteStore};
use crate::patient::Patient;
use crate::types::FieldError;

/// Why a record goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// The patient's own right of access.
    Individual,
    Treatment,
    Payment,
    Operations,
    /// Required by law, a court order or a subpoena.
    Legal,
    PublicHealth,
    Research,
    Other,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Individual => "individual",
            Self::Treatment => "treatment",
            Self::Payment => "payment",
            Self::Operations => "operations",
            Self::Legal => "legal",
            Self::PublicHealth => "public_health",
            Self::Research => "research",
            Self::Other => "other",
        }
    }
}

/// Who receives a record, trimmed: 1 to 200 characters, none of them deceptive (controls,
/// bidirectional overrides), since the name is shown to the patient in their accounting.
pub fn recipient(raw: &str) -> Result<String, FieldError> {
    let recipient = raw.trim();
    let valid = (1..=200).contains(&recipient.chars().count())
        && !recipient.chars().any(clinicd_identity::users::is_deceptive);
    if valid {
        Ok(recipient.to_owned())
    } else {
        Err(FieldError {
            field: "recipient",
            reason: "must be 1 to 200 characters without control or direction characters",
        })
    }
}

/// A patient's whole record: demographics, every booking, every note (amendments included,
/// newest encounter first) and the documents' metadata. `D` is the document listing, which the
/// files crate owns; the domain does not depend on it.
#[derive(Debug)]
pub struct PatientRecord<D> {
    pub patient: Patient,
    pub appointments: Vec<Appointment>,
    pub notes: Vec<Note>,
    pub documents: Vec<D>,
}

impl<D> PatientRecord<D> {
    /// Gathers the record of `patient`; `documents` lists its files.
    pub async fn gather<E>(
        appointments: &AppointmentStore,
        notes: &NoteStore,
        patient: Patient,
        documents: impl Future<Output = Result<Vec<D>, E>>,
    ) -> Result<Self, ExportError<E>> {
        let appointments = appointments
            .for_patient(patient.id)
            .await
            .map_err(NoteError::from)?;
        let notes = notes.for_patient(patient.id).await?;
        let documents = documents.await.map_err(ExportError::Documents)?;
        Ok(Self {
            patient,
            appointments,
            notes,
            documents,
        })
    }
}

/// Gathering failed: in the clinical records, or in the document listing.
#[derive(Debug, thiserror::Error)]
pub enum ExportError<E> {
    #[error(transparent)]
    Records(#[from] NoteError),
    #[error("listing the patient's documents failed")]
    Documents(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipient_is_trimmed_and_bounded() {
        assert_eq!(recipient("  Dr. Chen  ").ok().as_deref(), Some("Dr. Chen"));
        assert!(recipient("   ").is_err());
        assert!(recipient(&"x".repeat(201)).is_err());
        assert!(recipient(&"x".repeat(200)).is_ok());
        assert!(recipient("Eve\u{202e}lapsoh").is_err());
        assert!(recipient("line\nbreak").is_err());
    }

    #[test]
    fn purposes_read_as_snake_case() {
        let purpose: Purpose = serde_json::from_str("\"public_health\"").unwrap();
        assert_eq!(purpose.as_str(), "public_health");
    }
}

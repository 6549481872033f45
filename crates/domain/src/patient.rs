//! Patients: the validated record, and its encrypted storage.
//!
//! Every direct identifier is a field ciphertext under the patient's own subject key (so
//! destroying that key shreds the record), bound to its table, column and row. Lookups without
//! the MRN go through blind indexes: SSN, date of birth, family name, and each token of both
//! names (in `patient_name_tokens`). Indexes are truncated (docs/field-encryption.md), so every
//! search decrypts its candidates and keeps only exact matches.

use std::fmt;

use chrono::{DateTime, Utc};
use clinicd_crypto::{BlindIndexSpec, FieldLocation, Keyring, Normalizer, Owner, SubjectId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::{DateOfBirth, EmailAddress, PatientStatus, PersonName, Phone, Sex, Ssn};

pub const TABLE: &str = "patients";

pub const SSN_INDEX: BlindIndexSpec = BlindIndexSpec {
    table: TABLE,
    column: "ssn",
    bits: 15,
    normalizer: Normalizer::SsnDigits,
};
pub const DOB_INDEX: BlindIndexSpec = BlindIndexSpec {
    table: TABLE,
    column: "date_of_birth",
    bits: 12,
    normalizer: Normalizer::IsoDate,
};
pub const FAMILY_NAME_INDEX: BlindIndexSpec = BlindIndexSpec {
    table: TABLE,
    column: "family_name",
    bits: 15,
    normalizer: Normalizer::NameToken,
};
pub const NAME_TOKEN_INDEX: BlindIndexSpec = BlindIndexSpec {
    table: "patient_name_tokens",
    column: "token",
    bits: 15,
    normalizer: Normalizer::NameToken,
};

/// The keyed hash of a source system's record id, for idempotent imports: 64 bits, the most
/// the index allows, so ids do not collide (about 3 in 10^8 at a million patients); the index
/// is unique, so a collision would skip a row, and the import report shows it.
pub const IMPORT_KEY: BlindIndexSpec = BlindIndexSpec {
    table: TABLE,
    column: "import_key",
    bits: 64,
    normalizer: Normalizer::Exact,
};

/// The encrypted columns of `patients` (for re-keying).
pub const ENCRYPTED_COLUMNS: &[&str] = &[
    "given_name",
    "family_name",
    "date_of_birth",
    "ssn",
    "address",
    "phone",
    "email",
    "insurance_primary",
    "insurance_secondary",
    "emergency_contact",
];

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insurance {
    pub payer: String,
    pub member_number: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyContact {
    pub name: String,
    pub relationship: String,
    pub phone: Phone,
}

// Debug never shows these values: they are PHI.
macro_rules! redacted_debug {
    ($($t:ident),*) => {
        $(impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($t), "(..)"))
            }
        })*
    };
}
redacted_debug!(Address, Insurance, EmergencyContact);

/// What a patient record holds, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct PatientData {
    pub given_name: PersonName,
    pub family_name: PersonName,
    pub date_of_birth: DateOfBirth,
    pub sex: Sex,
    pub ssn: Option<Ssn>,
    pub address: Option<Address>,
    pub phone: Option<Phone>,
    pub email: Option<EmailAddress>,
    pub insurance_primary: Option<Insurance>,
    pub insurance_secondary: Option<Insurance>,
    pub emergency_contact: Option<EmergencyContact>,
    pub status: PatientStatus,
}

impl fmt::Debug for PatientData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientData").finish_non_exhaustive()
    }
}

/// A stored patient.
#[derive(Clone, PartialEq, Eq)]
pub struct Patient {
    pub id: Uuid,
    pub mrn: String,
    pub data: PatientData,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for Patient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patient")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// An MRN: 8 digits from a sequence and a Luhn check digit, so a mistyped MRN is caught
/// before it finds the wrong patient.
pub fn mrn(sequence: i64) -> String {
    let digits = format!("{sequence:08}");
    format!("{digits}{}", luhn_check_digit(&digits))
}

pub fn mrn_is_well_formed(value: &str) -> bool {
    value.len() == 9
        && value.bytes().all(|b| b.is_ascii_digit())
        && match (value.get(..8), value.get(8..)) {
            (Some(body), Some(check)) => luhn_check_digit(body).to_string() == check,
            _ => false,
        }
}

fn luhn_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

pub(crate) fn location(column: &'static str, patient: Uuid) -> FieldLocation<'static> {
    FieldLocation::new(TABLE, column, patient)
}

pub(crate) fn owner(patient: Uuid) -> Owner {
    Owner::Subject(SubjectId(patient))
}

/// Encrypts text for one column of one patient.
pub(crate) async fn seal(
    keyring: &Keyring,
    patient: Uuid,
    column: &'static str,
    plaintext: &str,
) -> Result<Vec<u8>, clinicd_crypto::CryptoError> {
    keyring
        .encrypt(
            owner(patient),
            &location(column, patient),
            plaintext.as_bytes(),
        )
        .await
}

pub(crate) async fn seal_json<T: Serialize>(
    keyring: &Keyring,
    patient: Uuid,
    column: &'static str,
    value: &Option<T>,
) -> Result<Option<Vec<u8>>, clinicd_crypto::CryptoError> {
    match value {
        None => Ok(None),
        Some(value) => {
            let text = serde_json::to_string(value)
                .map_err(|_| clinicd_crypto::CryptoError::InvalidPlaintext)?;
            Ok(Some(seal(keyring, patient, column, &text).await?))
        }
    }
}

pub(crate) async fn open(
    keyring: &Keyring,
    patient: Uuid,
    column: &'static str,
    ciphertext: &[u8],
) -> Result<String, clinicd_crypto::CryptoError> {
    let plain = keyring
        .decrypt(&location(column, patient), ciphertext)
        .await?;
    String::from_utf8(plain.to_vec()).map_err(|_| clinicd_crypto::CryptoError::InvalidPlaintext)
}

pub(crate) async fn open_json<T: for<'de> Deserialize<'de>>(
    keyring: &Keyring,
    patient: Uuid,
    column: &'static str,
    ciphertext: Option<&[u8]>,
) -> Result<Option<T>, clinicd_crypto::CryptoError> {
    match ciphertext {
        None => Ok(None),
        Some(bytes) => {
            let text = open(keyring, patient, column, bytes).await?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|_| clinicd_crypto::CryptoError::InvalidPlaintext)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrns_carry_a_luhn_check_digit() {
        let m = mrn(1);
        assert_eq!(m.len(), 9);
        assert!(mrn_is_well_formed(&m));
        assert_eq!(luhn_check_digit("7992739871"), 3, "the textbook example");
        let mut typo = m.clone().into_bytes();
        typo[7] = if typo[7] == b'9' { b'8' } else { typo[7] + 1 };
        assert!(!mrn_is_well_formed(&String::from_utf8(typo).unwrap()));
        assert!(!mrn_is_well_formed("12345678"));
    }
}

//! The clinical domain: patients, appointments and clinical notes.
//!
//! Owns: the domain types that cannot hold an invalid value (`Ssn`, `DateOfBirth`,
//! `PersonName`, `Phone`...), the rules between them (no overlapping bookings, signed notes are
//! immutable) and the SQL of the `patients`, `appointments`, `clinical_notes` and
//! `patient_consents` tables.
//!
//! Must not: import actix or know about HTTP; decide who may see what (the RBAC crate does; its
//! care-team condition is used verbatim in searches); hold key material or encrypt by hand (it
//! calls the crypto crate's field-encryption API).

pub mod appointment;
pub mod consent;
pub mod export;
pub mod label;
pub mod note;
pub mod patient;
pub mod patient_form;
pub mod patient_store;
pub mod read_connections;
pub mod types;

pub use appointment::{Appointment, AppointmentStore, BookingError};
pub use consent::{Consent, ConsentError, ConsentKind, ConsentStore, Terms};
pub use label::{Confidentiality, Label, Sensitivity};
pub use note::{Draft, Note, NoteError, NoteStore};
pub use patient::{Address, EmergencyContact, Insurance, Patient, PatientData};
pub use patient_store::{
    NameTokenIndex, NewPatient, PatientStore, Search, StoreError, Tombstoned, Viewer,
};
pub use types::FieldError;

/// Every field-encrypted column of the clinical tables, for `clinicd keys rekey`.
pub fn encrypted_columns() -> Vec<clinicd_crypto::EncryptedColumn> {
    let mut columns: Vec<clinicd_crypto::EncryptedColumn> = patient::ENCRYPTED_COLUMNS
        .iter()
        .map(|column| clinicd_crypto::EncryptedColumn {
            table: patient::TABLE,
            column,
        })
        .collect();
    columns.push(clinicd_crypto::EncryptedColumn {
        table: "clinical_notes",
        column: "body",
    });
    columns.push(clinicd_crypto::EncryptedColumn {
        table: "patient_consents",
        column: "terms",
    });
    columns
}

/// The blind indexes kept beside their encrypted column, for `clinicd keys reindex`. (The
/// name-token index, a row per token, is [`NameTokenIndex`].)
pub fn indexed_columns() -> Vec<clinicd_crypto::IndexedColumn> {
    [
        (patient::SSN_INDEX, "ssn_bidx", "ssn_bidx_version"),
        (
            patient::DOB_INDEX,
            "date_of_birth_bidx",
            "date_of_birth_bidx_version",
        ),
        (
            patient::FAMILY_NAME_INDEX,
            "family_name_bidx",
            "family_name_bidx_version",
        ),
    ]
    .into_iter()
    .map(
        |(spec, index_column, version_column)| clinicd_crypto::IndexedColumn {
            spec,
            index_column,
            version_column,
        },
    )
    .collect()
}

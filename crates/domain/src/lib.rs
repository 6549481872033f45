//! The clinical domain: patients, appointments and clinical notes.
//!
//! Owns: the domain types that cannot hold an invalid value (`Ssn`, `DateOfBirth`,
//! `PersonName`, `Phone`...), the rules between them (no overlapping bookings, signed notes are
//! immutable) and the SQL of the `patients`, `appointments` and `clinical_notes` tables.
//!
//! Must not: import actix or know about HTTP; decide who may see what (the RBAC crate does; its
//! care-team condition is used verbatim in searches); hold key material or encrypt by hand (it
//! calls the crypto crate's field-encryption API).

pub mod appointment;
pub mod note;
pub mod patient;
pub mod patient_store;
pub mod types;

pub use appointment::{Appointment, AppointmentStore, BookingError};
pub use note::{Note, NoteError, NoteStore};
pub use patient::{Address, EmergencyContact, Insurance, Patient, PatientData};
pub use patient_store::{NewPatient, PatientStore, Search, StoreError, Viewer};
pub use types::FieldError;

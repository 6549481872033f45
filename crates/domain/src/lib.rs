//! The clinical domain: patients, appointments and clinical notes.
//!
//! Owns: the domain types that cannot hold an invalid value (`Mrn`, `Ssn`, `DateOfBirth`,
//! `PersonName`, typed ids), the rules between them (no overlapping bookings, signed notes are
//! immutable) and the SQL of the `patients`, `appointments` and `notes` tables.
//!
//! Must not: import actix or know about HTTP; decide who may see what (the RBAC crate does);
//! hold key material or encrypt by hand (it calls the crypto crate's field-encryption API).
//!
//! Status: scaffold. The clinical-records issue fills it in.

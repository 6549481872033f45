//! Clinical records: patients, their care teams, bookings, notes and files. Every route here
//! that names a row takes a `Reachable*` extractor (`crate::extract::reachable`).

pub mod appointments;
pub mod care_team;
pub mod files;
pub mod notes;
pub mod patients;

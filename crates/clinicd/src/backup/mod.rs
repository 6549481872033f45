//! `clinicd backup`: backups on pgBackRest, with a manifest of what each one holds, copies
//! of local-disk files, verification, point-in-time restore and the restore drill
//! (docs/backup.md). Runs on the database host, as root or as the cluster's owner.

pub mod check;
pub mod cluster;
pub mod commands;
pub mod drill;
pub mod files_copy;
pub mod manifest;
pub mod metrics;
pub mod objects;
pub mod passphrase;
pub mod pgbackrest;
pub mod run;

pub use check::check;
pub use commands::Backup;

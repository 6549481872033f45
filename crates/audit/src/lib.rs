//! The audit trail: every PHI access and security event, hash-chained and HMAC-authenticated,
//! written fail-closed (a request whose event cannot be committed does not return PHI).
//!
//! Owns: the `audit_events` table and its partitions, `audit_heads`, the batching writer (for
//! reads), the recorder that commits a change together with its event, and chain verification.
//! It sits low in the graph (it needs only the crypto crate), so every crate that changes state
//! can append its event in its own transaction.
//!
//! Must not: import actix; store a PHI value in clear (before/after values are encrypted
//! through the crypto crate before they reach an event); offer any update or delete path.

pub mod chain;
pub mod checkpoint;
pub mod error;
pub mod event;
pub mod query;
pub mod record;
pub mod retention;
pub mod values;
pub mod verify;
pub mod writer;

pub use error::AuditError;
pub use event::{Action, NewEvent, Outcome};
pub use record::{Note, Recorder};
pub use verify::{VerifyReport, verify};
pub use writer::{AuditWriter, WriterSettings};

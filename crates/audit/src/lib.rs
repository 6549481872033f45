//! The audit trail: every PHI access and security event, hash-chained and HMAC-authenticated,
//! written fail-closed (a request whose event cannot be committed does not return PHI).
//!
//! Owns: the `audit_events` table and its partitions, the batching writer, chain
//! verification and checkpoints.
//!
//! Must not: import actix; store a PHI value in clear (before/after values are encrypted
//! through the crypto crate); offer any update or delete path.
//!
//! Status: scaffold. The audit issue fills it in.

//! The audit trail against real Postgres: appends, concurrency, tampering and availability.

#![allow(clippy::unwrap_used)]

mod chain;
mod partitions;

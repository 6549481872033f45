//! The audit trail against real Postgres: appends, concurrency, tampering and availability.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests: a panic is the report"
)]

mod chain;
mod partitions;

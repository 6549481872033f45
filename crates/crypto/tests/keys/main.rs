//! The key hierarchy against real Postgres, with the local provider and with KMS (moto).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests: a panic is the report"
)]

mod hierarchy;
mod kms;
mod reindex;
mod rekey;
mod rotation;
mod support;

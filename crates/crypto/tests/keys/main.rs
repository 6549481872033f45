//! The key hierarchy against real Postgres, with the local provider and with KMS (moto).

#![allow(clippy::unwrap_used)]

mod hierarchy;
mod kms;
mod reindex;
mod rekey;
mod rotation;
mod support;

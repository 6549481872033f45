//! The identity crate against real Postgres, with a manual clock: no test sleeps.

#![allow(clippy::unwrap_used)]

mod admin;
mod login;
mod mfa;
mod mfa_manage;
mod sessions;
mod support;
mod users;

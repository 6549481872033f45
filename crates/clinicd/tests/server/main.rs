//! The server: configuration, the command line, real TLS listeners and log redaction.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests: a panic is the report"
)]

mod admin_cli;
mod admin_commands;
mod audit_cli;
mod backup_cli;
mod cli;
mod config;
mod files_cli;
mod files_https;
mod import_cli;
mod jobs;
mod keys_cli;
mod lifecycle_cli;
mod listeners;
mod logs;
mod pool;
mod secops;
mod support;

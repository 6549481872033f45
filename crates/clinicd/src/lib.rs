//! The clinicd server: typed configuration, TLS, telemetry, start-up and the command line.
//! It composes the concern crates into one actix-web server.
//!
//! Owns: process start-up and the wiring between crates.
//!
//! Must not: hold business rules, SQL or HTTP handlers (those live in the concern crates and
//! the API crate).

/// mimalloc instead of the system allocator: a request allocates many small short-lived
/// buffers (headers, rows, field plaintexts, JSON), and glibc's malloc and free took about a
/// tenth of the server's CPU on the read path (docs/performance.md). Declared in the library so
/// that the binary, the tests and the benchmarks all run on the allocator that ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod admin;
pub mod backup;
pub mod cli;
pub mod cli_audit;
pub mod config;
pub mod escrow;
pub mod file_import;
pub mod import;
pub mod jobs;
pub mod keys;
pub mod startup;
pub mod telemetry;
pub mod tls;

pub use config::Settings;
pub use startup::Application;

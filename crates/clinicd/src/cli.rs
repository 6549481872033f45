//! The command line.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "clinicd", version, about = "Clinic patient management server")]
pub struct Cli {
    /// Validate the configuration, report every problem, and exit.
    #[arg(long)]
    pub check_config: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

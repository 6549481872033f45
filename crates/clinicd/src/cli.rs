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
    /// Print the OpenAPI document (as served at /api/openapi.json) and exit; needs no
    /// configuration.
    Openapi,
    /// Inspect and rotate keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage accounts from the command line.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Bring records over from another system.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Encrypted files.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Backups and what protects them (docs/backup.md).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Retention, legal holds and erasure (docs/lifecycle.md).
    #[command(subcommand)]
    Lifecycle(LifecycleCommand),
}

#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// The dry run of retention: one JSON line per patient past every retention period (id,
    /// the rule that kept the record longest, days overdue, any hold or pending request), then
    /// a summary. Changes nothing; prints no PHI.
    Report,
    /// The legal holds in force, as JSON lines.
    Holds,
    /// Checks the erasure ledger (both copies: chain, MACs, agreement), replays what the
    /// database lacks (as the server does at start) and finishes what an erasure left undone
    /// outside the database. Prints a JSON report; exits non-zero on a problem.
    Ledger,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Check what protects the stored files (S3 versioning, Object Lock, replication) and the
    /// root key (KMS state, multi-Region); exits non-zero if a requirement fails. Reads
    /// configuration and the cloud only, so it is not an audit event (as `keys status`).
    Check,
    /// Make the repository passphrase (wrapped by the key provider), create the pgBackRest
    /// stanza and check that WAL archiving reaches the repository.
    Init,
    /// Take a backup now, then its manifest (rows and digests at a restore point) and copies
    /// of local-disk files. Prints a JSON summary.
    Now {
        /// full, diff (the default; full when none exists) or incr.
        #[arg(long = "type", default_value = "diff")]
        kind: String,
        /// A full backup into the monthly repository (kept CLINICD_BACKUP_RETENTION_MONTHS).
        #[arg(long)]
        monthly: bool,
    },
    /// List the backups, oldest first, with each manifest's state.
    List,
    /// pgBackRest's verification of every repository file, then every manifest's seal and
    /// every file copy's digest; exits non-zero on any problem.
    Verify,
    /// Restore into an empty directory, for an operator to start (docs/backup.md).
    Restore {
        /// An RFC 3339 time (recovery stops just before it), or `latest-backup` for the newest
        /// backup's own restore point.
        #[arg(long)]
        to: String,
        /// The new cluster's data directory: absent or empty.
        #[arg(long)]
        pg_data: std::path::PathBuf,
    },
    /// Restore the newest backup (or --to a point in time) into a throwaway cluster, start
    /// clinicd on it and check it; prints the report with RTO and RPO, exits non-zero on any
    /// mismatch.
    Drill {
        #[arg(long)]
        to: Option<String>,
    },
    /// Postgres's archive_command: `clinicd backup archive-push %p`.
    ArchivePush { wal: String },
    /// The restore_command of a restored cluster: `clinicd backup archive-get %f "%p"`.
    ArchiveGet {
        segment: String,
        destination: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Encrypt and store existing plaintext documents: MAP is a CSV of `path,mrn,category`
    /// with paths relative to DIR. Prints one line per map line and a JSON summary; re-running
    /// skips files already stored; exits 1 if any line failed.
    Import {
        dir: std::path::PathBuf,
        #[arg(long)]
        map: std::path::PathBuf,
        /// Delete each original once its stored copy has been read back and matches.
        #[arg(long)]
        delete_originals: bool,
    },
    /// Remove deleted files whose retention has ended (objects, then rows). Prints a JSON
    /// summary.
    Purge,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Import patients from a CSV file (docs/import.md lists the columns). Prints one line per
    /// row and a JSON summary; re-running skips rows already imported (by `source_id`).
    Patients {
        file: std::path::PathBuf,
        /// Validate every row and report, writing nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain and check every authenticated head. Prints a JSON report;
    /// exits 1 and names the first broken sequence number if the trail was altered.
    Verify,
    /// Create the next twelve monthly partitions, and archive (encrypted) then detach the
    /// partitions past retention. Run with the database owner's role; prints a JSON summary.
    Maintain,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an administrator with a one-time password, printed once, to be changed at first
    /// login.
    Create {
        #[arg(long)]
        username: String,
        /// Defaults to USERNAME@localhost.localdomain.
        #[arg(long)]
        email: Option<String>,
    },
    /// Clear a lockout after failed logins (a locked-out sole administrator's way back).
    Unlock {
        #[arg(long)]
        username: String,
    },
    /// Approve a change waiting for a second administrator, as the server's operator: the
    /// second person of a clinic with a single administrator (docs/rbac.md).
    Approve {
        /// The proposal's id.
        proposal: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List branch keys, their state, their KEK generation and the subject keys they wrap.
    Status,
    /// Rewrap every branch key under the root key's current material (no data touched).
    RotateKek,
    /// Make a new branch key for a purpose and rewrap what it protects (no field touched).
    RotateBranch {
        /// field, blind_index, audit or file
        #[arg(long)]
        purpose: clinicd_crypto::Purpose,
    },
    /// Give every patient a new subject key and re-encrypt every clinical field under it,
    /// resumably (a batch per transaction); run again with the same --job to continue.
    Rekey {
        /// Names the run, for resuming it.
        #[arg(long)]
        job: String,
    },
    /// Split the local master key into shares for separate custodians: any --threshold of the
    /// --shares files written into --out rebuild it (docs/backup.md, "Key escrow").
    EscrowSplit {
        #[arg(long, default_value_t = 3)]
        threshold: u8,
        #[arg(long, default_value_t = 5)]
        shares: u8,
        /// A directory for the share files (created if missing; must not hold share files).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Rebuild the local master key from share files into --out, a new file readable by its
    /// owner only. Needs no configuration and no database: it runs on a fresh machine.
    EscrowRebuild {
        #[arg(long)]
        out: std::path::PathBuf,
        /// The share files (at least the threshold of them).
        #[arg(required = true)]
        shares: Vec<std::path::PathBuf>,
    },
    /// Recompute the blind indexes made with an older blind-index key (after
    /// `rotate-branch --purpose blind_index`), resumably.
    Reindex {
        #[arg(long)]
        job: String,
    },
}

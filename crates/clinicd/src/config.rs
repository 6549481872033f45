//! Typed configuration, read from the environment (and an optional `.env`), validated once at
//! start-up. Every problem is collected and reported together, each naming its variable.
//! There are no fallback secrets: a missing secret is an error in every mode.
//!
//! `docs/configuration.md` lists every variable; keep the two in step.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use clinicd_api::client_ip::TrustedProxies;
use clinicd_api::rate_limit::{QuotaSpec, RateLimitSettings};
use clinicd_api::settings::{AllowedOrigins, DEFAULT_JSON_LIMIT, HttpSettings};
use clinicd_files::{ContentType, FileSettings};
use clinicd_identity::IdentitySettings;
use clinicd_identity::password::HashParams;
use clinicd_identity::sessions::SessionPolicy;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::tls;

/// Minimum decoded length of the token signing key: 256 bits, as HS256 requires (RFC 7518 §3.2).
pub const MIN_SIGNING_KEY_BYTES: usize = 32;
pub const MASTER_KEY_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fails closed: TLS files required, https origins only, no generated material.
    Production,
    /// For a developer's machine: a self-signed certificate is generated and reused.
    Development,
}

#[derive(Debug)]
pub struct Settings {
    pub mode: Mode,
    pub listen_addr: SocketAddr,
    pub redirect_addr: Option<SocketAddr>,
    /// The HTTPS port the redirect listener sends clients to (differs from the listen port
    /// behind port mapping).
    pub public_https_port: u16,
    pub metrics_addr: SocketAddr,
    pub workers: Option<usize>,
    pub data_dir: PathBuf,
    pub tls: TlsSettings,
    pub database: DatabaseSettings,
    pub token_signing_key: SecretSlice<u8>,
    pub http: HttpSettings,
    pub identity: IdentitySettings,
    pub mfa_fallback: MfaFallback,
    pub login_challenge: Option<LoginChallenge>,
    pub audit: AuditSettings,
    pub keys: KeyProviderSettings,
    pub storage: StorageSettings,
    pub secops: clinicd_secops::SecOpsSettings,
    pub retention: clinicd_lifecycle::RetentionPolicy,
    pub log_filter: String,
}

#[derive(Debug, Clone)]
pub enum TlsSettings {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Development only: generated under `dir` on first run, reused after.
    SelfSigned {
        dir: PathBuf,
    },
}

#[derive(Debug)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub migrate_on_start: bool,
}

impl DatabaseSettings {
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        // Statement logging would put SQL into logs; values are bound, but keep logs quiet.
        Ok(PgConnectOptions::from_str(self.url.expose_secret())?.disable_statement_logging())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProviderSettings {
    /// A 256-bit master key in a file readable by the owner only (dev and small installs).
    Local { master_key_file: PathBuf },
    /// AWS KMS; the endpoint and region come from the standard AWS variables.
    AwsKms { key_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSettings {
    Local {
        dir: PathBuf,
    },
    S3 {
        bucket: String,
        prefix: String,
        /// Also ask S3 to encrypt objects at rest under this KMS key (SSE-KMS), on top of ours.
        sse_kms_key_id: Option<String>,
    },
}

/// Where backups go and how they reach the cluster (docs/backup.md). Read only by the
/// `backup` commands, so the server never needs these variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    pub repo: BackupRepo,
    /// The cluster's data directory: pgBackRest runs on the database host.
    pub pg_data: PathBuf,
    pub pg_port: u16,
    pub pg_socket: PathBuf,
    /// The database role pgBackRest and the manifest connect as (a superuser, over the socket).
    pub pg_user: String,
    /// The Postgres server binaries (pg_ctl) for the drill's throwaway cluster.
    pub pg_bindir: Option<PathBuf>,
    pub stanza: String,
    /// Daily backups are kept this many days (pgBackRest time-based retention, repo 1).
    pub retention_days: u32,
    /// Monthly full backups kept (repo 2); 0 turns the monthly tier off.
    pub retention_months: u32,
    /// The repository passphrase, wrapped by the key provider (never in clear on disk).
    pub passphrase_file: PathBuf,
    /// pgBackRest's configuration, logs, locks and spool.
    pub work_dir: PathBuf,
    pub pgbackrest: PathBuf,
}

/// A backup repository: a local (or mounted) directory, or an S3 bucket and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupRepo {
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
        endpoint: String,
        region: String,
        /// `path` for S3-compatible stores without virtual-host addressing.
        uri_style: String,
        /// A CA bundle for the endpoint's certificate (a private S3-compatible store).
        ca_file: Option<PathBuf>,
    },
}

/// What the archive commands (run by Postgres itself) and the backup commands read: the
/// key provider and the backup settings, nothing of the server's secrets.
#[derive(Debug, Clone)]
pub struct BackupEnv {
    pub keys: KeyProviderSettings,
    pub backup: BackupSettings,
    pub storage: StorageSettings,
}

impl BackupEnv {
    pub fn from_env() -> Result<Self, ConfigError> {
        // As `Settings::from_env`: a `.env` in the working directory fills what is unset.
        let _ = dotenvy::dotenv();
        Self::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            vars,
            problems: Vec::new(),
        };
        let production = r.optional("CLINICD_MODE").unwrap_or("production") != "development";
        let data_dir = PathBuf::from(r.optional("CLINICD_DATA_DIR").unwrap_or("./clinicd-data"));
        let keys = read_keys(&mut r, &data_dir, production);
        let storage = read_storage(&mut r, &data_dir);
        let backup = read_backup(&mut r, &data_dir);
        match (keys, backup, storage) {
            (Some(keys), Some(backup), Some(storage)) if r.problems.is_empty() => Ok(Self {
                keys,
                backup,
                storage,
            }),
            _ => Err(ConfigError {
                problems: r.problems,
            }),
        }
    }
}

fn read_backup(r: &mut Reader<'_>, data_dir: &Path) -> Option<BackupSettings> {
    let repo = read_backup_repo(r);
    let pg_data = r.required("CLINICD_BACKUP_PG_DATA").map(PathBuf::from);
    let pg_port = r.parse_from_str::<u16>("CLINICD_BACKUP_PG_PORT", "5432");
    let pg_socket = PathBuf::from(
        r.optional("CLINICD_BACKUP_PG_SOCKET")
            .unwrap_or("/var/run/postgresql"),
    );
    let pg_user = r
        .optional("CLINICD_BACKUP_PG_USER")
        .unwrap_or("postgres")
        .to_owned();
    let pg_bindir = r.optional("CLINICD_BACKUP_PG_BINDIR").map(PathBuf::from);
    let stanza = r.parse_with("CLINICD_BACKUP_STANZA", "clinicd".to_owned(), |v| {
        if !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Ok(v.to_owned())
        } else {
            Err("must be 1 to 64 letters, digits, `-` or `_`".into())
        }
    });
    let retention_days = r.number("CLINICD_BACKUP_RETENTION_DAYS", 35, 1..=3650);
    let retention_months = r.number("CLINICD_BACKUP_RETENTION_MONTHS", 12, 0..=120);
    let work_dir = r
        .optional("CLINICD_BACKUP_WORK_DIR")
        .map_or_else(|| data_dir.join("backup"), PathBuf::from);
    let passphrase_file = r
        .optional("CLINICD_BACKUP_PASSPHRASE_FILE")
        .map_or_else(|| data_dir.join("backup-passphrase.json"), PathBuf::from);
    let pgbackrest = PathBuf::from(r.optional("CLINICD_PGBACKREST").unwrap_or("pgbackrest"));
    Some(BackupSettings {
        repo: repo?,
        pg_data: pg_data?,
        pg_port: pg_port?,
        pg_socket,
        pg_user,
        pg_bindir,
        stanza,
        retention_days,
        retention_months,
        passphrase_file,
        work_dir,
        pgbackrest,
    })
}

fn read_backup_repo(r: &mut Reader<'_>) -> Option<BackupRepo> {
    let value = r.required("CLINICD_BACKUP_REPO")?.to_owned();
    if let Some(rest) = value.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            r.problem(
                "CLINICD_BACKUP_REPO",
                "an S3 repository is `s3://bucket/prefix`",
            );
            return None;
        }
        let region = r
            .optional("CLINICD_BACKUP_S3_REGION")
            .or_else(|| r.optional("AWS_REGION"))
            .unwrap_or("us-east-1")
            .to_owned();
        let endpoint = r
            .optional("CLINICD_BACKUP_S3_ENDPOINT")
            .map_or_else(|| format!("s3.{region}.amazonaws.com"), str::to_owned);
        let uri_style = r.parse_with(
            "CLINICD_BACKUP_S3_URI_STYLE",
            "host".to_owned(),
            |v| match v {
                "host" | "path" => Ok(v.to_owned()),
                _ => Err("must be `host` or `path`".into()),
            },
        );
        return Some(BackupRepo::S3 {
            bucket: bucket.to_owned(),
            prefix: format!("/{}", prefix.trim_matches('/')),
            endpoint,
            region,
            uri_style,
            ca_file: r.optional("CLINICD_BACKUP_S3_CA_FILE").map(PathBuf::from),
        });
    }
    let path = PathBuf::from(&value);
    if !path.is_absolute() {
        r.problem(
            "CLINICD_BACKUP_REPO",
            "must be an absolute directory path or `s3://bucket/prefix`",
        );
        return None;
    }
    Some(BackupRepo::Local(path))
}

/// Where one-time fallback codes go (see clinicd_identity::otp).
#[derive(Debug)]
pub enum MfaFallback {
    Off,
    /// Development: log that a code was sent, never the code.
    Log,
    Webhook {
        url: reqwest::Url,
        signing_key: SecretSlice<u8>,
    },
}

/// Where signed checkpoints of the audit chain go, and how often.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub checkpoint_dir: PathBuf,
    pub checkpoint_interval: std::time::Duration,
    /// Where `clinicd audit maintain` writes encrypted archives of expired partitions.
    pub archive_dir: PathBuf,
    pub retention_years: u32,
    /// With S3 storage: keep each checkpoint under Object Lock (compliance) this many days.
    pub checkpoint_lock_days: Option<u32>,
}

/// The siteverify endpoint and secret of the login challenge (CAPTCHA).
#[derive(Debug)]
pub struct LoginChallenge {
    pub verify_url: reqwest::Url,
    pub secret: SecretString,
}

/// One invalid or missing variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub variable: &'static str,
    pub message: String,
}

/// Every problem found, reported together.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    pub fn variables(&self) -> Vec<&'static str> {
        self.problems.iter().map(|p| p.variable).collect()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  {}: {}", problem.variable, problem.message)?;
        }
        Ok(())
    }
}

impl Settings {
    /// Reads the process environment, after loading `.env` from the working directory if it
    /// exists (variables already set win).
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Err(error) = dotenvy::dotenv()
            && !error.not_found()
        {
            return Err(ConfigError {
                problems: vec![ConfigProblem {
                    variable: ".env",
                    message: format!("cannot be read: {error}"),
                }],
            });
        }
        Self::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            vars,
            problems: Vec::new(),
        };
        let settings = read(&mut r);
        match settings {
            Some(settings) if r.problems.is_empty() => Ok(settings),
            _ => Err(ConfigError {
                problems: r.problems,
            }),
        }
    }

    pub fn is_production(&self) -> bool {
        self.mode == Mode::Production
    }
}

/// Reads every variable, recording problems as it goes; returns `None` if a value needed to
/// build `Settings` is missing (its problem is recorded).
fn read(r: &mut Reader<'_>) -> Option<Settings> {
    let mode = r.parse_with("CLINICD_MODE", Mode::Production, |v| match v {
        "production" => Ok(Mode::Production),
        "development" => Ok(Mode::Development),
        _ => Err("must be `production` or `development`".into()),
    });
    let production = mode == Mode::Production;
    let default_listen = if production {
        "0.0.0.0:8443"
    } else {
        "127.0.0.1:8443"
    };
    let listen_addr = r.parse_from_str("CLINICD_LISTEN_ADDR", default_listen);
    let redirect_addr = r.optional_from_str::<SocketAddr>("CLINICD_HTTP_REDIRECT_ADDR");
    let public_https_port = r.optional_from_str::<u16>("CLINICD_PUBLIC_HTTPS_PORT");
    let metrics_addr = r.parse_from_str("CLINICD_METRICS_ADDR", "127.0.0.1:9464");
    let workers = r.optional_with("CLINICD_HTTP_WORKERS", |v| match v.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err("must be a whole number from 1 to 256".into()),
    });
    let data_dir = PathBuf::from(r.optional("CLINICD_DATA_DIR").unwrap_or("./clinicd-data"));
    let tls = read_tls(r, production, &data_dir);
    let database = read_database(r, production);
    let token_signing_key = read_signing_key(r);
    let http = read_http(r, production);
    let identity = read_identity(r);
    let mfa_fallback = read_mfa_fallback(r, production);
    let login_challenge = read_login_challenge(r);
    let audit = AuditSettings {
        checkpoint_dir: r
            .optional("CLINICD_AUDIT_CHECKPOINT_DIR")
            .map_or_else(|| data_dir.join("audit-checkpoints"), PathBuf::from),
        checkpoint_interval: seconds(r.number("CLINICD_AUDIT_CHECKPOINT_SECS", 300, 10..=86_400)),
        archive_dir: r
            .optional("CLINICD_AUDIT_ARCHIVE_DIR")
            .map_or_else(|| data_dir.join("audit-archive"), PathBuf::from),
        // Six years is HIPAA's floor for the documentation it requires; never less.
        retention_years: r.number("CLINICD_AUDIT_RETENTION_YEARS", 7, 6..=100),
        checkpoint_lock_days: r.optional_with("CLINICD_AUDIT_CHECKPOINT_LOCK_DAYS", |v| match v
            .parse::<u32>()
        {
            Ok(n) if (1..=3650).contains(&n) => Ok(n),
            _ => Err("must be a whole number of days from 1 to 3650".into()),
        }),
    };
    let keys = read_keys(r, &data_dir, production);
    let storage = read_storage(r, &data_dir);
    let secops = read_secops(r);
    let retention = read_retention(r);
    let log_filter = r.optional("CLINICD_LOG").unwrap_or("info").to_owned();
    if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
        r.problem(
            "CLINICD_LOG",
            "is not a valid log filter (e.g. `info` or `info,clinicd=debug`)",
        );
    }

    let listen_addr: SocketAddr = listen_addr?;
    Some(Settings {
        mode,
        public_https_port: public_https_port.unwrap_or(listen_addr.port()),
        listen_addr,
        redirect_addr,
        metrics_addr: metrics_addr?,
        workers,
        data_dir,
        tls: tls?,
        database: database?,
        token_signing_key: token_signing_key?,
        http: http?,
        identity,
        mfa_fallback: mfa_fallback?,
        login_challenge: login_challenge?,
        audit,
        keys: keys?,
        storage: storage?,
        secops: secops?,
        retention,
        log_filter,
    })
}

/// Retention of the records (docs/lifecycle.md): never under the six-year floor.
fn read_retention(r: &mut Reader<'_>) -> clinicd_lifecycle::RetentionPolicy {
    use clinicd_lifecycle::retention::{DEFAULT_MINOR_AGE, DEFAULT_YEARS, FLOOR_YEARS};
    clinicd_lifecycle::RetentionPolicy {
        record_years: r.number(
            "CLINICD_RETENTION_RECORD_YEARS",
            DEFAULT_YEARS,
            FLOOR_YEARS..=100,
        ),
        note_years: r.number(
            "CLINICD_RETENTION_NOTE_YEARS",
            DEFAULT_YEARS,
            FLOOR_YEARS..=100,
        ),
        file_years: r.number(
            "CLINICD_RETENTION_FILE_YEARS",
            DEFAULT_YEARS,
            FLOOR_YEARS..=100,
        ),
        minor_age: r.number("CLINICD_RETENTION_MINOR_AGE", DEFAULT_MINOR_AGE, 18..=30),
        auto_erase: r.parse_with("CLINICD_RETENTION_AUTO_ERASE", false, parse_bool),
    }
}

/// Security operations (docs/security-operations.md): shared limits, blocking thresholds,
/// misuse rules, alert delivery.
fn read_secops(r: &mut Reader<'_>) -> Option<clinicd_secops::SecOpsSettings> {
    use clinicd_secops::{AbuseSettings, DeliverySettings, DetectSettings, Threshold};
    let defaults = clinicd_secops::SecOpsSettings::default();
    let shared_limits = r.parse_with("CLINICD_SHARED_LIMITS", false, parse_bool);
    let threshold = |r: &mut Reader<'_>, name: &'static str, default: Threshold| {
        r.parse_with(name, default, |v| {
            parse_quota(v).map(|q| Threshold {
                count: q.count.get(),
                window: q.window,
            })
        })
    };
    let a = AbuseSettings::default();
    let abuse = AbuseSettings {
        stuffing: threshold(r, "CLINICD_BLOCK_STUFFING", a.stuffing),
        spraying: threshold(r, "CLINICD_BLOCK_SPRAYING", a.spraying),
        enumeration: threshold(r, "CLINICD_BLOCK_ENUMERATION", a.enumeration),
        token: threshold(r, "CLINICD_BLOCK_TOKENS", a.token),
        origin: threshold(r, "CLINICD_BLOCK_ORIGIN", a.origin),
        block_for: seconds(r.number("CLINICD_BLOCK_SECS", 900, 60..=86_400)),
        allow: r
            .parse_with(
                "CLINICD_BLOCK_ALLOW",
                TrustedProxies::default(),
                parse_networks,
            )
            .networks()
            .to_vec(),
    };
    let d = DetectSettings::default();
    let working_hours = r.parse_with("CLINICD_DETECT_WORKING_HOURS", d.working_hours, |v| {
        if v == "off" {
            return Ok(None);
        }
        let (start, end) = v
            .split_once('-')
            .ok_or("must be START-END hours such as 06-20, or off")?;
        match (start.trim().parse::<u32>(), end.trim().parse::<u32>()) {
            (Ok(start), Ok(end)) if start < end && end <= 24 => Ok(Some((start, end))),
            _ => Err(
                "must be START-END hours such as 06-20 (0 to 24, start before end), or off".into(),
            ),
        }
    });
    let timezone = r.parse_with("CLINICD_DETECT_TIMEZONE", d.timezone.clone(), |v| {
        if !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
        {
            Ok(v.to_owned())
        } else {
            Err("must be an IANA time zone name such as America/Chicago".into())
        }
    });
    let detect = DetectSettings {
        window: seconds(r.number("CLINICD_DETECT_WINDOW_SECS", 3600, 300..=86_400)),
        volume_min: r.number("CLINICD_DETECT_VOLUME_MIN", d.volume_min, 1..=1_000_000),
        volume_factor: r.number("CLINICD_DETECT_VOLUME_FACTOR", d.volume_factor, 1..=1000),
        working_hours,
        timezone,
        export_max: r.number("CLINICD_DETECT_EXPORT_MAX", d.export_max, 1..=1_000_000),
        dormant_days: r.number("CLINICD_DETECT_DORMANT_DAYS", d.dormant_days, 1..=3650),
    };
    let webhook_url = r.optional_with("CLINICD_ALERT_WEBHOOK_URL", |v| match url::Url::parse(v) {
        Ok(u)
            if u.scheme() == "https"
                || u.host_str()
                    .is_some_and(|h| h == "localhost" || h == "127.0.0.1" || h == "[::1]") =>
        {
            Ok(v.to_owned())
        }
        Ok(_) => Err("must be an https URL (plain http only to localhost)".into()),
        Err(e) => Err(format!("is not a URL: {e}")),
    });
    let webhook_secret = r
        .optional("CLINICD_ALERT_WEBHOOK_SECRET")
        .map(|v| SecretString::from(v.to_owned()));
    if webhook_url.is_some()
        && webhook_secret
            .as_ref()
            .is_none_or(|s| s.expose_secret().len() < 16)
    {
        r.problem(
            "CLINICD_ALERT_WEBHOOK_SECRET",
            "must be set (16 characters or more) when CLINICD_ALERT_WEBHOOK_URL is",
        );
    }
    let smtp_url = r
        .optional("CLINICD_ALERT_SMTP_URL")
        .map(|v| SecretString::from(v.to_owned()));
    if let Some(url) = &smtp_url
        && let Err(e) = clinicd_secops::deliver::smtp_transport(url.expose_secret())
    {
        r.problem("CLINICD_ALERT_SMTP_URL", e);
    }
    let email_to: Vec<String> = r
        .optional("CLINICD_ALERT_EMAIL_TO")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if smtp_url.is_some() && email_to.is_empty() {
        r.problem(
            "CLINICD_ALERT_EMAIL_TO",
            "must list at least one address when CLINICD_ALERT_SMTP_URL is set",
        );
    }
    let delivery = DeliverySettings {
        webhook_url,
        webhook_secret,
        smtp_url,
        email_from: r.optional("CLINICD_ALERT_EMAIL_FROM").map(str::to_owned),
        email_to,
        max_attempts: r.number(
            "CLINICD_ALERT_MAX_ATTEMPTS",
            defaults.delivery.max_attempts,
            1..=50,
        ),
        per_hour: r.number(
            "CLINICD_ALERT_MAX_PER_HOUR",
            defaults.delivery.per_hour,
            1..=10_000,
        ),
    };
    Some(clinicd_secops::SecOpsSettings {
        shared_limits,
        abuse,
        detect,
        delivery,
        key_rotation_days: r.number(
            "CLINICD_KEY_ROTATION_DAYS",
            defaults.key_rotation_days,
            30..=3650,
        ),
        export: clinicd_secops::export_quota::ExportLimits {
            default: r.number(
                "CLINICD_EXPORT_DAILY_LIMIT",
                defaults.export.default,
                1..=100_000,
            ),
            by_role: r.parse_with(
                "CLINICD_EXPORT_DAILY_LIMITS",
                defaults.export.by_role,
                parse_role_limits,
            ),
        },
    })
}

/// `Role=count,Role=count`: a daily export limit per role (docs/lifecycle.md).
fn parse_role_limits(value: &str) -> Result<std::collections::BTreeMap<String, u32>, String> {
    let mut limits = std::collections::BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = pair.split_once('=').and_then(|(role, count)| {
            let count = count
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100_000).contains(n))?;
            let role = role.trim();
            (!role.is_empty()).then(|| (role.to_owned(), count))
        });
        let Some((role, count)) = parsed else {
            return Err(
                "must be `Role=count` pairs separated by commas, each count 1 to 100000".into(),
            );
        };
        limits.insert(role, count);
    }
    Ok(limits)
}

fn read_tls(r: &mut Reader<'_>, production: bool, data_dir: &Path) -> Option<TlsSettings> {
    let cert = r.optional("CLINICD_TLS_CERT_FILE").map(PathBuf::from);
    let key = r.optional("CLINICD_TLS_KEY_FILE").map(PathBuf::from);
    match (cert, key) {
        (Some(cert), Some(key)) => {
            if let Err(error) = tls::load_server_config(&cert, &key) {
                r.problem(error.variable(), error.to_string());
                return None;
            }
            Some(TlsSettings::Files { cert, key })
        }
        (None, None) if !production => Some(TlsSettings::SelfSigned {
            dir: data_dir.join("tls"),
        }),
        (cert, _) => {
            let why = if production {
                "is required in production"
            } else {
                "must be set together with its pair"
            };
            if cert.is_none() {
                r.problem("CLINICD_TLS_CERT_FILE", why);
            } else {
                r.problem("CLINICD_TLS_KEY_FILE", why);
            }
            None
        }
    }
}

fn read_database(r: &mut Reader<'_>, production: bool) -> Option<DatabaseSettings> {
    let max_connections = r.parse_with("CLINICD_DB_MAX_CONNECTIONS", 10, |v| {
        match v.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err("must be a whole number from 1 to 1000".into()),
        }
    });
    let migrate_on_start = r.parse_with("CLINICD_MIGRATE_ON_START", !production, parse_bool);
    let url = r.required("DATABASE_URL")?.to_owned();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        r.problem("DATABASE_URL", "must be a postgres:// or postgresql:// URL");
        return None;
    }
    // The error text of a URL parse can quote the URL (and its password): report the kind only.
    let Ok(options) = PgConnectOptions::from_str(&url) else {
        r.problem("DATABASE_URL", "is not a valid Postgres connection URL");
        return None;
    };
    if production && !local_database(&options) && !verifies_server(&options) {
        r.problem(
            "DATABASE_URL",
            "reaches a database over the network without TLS and certificate verification: add              `sslmode=verify-full` (and `sslrootcert=` unless the system's roots sign it)",
        );
        return None;
    }
    Some(DatabaseSettings {
        url: url.into(),
        max_connections,
        migrate_on_start,
    })
}

fn read_signing_key(r: &mut Reader<'_>) -> Option<SecretSlice<u8>> {
    let encoded = r.required("CLINICD_TOKEN_SIGNING_KEY")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(encoded));
    match decoded {
        Ok(bytes) if bytes.len() >= MIN_SIGNING_KEY_BYTES => Some(bytes.into()),
        Ok(bytes) => {
            r.problem(
                "CLINICD_TOKEN_SIGNING_KEY",
                format!(
                    "is too short: {} bytes after base64 decoding, at least {MIN_SIGNING_KEY_BYTES} required \
                     (generate with `openssl rand -base64 64`)",
                    bytes.len()
                ),
            );
            None
        }
        Err(_) => {
            r.problem(
                "CLINICD_TOKEN_SIGNING_KEY",
                "is not valid base64 (generate with `openssl rand -base64 64`)",
            );
            None
        }
    }
}

fn read_http(r: &mut Reader<'_>, production: bool) -> Option<HttpSettings> {
    let allowed_origins = r.parse_with("ALLOWED_ORIGINS", AllowedOrigins::default(), |v| {
        AllowedOrigins::parse(v, production).map_err(|e| e.to_string())
    });
    let trusted_proxies = r.parse_with(
        "CLINICD_TRUSTED_PROXIES",
        TrustedProxies::default(),
        parse_networks,
    );
    let defaults = RateLimitSettings::default();
    let rate_limits = RateLimitSettings {
        per_ip: r.parse_with("CLINICD_RATE_LIMIT_PER_IP", defaults.per_ip, parse_quota),
        api: r.parse_with("CLINICD_RATE_LIMIT_API", defaults.api, parse_quota),
        login: r.parse_with("CLINICD_RATE_LIMIT_LOGIN", defaults.login, parse_quota),
        upload: r.parse_with("CLINICD_RATE_LIMIT_UPLOAD", defaults.upload, parse_quota),
        export: r.parse_with("CLINICD_RATE_LIMIT_EXPORT", defaults.export, parse_quota),
    };
    let json_limit = r.parse_with("CLINICD_JSON_BODY_LIMIT", DEFAULT_JSON_LIMIT, |v| {
        match v.parse::<usize>() {
            Ok(n) if (1024..=64 * 1024 * 1024).contains(&n) => Ok(n),
            _ => Err("must be a byte count from 1024 to 67108864".into()),
        }
    });
    let break_glass_minutes = r.parse_with(
        "CLINICD_BREAK_GLASS_MINUTES",
        clinicd_rbac::DEFAULT_BREAK_GLASS_MINUTES,
        |v| match v.parse::<u32>() {
            Ok(n) if (5..=720).contains(&n) => Ok(n),
            _ => Err("must be a number of minutes from 5 to 720".into()),
        },
    );
    let break_glass_opens_psychiatric =
        r.parse_with("CLINICD_BREAK_GLASS_OPENS_PSYCHIATRIC", false, parse_bool);
    let proposal_ttl_hours = r.parse_with(
        "CLINICD_PROPOSAL_TTL_HOURS",
        clinicd_rbac::proposals::DEFAULT_TTL_HOURS,
        |v| match v.parse::<u32>() {
            Ok(n) if (1..=720).contains(&n) => Ok(n),
            _ => Err("must be a number of hours from 1 to 720".into()),
        },
    );
    let window = clinicd_domain::appointment::BookingWindow::default();
    let booking = clinicd_domain::appointment::BookingWindow {
        past_days: r.number("CLINICD_BOOKING_PAST_DAYS", window.past_days, 0..=3650),
        future_days: r.number("CLINICD_BOOKING_FUTURE_DAYS", window.future_days, 1..=3650),
    };
    let files = read_file_settings(r);
    Some(HttpSettings {
        production,
        allowed_origins,
        trusted_proxies,
        rate_limits,
        json_limit,
        break_glass_minutes,
        break_glass_opens_psychiatric,
        proposal_ttl_hours,
        booking,
        files,
    })
}

fn read_file_settings(r: &mut Reader<'_>) -> FileSettings {
    let defaults = FileSettings::default();
    let max_bytes = r.number("CLINICD_FILE_MAX_BYTES", defaults.max_bytes, 1..=(1 << 40));
    let retention_days = r.number(
        "CLINICD_FILE_RETENTION_DAYS",
        defaults.retention_days,
        0..=36_600,
    );
    let allowed = r.parse_with("CLINICD_FILE_TYPES", defaults.allowed.clone(), |v| {
        v.split(',')
            .map(|name| {
                name.trim().parse::<ContentType>().map_err(|()| {
                    format!("`{}` is not one of pdf, png, jpeg, tiff, text", name.trim())
                })
            })
            .collect()
    });
    let idle_secs = r.number("CLINICD_FILE_IDLE_TIMEOUT_SECS", 60, 5..=3600);
    FileSettings {
        max_bytes,
        allowed,
        retention_days,
        idle_timeout: std::time::Duration::from_secs(idle_secs),
        ..defaults
    }
}

/// A Unix socket, or a loopback address: traffic that never leaves the host.
fn local_database(options: &PgConnectOptions) -> bool {
    if options.get_socket().is_some() {
        return true;
    }
    let host = options.get_host();
    host.starts_with('/')
        || host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// TLS with the server's certificate checked against trusted roots (and its name, or at least
/// its issuer): `verify-full` or `verify-ca`.
fn verifies_server(options: &PgConnectOptions) -> bool {
    matches!(
        options.get_ssl_mode(),
        PgSslMode::VerifyFull | PgSslMode::VerifyCa
    )
}

fn read_keys(r: &mut Reader<'_>, data_dir: &Path, production: bool) -> Option<KeyProviderSettings> {
    // Production names its key provider: a default would put the one key that opens every
    // record in a file beside the data without anyone having decided so.
    let provider = match r.optional("CLINICD_KEY_PROVIDER") {
        Some(provider) => provider,
        None if production => {
            r.problem(
                "CLINICD_KEY_PROVIDER",
                "is required in production: `aws-kms`, or `local` with a master key file you have decided to keep (docs/field-encryption.md)",
            );
            return None;
        }
        None => "local",
    };
    match provider {
        "local" => {
            let file = r
                .optional("CLINICD_MASTER_KEY_FILE")
                .map_or_else(|| data_dir.join("master.key"), PathBuf::from);
            match check_master_key_file(&file) {
                Ok(()) => Some(KeyProviderSettings::Local {
                    master_key_file: file,
                }),
                Err(message) => {
                    r.problem("CLINICD_MASTER_KEY_FILE", message);
                    None
                }
            }
        }
        "aws-kms" => {
            let key_id = r.required("CLINICD_KMS_KEY_ID")?.to_owned();
            Some(KeyProviderSettings::AwsKms { key_id })
        }
        _ => {
            r.problem("CLINICD_KEY_PROVIDER", "must be `local` or `aws-kms`");
            None
        }
    }
}

/// The master key must exist, hold exactly 256 bits, and be readable by its owner only.
fn check_master_key_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| {
        format!(
            "`{shown}` cannot be read: {e} \
        (generate with `head -c 32 /dev/urandom > FILE && chmod 600 FILE`)"
        )
    })?;
    if !metadata.is_file() || metadata.len() != MASTER_KEY_BYTES as u64 {
        return Err(format!(
            "`{shown}` must be a file of exactly {MASTER_KEY_BYTES} bytes"
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if metadata.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "`{shown}` is readable by group or others: chmod 600 it"
            ));
        }
    }
    Ok(())
}

fn read_storage(r: &mut Reader<'_>, data_dir: &Path) -> Option<StorageSettings> {
    match r.optional("CLINICD_STORAGE").unwrap_or("local") {
        "local" => Some(StorageSettings::Local {
            dir: r
                .optional("CLINICD_STORAGE_DIR")
                .map_or_else(|| data_dir.join("files"), PathBuf::from),
        }),
        "s3" => {
            let bucket = r.required("CLINICD_S3_BUCKET")?.to_owned();
            let prefix = r.optional("CLINICD_S3_PREFIX").unwrap_or("").to_owned();
            let sse_kms_key_id = r.optional("CLINICD_S3_SSE_KMS_KEY_ID").map(str::to_owned);
            Some(StorageSettings::S3 {
                bucket,
                prefix,
                sse_kms_key_id,
            })
        }
        _ => {
            r.problem("CLINICD_STORAGE", "must be `local` or `s3`");
            None
        }
    }
}

fn read_mfa_fallback(r: &mut Reader<'_>, production: bool) -> Option<MfaFallback> {
    match r.optional("CLINICD_MFA_FALLBACK").unwrap_or("off") {
        "off" => Some(MfaFallback::Off),
        "log" if !production => Some(MfaFallback::Log),
        "log" => {
            r.problem(
                "CLINICD_MFA_FALLBACK",
                "`log` delivers nothing: development only",
            );
            None
        }
        "webhook" => {
            let url = r
                .required("CLINICD_MFA_FALLBACK_WEBHOOK_URL")
                .map(str::to_owned);
            let key = r
                .required("CLINICD_MFA_FALLBACK_WEBHOOK_KEY")
                .map(str::to_owned);
            let url = secure_url(r, "CLINICD_MFA_FALLBACK_WEBHOOK_URL", &url?)?;
            let signing_key = base64_key(r, "CLINICD_MFA_FALLBACK_WEBHOOK_KEY", &key?)?;
            Some(MfaFallback::Webhook { url, signing_key })
        }
        _ => {
            r.problem("CLINICD_MFA_FALLBACK", "must be `off`, `log` or `webhook`");
            None
        }
    }
}

/// `None` inside: no challenge configured. The outer `None`: a problem was recorded.
fn read_login_challenge(r: &mut Reader<'_>) -> Option<Option<LoginChallenge>> {
    let Some(url) = r
        .optional("CLINICD_LOGIN_CHALLENGE_VERIFY_URL")
        .map(str::to_owned)
    else {
        return Some(None);
    };
    let secret = r
        .required("CLINICD_LOGIN_CHALLENGE_SECRET")
        .map(str::to_owned);
    let verify_url = secure_url(r, "CLINICD_LOGIN_CHALLENGE_VERIFY_URL", &url)?;
    Some(Some(LoginChallenge {
        verify_url,
        secret: secret?.into(),
    }))
}

/// An https:// URL, or http:// to a loopback address (a gateway on the same host).
fn secure_url(r: &mut Reader<'_>, name: &'static str, value: &str) -> Option<reqwest::Url> {
    let Ok(url) = reqwest::Url::parse(value) else {
        r.problem(name, "is not a valid URL");
        return None;
    };
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => Some(url),
        "http" if loopback => Some(url),
        _ => {
            r.problem(
                name,
                "must be an https:// URL (http:// only to a loopback address)",
            );
            None
        }
    }
}

fn base64_key(r: &mut Reader<'_>, name: &'static str, value: &str) -> Option<SecretSlice<u8>> {
    match base64::engine::general_purpose::STANDARD.decode(value) {
        Ok(bytes) if bytes.len() >= 32 => Some(bytes.into()),
        _ => {
            r.problem(
                name,
                "must be at least 32 bytes, base64 (openssl rand -base64 32)",
            );
            None
        }
    }
}

/// Password hashing and session policy. The defaults are the issue's: OWASP's argon2id
/// parameters, 15-minute access tokens and idle timeout, 12-hour sessions, 3 per user.
fn read_identity(r: &mut Reader<'_>) -> IdentitySettings {
    let defaults = IdentitySettings::default();
    let hash = HashParams {
        memory_kib: r.number(
            "CLINICD_PASSWORD_HASH_MEMORY_KIB",
            defaults.hash.memory_kib,
            8 * 1024..=4 * 1024 * 1024,
        ),
        iterations: r.number(
            "CLINICD_PASSWORD_HASH_ITERATIONS",
            defaults.hash.iterations,
            1..=20,
        ),
        parallelism: r.number(
            "CLINICD_PASSWORD_HASH_LANES",
            defaults.hash.parallelism,
            1..=16,
        ),
    };
    let max_concurrent_hashes = r.number(
        "CLINICD_PASSWORD_HASH_CONCURRENCY",
        defaults.max_concurrent_hashes,
        1..=256,
    );
    let p = SessionPolicy::default();
    let secs = |d: std::time::Duration| d.as_secs();
    let sessions = SessionPolicy {
        access_ttl: seconds(r.number(
            "CLINICD_ACCESS_TOKEN_TTL_SECS",
            secs(p.access_ttl),
            60..=3600,
        )),
        idle_timeout: seconds(r.number(
            "CLINICD_SESSION_IDLE_TIMEOUT_SECS",
            secs(p.idle_timeout),
            60..=24 * 3600,
        )),
        absolute_lifetime: seconds(r.number(
            "CLINICD_SESSION_LIFETIME_SECS",
            secs(p.absolute_lifetime),
            300..=7 * 24 * 3600,
        )),
        remember_me_lifetime: seconds(r.number(
            "CLINICD_SESSION_REMEMBER_ME_LIFETIME_SECS",
            secs(p.remember_me_lifetime),
            300..=90 * 24 * 3600,
        )),
        max_sessions: r.number("CLINICD_SESSION_MAX_PER_USER", p.max_sessions, 1..=100),
    };
    // An access token outliving the idle timeout would keep an idle session's door open for
    // the difference (the session row is checked on every request, but say it plainly here).
    if sessions.access_ttl > sessions.idle_timeout {
        r.problem(
            "CLINICD_ACCESS_TOKEN_TTL_SECS",
            "must not be longer than CLINICD_SESSION_IDLE_TIMEOUT_SECS",
        );
    }
    let device_days = r.number(
        "CLINICD_TRUSTED_DEVICE_DAYS",
        defaults.trusted_device_lifetime.as_secs() / 86_400,
        1..=90,
    );
    IdentitySettings {
        hash,
        max_concurrent_hashes,
        sessions,
        trusted_device_lifetime: seconds(device_days * 86_400),
    }
}

fn seconds(secs: u64) -> std::time::Duration {
    std::time::Duration::from_secs(secs)
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("must be `true` or `false`".into()),
    }
}

fn parse_quota(value: &str) -> Result<QuotaSpec, String> {
    value
        .parse()
        .map_err(|e: clinicd_api::rate_limit::QuotaSpecError| e.to_string())
}

fn parse_networks(value: &str) -> Result<TrustedProxies, String> {
    let mut networks = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let network = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| format!("`{entry}` is not an IP address or CIDR network"))?;
        networks.push(network);
    }
    Ok(TrustedProxies::new(networks))
}

/// Reads variables and collects problems.
struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    problems: Vec<ConfigProblem>,
}

impl Reader<'_> {
    fn problem(&mut self, variable: &'static str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable,
            message: message.into(),
        });
    }

    /// A set, non-blank value.
    fn optional(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn required(&mut self, name: &'static str) -> Option<&str> {
        if self.optional(name).is_none() {
            self.problem(name, "is required but not set");
            return None;
        }
        self.vars.get(name).map(|v| v.trim())
    }

    fn optional_with<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.optional(name)?.to_owned();
        match parse(&value) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                self.problem(name, message);
                None
            }
        }
    }

    fn optional_from_str<T: FromStr>(&mut self, name: &'static str) -> Option<T> {
        self.optional_with(name, |v| {
            v.parse().map_err(|_| invalid_value_message::<T>())
        })
    }

    /// The parsed value, or the default when unset. A set but invalid value is recorded as a
    /// problem and the default returned only so that reading goes on and every problem is
    /// reported at once.
    fn parse_with<T>(
        &mut self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        self.optional_with(name, parse).unwrap_or(default)
    }

    /// A whole number within `range`, or the default when unset.
    fn number<T>(&mut self, name: &'static str, default: T, range: std::ops::RangeInclusive<T>) -> T
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        self.parse_with(name, default, |v| match v.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(format!(
                "must be a whole number from {} to {}",
                range.start(),
                range.end()
            )),
        })
    }

    fn parse_from_str<T: FromStr>(&mut self, name: &'static str, default: &str) -> Option<T> {
        match self.optional(name) {
            Some(_) => self.optional_from_str(name),
            None => default.parse().ok(),
        }
    }
}

fn invalid_value_message<T>() -> String {
    let kind = std::any::type_name::<T>();
    if kind.ends_with("SocketAddr") {
        "must be an address with a port, e.g. 127.0.0.1:8443".into()
    } else if kind == "u16" {
        "must be a port number from 1 to 65535".into()
    } else {
        "has an invalid value".into()
    }
}

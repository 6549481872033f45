//! Security operations: the limits and blocks every instance shares, automatic blocking of
//! attack patterns, detection of misuse by insiders, alerts and their delivery, and the
//! security officer's dashboard (docs/security-operations.md).
//!
//! Owns: `rate_buckets`, `abuse_signals`, `blocks`, `watched_patients`, `security_alerts`,
//! `alert_deliveries`. Reads the audit trail and a few tables of others for detection and the
//! dashboard (docs/architecture.md lists each with its reason).
//!
//! Must not: hold or emit PHI (alerts and evidence carry ids, counts and usernames of staff);
//! know HTTP (the API crate adapts it).

pub mod abuse;
pub mod alerts;
pub mod blocks;
pub mod dashboard;
pub mod deliver;
pub mod detect;
pub mod export_quota;
pub mod limits;
pub mod watch;

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;
use clinicd_crypto::{BlindIndexSpec, Keyring, Normalizer};
use sqlx::PgPool;
use uuid::Uuid;

pub use abuse::{AbuseSettings, Kind, Signal, Threshold};
pub use blocks::{Block, BlockHit, BlockList};
pub use deliver::DeliverySettings;
pub use detect::DetectSettings;
pub use limits::{Decision, Rate, SharedLimiter};

/// Keyed hashes of login usernames and passwords in `abuse_signals`: 32 bits, enough to count
/// distinct values in a window, too short to test guesses against even with the table.
const USERNAME_HASH: BlindIndexSpec = BlindIndexSpec {
    table: "abuse_signals",
    column: "subject",
    bits: 32,
    normalizer: Normalizer::Exact,
};
const PASSWORD_HASH: BlindIndexSpec = BlindIndexSpec {
    table: "abuse_signals",
    column: "secondary",
    bits: 32,
    normalizer: Normalizer::Exact,
};

/// The settings of security operations.
#[derive(Debug, Clone)]
pub struct SecOpsSettings {
    /// Login, MFA, upload and export limits in Postgres, shared by every instance (several
    /// instances on one database); off keeps them in each process's memory (one instance).
    pub shared_limits: bool,
    pub abuse: AbuseSettings,
    pub detect: DetectSettings,
    pub delivery: DeliverySettings,
    /// The age in days at which a key's rotation is due (the dashboard and its metric).
    pub key_rotation_days: u32,
    /// Per-user daily limits on patients exported or downloaded, by role.
    pub export: export_quota::ExportLimits,
}

impl Default for SecOpsSettings {
    fn default() -> Self {
        Self {
            shared_limits: false,
            abuse: AbuseSettings::default(),
            detect: DetectSettings::default(),
            delivery: DeliverySettings {
                max_attempts: 8,
                per_hour: 30,
                ..DeliverySettings::default()
            },
            key_rotation_days: 365,
            export: export_quota::ExportLimits::default(),
        }
    }
}

/// The services of this crate for one process.
#[derive(Debug, Clone)]
pub struct SecOps {
    pub db: PgPool,
    pub settings: Arc<SecOpsSettings>,
    pub blocks: Arc<BlockList>,
    pub limiter: Option<SharedLimiter>,
    keyring: Arc<Keyring>,
    http: reqwest::Client,
}

impl SecOps {
    pub fn new(db: PgPool, keyring: Arc<Keyring>, settings: SecOpsSettings) -> Self {
        let limiter = settings
            .shared_limits
            .then(|| SharedLimiter::new(db.clone()));
        Self {
            blocks: BlockList::new(),
            limiter,
            keyring,
            http: reqwest::Client::new(),
            settings: Arc::new(settings),
            db,
        }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Starts following block changes (call once per process, inside a Tokio runtime).
    pub fn follow_blocks(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.blocks.clone().follow(self.db.clone()))
    }

    /// The block on this address, if any (memory only: no query).
    pub fn ip_blocked(&self, ip: IpAddr) -> Option<BlockHit> {
        if self.settings.abuse.allowed(ip) {
            return None;
        }
        self.blocks.ip(ip, Utc::now())
    }

    pub fn account_blocked(&self, user: Uuid) -> Option<BlockHit> {
        self.blocks.account(user, Utc::now())
    }

    /// Records a bad outcome; a threshold crossed blocks and alerts. The block list of this
    /// instance is reloaded at once (others follow the notification).
    pub async fn signal(&self, signal: Signal) -> Result<abuse::Outcome, abuse::AbuseError> {
        let outcome = abuse::record(
            &self.db,
            &self.keyring,
            &self.settings.abuse,
            self.settings.delivery.channels(),
            &signal,
        )
        .await?;
        if !outcome.blocks.is_empty() {
            self.blocks.reload(&self.db).await?;
            self.kick_delivery();
        }
        Ok(outcome)
    }

    /// A failed login's signal: keyed hashes of the username and the password.
    pub async fn login_failed(
        &self,
        ip: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<abuse::Outcome, DetectOrDb> {
        let hash = |index: Option<clinicd_crypto::BlindIndex>| index.map(|i| hex::encode(i.value));
        let subject = hash(
            self.keyring
                .blind_index(&USERNAME_HASH, &username.to_lowercase())
                .await?,
        )
        .unwrap_or_default();
        let secondary = hash(self.keyring.blind_index(&PASSWORD_HASH, password).await?);
        Ok(self
            .signal(Signal {
                kind: Kind::Login,
                ip,
                user: None,
                subject,
                secondary,
            })
            .await?)
    }

    /// A keyed hash of a value for shared counters and buckets (64 bits, under the blind-index
    /// key), so a username typed with a password in it never sits in a table in clear.
    pub async fn keyed(&self, value: &str) -> Result<String, clinicd_crypto::CryptoError> {
        const KEYED: BlindIndexSpec = BlindIndexSpec {
            table: "rate_buckets",
            column: "key",
            bits: 64,
            normalizer: Normalizer::Exact,
        };
        let index = self.keyring.blind_index(&KEYED, value).await?;
        Ok(index.map(|i| hex::encode(i.value)).unwrap_or_default())
    }

    /// Delivers due alerts now, in the background (the scheduled job retries what fails).
    pub fn kick_delivery(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.deliver().await {
                tracing::warn!(%error, "alert delivery pass failed");
            }
        });
    }

    pub async fn deliver(&self) -> Result<deliver::Pass, sqlx::Error> {
        deliver::deliver_due(&self.db, &self.settings.delivery, &self.http, 50).await
    }

    /// One detection run over the window before now.
    pub async fn detect(
        &self,
        family_name: &BlindIndexSpec,
    ) -> Result<detect::Report, detect::DetectError> {
        let report = detect::run(
            &self.db,
            &self.keyring,
            family_name,
            &self.settings.detect,
            self.settings.delivery.channels(),
            Utc::now(),
        )
        .await?;
        if report.new_alerts > 0 {
            self.kick_delivery();
        }
        Ok(report)
    }

    /// Counts `patient` against `user`'s daily export limit (`roles` pick the limit); over it,
    /// refuses and raises an alert.
    pub async fn take_export(
        &self,
        user: Uuid,
        roles: &[String],
        patient: Uuid,
    ) -> Result<export_quota::Quota, sqlx::Error> {
        let now = Utc::now();
        let limit = self.settings.export.for_roles(roles);
        let quota = export_quota::take(&self.db, user, patient, limit, now).await?;
        if let export_quota::Quota::Exceeded { limit, .. } = quota {
            export_quota::alert(
                &self.db,
                user,
                limit,
                self.settings.delivery.channels(),
                now,
            )
            .await?;
            self.kick_delivery();
        }
        Ok(quota)
    }

    pub async fn dashboard(&self) -> Result<dashboard::Dashboard, sqlx::Error> {
        dashboard::read(&self.db, self.settings.key_rotation_days).await
    }

    /// Upkeep: forgets old signals and full rate buckets.
    pub async fn forget(&self) -> Result<u64, sqlx::Error> {
        let signals = abuse::forget(&self.db, &self.settings.abuse).await?;
        export_quota::forget(&self.db, Utc::now()).await?;
        let buckets = SharedLimiter::new(self.db.clone()).prune().await?;
        Ok(signals + buckets)
    }
}

/// A failure that is either the key provider's or the database's.
#[derive(Debug, thiserror::Error)]
pub enum DetectOrDb {
    #[error(transparent)]
    Abuse(#[from] abuse::AbuseError),
    #[error(transparent)]
    Crypto(#[from] clinicd_crypto::CryptoError),
}

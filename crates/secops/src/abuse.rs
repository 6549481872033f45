//! Automatic blocking. Bad outcomes that show an attack pattern are recorded as signals (only
//! bad outcomes: a successful request writes nothing here), shared by every instance in the
//! UNLOGGED table `abuse_signals`; when a client crosses a rule's threshold it is blocked and an
//! alert raised, in one transaction, and the block reaches every instance by notification.
//!
//! | rule | signal | counted distinctly | per |
//! |---|---|---|---|
//! | `credential_stuffing` | failed login | usernames | address |
//! | `password_spraying` | failed login | accounts | password (keyed hash) |
//! | `enumeration` | 404 on a route that names a record id | records | address (and the account, if authenticated) |
//! | `token_probing` | a presented token refused | requests | address |
//! | `origin_refusal` | CORS or CSRF refusal | requests | address |
//!
//! Trusted proxies and allow-listed networks are never blocked (their signals are not even
//! recorded): behind them stand many clients, and blocking the proxy blocks the clinic.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::PgPool;
use uuid::Uuid;

use clinicd_audit::writer::append_in;
use clinicd_audit::{Action, NewEvent, Outcome as EventOutcome};
use clinicd_crypto::Keyring;

use crate::alerts::{self, Channels, NewAlert, Severity};
use crate::blocks::{self, Block, NewBlock, Source, Target};

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Failed login: `subject` a keyed hash of the username, `secondary` of the password.
    Login,
    /// 404 on a route naming a record: `subject` the path.
    Enumeration,
    /// A bearer token or session cookie that did not authenticate: `subject` unique per request.
    Token,
    /// A cross-origin or CSRF refusal: `subject` unique per request.
    Origin,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Enumeration => "enumeration",
            Self::Token => "token",
            Self::Origin => "origin",
        }
    }
}

/// One bad outcome.
#[derive(Debug, Clone)]
pub struct Signal {
    pub kind: Kind,
    pub ip: IpAddr,
    pub user: Option<Uuid>,
    pub subject: String,
    pub secondary: Option<String>,
}

/// A threshold: `count` distinct subjects within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub count: u32,
    pub window: Duration,
}

/// The rules' thresholds and the blocks they place.
#[derive(Debug, Clone)]
pub struct AbuseSettings {
    pub stuffing: Threshold,
    pub spraying: Threshold,
    pub enumeration: Threshold,
    pub token: Threshold,
    pub origin: Threshold,
    /// The first automatic block's length; repeats escalate (`blocks::escalated`).
    pub block_for: Duration,
    /// Never blocked: the trusted proxies and the configured allow-list.
    pub allow: Vec<IpNet>,
}

impl Default for AbuseSettings {
    fn default() -> Self {
        let t = |count, secs| Threshold {
            count,
            window: Duration::from_secs(secs),
        };
        Self {
            stuffing: t(10, 600),
            spraying: t(10, 600),
            enumeration: t(30, 300),
            token: t(30, 300),
            origin: t(30, 300),
            block_for: Duration::from_secs(900),
            allow: Vec::new(),
        }
    }
}

impl AbuseSettings {
    pub fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip))
    }

    /// The longest window, kept in the signals table.
    pub fn longest_window(&self) -> Duration {
        [
            self.stuffing,
            self.spraying,
            self.enumeration,
            self.token,
            self.origin,
        ]
        .iter()
        .map(|t| t.window)
        .max()
        .unwrap_or(Duration::from_secs(600))
    }
}

/// What recording a signal led to.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub blocks: Vec<Block>,
}

/// Records a signal and blocks the address (and, for an authenticated caller's enumeration, the
/// account) when a threshold is crossed.
pub async fn record(
    db: &PgPool,
    keyring: &Keyring,
    settings: &AbuseSettings,
    channels: Channels,
    signal: &Signal,
) -> Result<Outcome, AbuseError> {
    if settings.allowed(signal.ip) {
        return Ok(Outcome::default());
    }
    let ip = signal.ip.to_string();
    sqlx::query!(
        "INSERT INTO abuse_signals (kind, ip, user_id, subject, secondary) VALUES ($1, $2::text::inet, $3, $4, $5)",
        signal.kind.as_str(),
        ip,
        signal.user,
        signal.subject,
        signal.secondary
    )
    .execute(db)
    .await?;
    let mut findings = Vec::new();
    let per_ip = match signal.kind {
        Kind::Login => ("credential_stuffing", settings.stuffing, "usernames"),
        Kind::Enumeration => ("enumeration", settings.enumeration, "resources"),
        Kind::Token => ("token_probing", settings.token, "refused tokens"),
        Kind::Origin => (
            "origin_refusal",
            settings.origin,
            "refused cross-origin or CSRF requests",
        ),
    };
    let by_ip = distinct_by_ip(db, signal.kind, &ip, per_ip.1.window).await?;
    if by_ip >= i64::from(per_ip.1.count) {
        findings.push(Finding {
            rule: per_ip.0,
            ips: vec![signal.ip],
            user: signal.user.filter(|_| signal.kind == Kind::Enumeration),
            summary: format!(
                "{} {} from address {} within {} s (threshold {})",
                by_ip,
                per_ip.2,
                signal.ip,
                per_ip.1.window.as_secs(),
                per_ip.1.count
            ),
            evidence: serde_json::json!({
                "count": by_ip, "threshold": per_ip.1.count, "window_secs": per_ip.1.window.as_secs(),
                "ip": ip, "signal": signal.kind.as_str(),
            }),
        });
    }
    if let (Kind::Login, Some(password)) = (signal.kind, signal.secondary.as_deref()) {
        let spray = sqlx::query!(
            r#"SELECT count(DISTINCT subject) AS "accounts!", array_agg(DISTINCT host(ip)) AS "ips!"
                 FROM abuse_signals
                WHERE kind = 'login' AND secondary = $1 AND at > now() - make_interval(secs => $2::bigint)"#,
            password,
            i64::try_from(settings.spraying.window.as_secs()).unwrap_or(i64::MAX)
        )
        .fetch_one(db)
        .await?;
        if spray.accounts >= i64::from(settings.spraying.count) {
            let ips: Vec<IpAddr> = spray.ips.iter().filter_map(|i| i.parse().ok()).collect();
            findings.push(Finding {
                rule: "password_spraying",
                summary: format!(
                    "one password tried against {} accounts from {} address(es) within {} s (threshold {})",
                    spray.accounts,
                    ips.len(),
                    settings.spraying.window.as_secs(),
                    settings.spraying.count
                ),
                evidence: serde_json::json!({
                    "accounts": spray.accounts, "threshold": settings.spraying.count,
                    "window_secs": settings.spraying.window.as_secs(), "ips": spray.ips,
                }),
                ips,
                user: None,
            });
        }
    }
    let mut outcome = Outcome::default();
    for finding in findings {
        outcome
            .blocks
            .extend(block(db, keyring, settings, channels, finding).await?);
    }
    Ok(outcome)
}

struct Finding {
    rule: &'static str,
    ips: Vec<IpAddr>,
    user: Option<Uuid>,
    summary: String,
    evidence: serde_json::Value,
}

async fn distinct_by_ip(
    db: &PgPool,
    kind: Kind,
    ip: &str,
    window: Duration,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(DISTINCT subject) AS "n!" FROM abuse_signals
            WHERE kind = $1 AND ip = $2::text::inet AND at > now() - make_interval(secs => $3::bigint)"#,
        kind.as_str(),
        ip,
        i64::try_from(window.as_secs()).unwrap_or(i64::MAX)
    )
    .fetch_one(db)
    .await
}

/// Blocks each address (and account) of a finding not already blocked, raises one alert, all in
/// one transaction; serialised per rule so two instances crossing the threshold at once place
/// one block, not two.
async fn block(
    db: &PgPool,
    keyring: &Keyring,
    settings: &AbuseSettings,
    channels: Channels,
    finding: Finding,
) -> Result<Vec<Block>, AbuseError> {
    let now = Utc::now();
    let mut tx = db.begin().await?;
    sqlx::query_scalar!(
        r#"SELECT true AS "locked!" FROM pg_advisory_xact_lock(hashtext('clinicd_blocks'))"#
    )
    .fetch_one(&mut *tx)
    .await?;
    let mut targets: Vec<Target> = finding
        .ips
        .iter()
        .filter(|ip| !settings.allowed(**ip))
        .map(|ip| Target::Network(IpNet::from(*ip)))
        .collect();
    targets.extend(finding.user.map(Target::Account));
    let mut placed = Vec::new();
    for target in targets {
        if already_blocked(&mut tx, &target, now).await? {
            continue;
        }
        let block = NewBlock {
            target,
            source: Source::Automatic,
            rule: finding.rule.into(),
            reason: finding.summary.clone(),
            evidence: finding.evidence.clone(),
            created_by: None,
            duration: settings.block_for,
        };
        placed.push(blocks::place(&mut tx, &block, now).await?);
    }
    if !placed.is_empty() {
        let first_ip = finding.ips.first().map(ToString::to_string);
        let alert = NewAlert {
            rule: format!("block:{}", finding.rule),
            severity: Severity::High,
            dedup_key: format!(
                "block:{}:{}",
                finding.rule,
                first_ip
                    .clone()
                    .or(finding.user.map(|u| u.to_string()))
                    .unwrap_or_default()
            ),
            subject_user: finding.user,
            subject_ip: first_ip,
            summary: format!("blocked: {}", finding.summary),
            evidence: serde_json::json!({
                "blocks": placed.iter().map(|b| b.id).collect::<Vec<_>>(),
                "finding": finding.evidence,
            }),
        };
        alerts::raise(&mut tx, &alert, channels, now).await?;
        let events: Vec<NewEvent> = placed.iter().map(block_event).collect();
        let refs: Vec<&NewEvent> = events.iter().collect();
        append_in(&mut tx, keyring, &refs).await?;
    }
    tx.commit().await?;
    for block in &placed {
        tracing::warn!(block = %block.id, rule = %block.rule, target = %block.target, offence = block.offence, "automatic block placed");
    }
    Ok(placed)
}

/// The trail's record of an automatic block: a system event naming the block, its target and
/// rule (the evidence stays in `blocks`).
fn block_event(block: &Block) -> NewEvent {
    let mut event = NewEvent::new(Action::SecurityEvent, EventOutcome::Success);
    event.resource_type = Some("block".into());
    event.resource_id = Some(block.id.to_string());
    event.client_ip.clone_from(&block.network);
    event.reason = Some(block.rule.clone());
    event.user_agent = Some(format!("clinicd/{} secops", env!("CARGO_PKG_VERSION")));
    event.metadata = serde_json::json!({
        "kind": "automatic_block", "target": block.target, "network": block.network,
        "user_id": block.user_id, "offence": block.offence, "expires_at": block.expires_at,
    });
    event
}

/// Why recording a signal failed.
#[derive(Debug, thiserror::Error)]
pub enum AbuseError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] clinicd_audit::AuditError),
}

async fn already_blocked(
    conn: &mut sqlx::PgConnection,
    target: &Target,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let (network, user) = match target {
        Target::Network(net) => (Some(net.to_string()), None),
        Target::Account(user) => (None, Some(*user)),
    };
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM blocks WHERE lifted_at IS NULL AND expires_at > $3
                             AND ((network >>= $1::text::inet) OR user_id = $2)) AS "x!""#,
        network,
        user,
        now
    )
    .fetch_one(&mut *conn)
    .await
}

/// Forgets signals older than the longest window; returns how many.
pub async fn forget(db: &PgPool, settings: &AbuseSettings) -> Result<u64, sqlx::Error> {
    let secs = i64::try_from(settings.longest_window().as_secs()).unwrap_or(i64::MAX);
    let done = sqlx::query!(
        "DELETE FROM abuse_signals WHERE at < now() - make_interval(secs => $1::bigint)",
        secs
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

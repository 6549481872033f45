//! Blocks of client addresses and accounts: stored in `blocks`, held in memory by every
//! instance and reloaded when Postgres notifies a change (`LISTEN clinicd_blocks`), so a block
//! or an unblock made on one instance holds on the others within a second. A full reload every
//! 30 s backs the notifications up (a listener reconnecting may miss one).
//!
//! A block expires on its own. A repeat offender's next automatic block lasts longer: the base
//! duration times 4 for each earlier block of the same target in the last 30 days, capped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Serialize;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The channel the `blocks_changed` trigger notifies.
pub const CHANNEL: &str = "clinicd_blocks";
/// How often blocks are reloaded whatever the notifications say.
const FULL_RELOAD: Duration = Duration::from_secs(30);

/// What a block stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Network(IpNet),
    Account(Uuid),
}

/// A block as the list and the admin API show it.
#[derive(Debug, Clone, Serialize)]
pub struct Block {
    pub id: Uuid,
    /// `ip` or `account`.
    pub target: String,
    /// The blocked address or network (CIDR) for an `ip` block.
    pub network: Option<String>,
    pub user_id: Option<Uuid>,
    /// `automatic` or `manual`.
    pub source: String,
    pub rule: String,
    pub reason: String,
    /// What the rule saw: counts, windows, audit event ids; never PHI.
    pub evidence: serde_json::Value,
    /// 1 for a first block, n for the n-th in 30 days.
    pub offence: i32,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub lifted_at: Option<DateTime<Utc>>,
    pub lifted_by: Option<Uuid>,
    pub lift_reason: Option<String>,
}

impl Block {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.lifted_at.is_none() && self.expires_at > now
    }
}

/// What a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHit {
    pub id: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// A new block.
#[derive(Debug, Clone)]
pub struct NewBlock {
    pub target: Target,
    pub source: Source,
    pub rule: String,
    pub reason: String,
    pub evidence: serde_json::Value,
    pub created_by: Option<Uuid>,
    /// For a manual block: exactly this long. For an automatic one: the base, escalated.
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Automatic,
    Manual,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::Manual => "manual",
        }
    }
}

/// The longest automatic block: a week.
pub const MAX_AUTOMATIC: Duration = Duration::from_secs(7 * 86_400);

/// The duration of an automatic block for the `offence`-th block of a target in 30 days.
pub fn escalated(base: Duration, offence: u32) -> Duration {
    let factor = 4u32.saturating_pow(offence.saturating_sub(1));
    base.saturating_mul(factor).min(MAX_AUTOMATIC).max(base)
}

/// Places a block in `conn`'s transaction; the trigger notifies every instance at commit.
pub async fn place(
    conn: &mut PgConnection,
    block: &NewBlock,
    now: DateTime<Utc>,
) -> Result<Block, sqlx::Error> {
    let (network, user) = match &block.target {
        Target::Network(net) => (Some(net.to_string()), None),
        Target::Account(user) => (None, Some(*user)),
    };
    let earlier = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM blocks
            WHERE created_at > $3::timestamptz - interval '30 days'
              AND (network = $1::text::cidr OR user_id = $2)"#,
        network,
        user,
        now
    )
    .fetch_one(&mut *conn)
    .await?;
    let offence = u32::try_from(earlier).unwrap_or(u32::MAX).saturating_add(1);
    let duration = match block.source {
        Source::Automatic => escalated(block.duration, offence),
        Source::Manual => block.duration,
    };
    let expires = now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::days(7));
    let id = Uuid::now_v7();
    let target = if network.is_some() { "ip" } else { "account" };
    sqlx::query!(
        "INSERT INTO blocks (id, target, network, user_id, source, rule, reason, evidence, offence, \
                             created_by, created_at, expires_at) \
         VALUES ($1, $2, $3::text::cidr, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        id,
        target,
        network,
        user,
        block.source.as_str(),
        block.rule,
        block.reason,
        block.evidence,
        i32::try_from(offence).unwrap_or(i32::MAX),
        block.created_by,
        now,
        expires
    )
    .execute(&mut *conn)
    .await?;
    Ok(Block {
        id,
        target: target.into(),
        network,
        user_id: user,
        source: block.source.as_str().into(),
        rule: block.rule.clone(),
        reason: block.reason.clone(),
        evidence: block.evidence.clone(),
        offence: i32::try_from(offence).unwrap_or(i32::MAX),
        created_by: block.created_by,
        created_at: now,
        expires_at: expires,
        lifted_at: None,
        lifted_by: None,
        lift_reason: None,
    })
}

/// Lifts an active block; `None` if there is no active block with this id.
pub async fn lift(
    conn: &mut PgConnection,
    id: Uuid,
    by: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<Block>, sqlx::Error> {
    let lifted = sqlx::query_scalar!(
        "UPDATE blocks SET lifted_at = $2, lifted_by = $3, lift_reason = $4 \
          WHERE id = $1 AND lifted_at IS NULL AND expires_at > $2 RETURNING id",
        id,
        now,
        by,
        reason
    )
    .fetch_optional(&mut *conn)
    .await?;
    match lifted {
        Some(id) => get(conn, id).await,
        None => Ok(None),
    }
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Block>, sqlx::Error> {
    sqlx::query_as!(
        Block,
        r#"SELECT id, target, network::text AS network, user_id, source, rule, reason, evidence,
                  offence, created_by, created_at, expires_at, lifted_at, lifted_by, lift_reason
             FROM blocks WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await
}

/// Blocks, newest first: only active ones, or the history too.
pub async fn list(db: &PgPool, active_only: bool, limit: i64) -> Result<Vec<Block>, sqlx::Error> {
    sqlx::query_as!(
        Block,
        r#"SELECT id, target, network::text AS network, user_id, source, rule, reason, evidence,
                  offence, created_by, created_at, expires_at, lifted_at, lifted_by, lift_reason
             FROM blocks
            WHERE NOT $1 OR (lifted_at IS NULL AND expires_at > now())
            ORDER BY created_at DESC LIMIT $2"#,
        active_only,
        limit
    )
    .fetch_all(db)
    .await
}

/// The active blocks, in memory: checked on every request without a query.
#[derive(Debug, Default)]
pub struct BlockList {
    snapshot: RwLock<Snapshot>,
    /// Whether the last reload or the listener failed (then the list may be stale).
    stale: AtomicBool,
}

/// Single addresses (what automatic blocks place, possibly thousands during an attack) in a
/// hash map, so a request's check stays constant-time; wider networks (manual, few) scanned.
#[derive(Debug, Default)]
struct Snapshot {
    hosts: HashMap<IpAddr, BlockHit>,
    networks: Vec<(IpNet, BlockHit)>,
    accounts: HashMap<Uuid, BlockHit>,
}

impl BlockList {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn ip(&self, ip: IpAddr, now: DateTime<Utc>) -> Option<BlockHit> {
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let host = snapshot.hosts.get(&ip).filter(|hit| hit.expires_at > now);
        host.or_else(|| {
            snapshot
                .networks
                .iter()
                .find(|(net, hit)| hit.expires_at > now && net.contains(&ip))
                .map(|(_, hit)| hit)
        })
        .copied()
    }

    pub fn account(&self, user: Uuid, now: DateTime<Utc>) -> Option<BlockHit> {
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        snapshot
            .accounts
            .get(&user)
            .filter(|hit| hit.expires_at > now)
            .copied()
    }

    /// How many blocks are held (active when loaded).
    pub fn len(&self) -> usize {
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        snapshot.hosts.len() + snapshot.networks.len() + snapshot.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Replaces the list with the active blocks in the database.
    pub async fn reload(&self, db: &PgPool) -> Result<(), sqlx::Error> {
        let rows = sqlx::query!(
            r#"SELECT id, network::text AS network, user_id, expires_at FROM blocks
                WHERE lifted_at IS NULL AND expires_at > now()"#
        )
        .fetch_all(db)
        .await
        .inspect_err(|_| self.stale.store(true, Ordering::Relaxed))?;
        let mut next = Snapshot::default();
        for row in rows {
            let hit = BlockHit {
                id: row.id,
                expires_at: row.expires_at,
            };
            if let Some(net) = row.network.as_deref().and_then(|n| n.parse::<IpNet>().ok()) {
                if net.prefix_len() == net.max_prefix_len() {
                    keep_longest(&mut next.hosts, net.addr(), hit);
                } else {
                    next.networks.push((net, hit));
                }
            } else if let Some(user) = row.user_id {
                keep_longest(&mut next.accounts, user, hit);
            }
        }
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.stale.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Keeps the list current until the process ends: reloads on every notification and every
    /// 30 s; reconnects the listener after an error.
    pub async fn follow(self: Arc<Self>, db: PgPool) {
        loop {
            if let Err(error) = self.listen(&db).await {
                self.stale.store(true, Ordering::Relaxed);
                tracing::warn!(%error, "block list listener failed; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }

    async fn listen(&self, db: &PgPool) -> Result<(), sqlx::Error> {
        // A connection of its own, outside the server's pool: a listener holds it for good.
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*db.connect_options()).clone());
        let mut listener = PgListener::connect_with(&own).await?;
        listener.listen(CHANNEL).await?;
        // Anything placed while the listener was down.
        self.reload(db).await?;
        loop {
            match tokio::time::timeout(FULL_RELOAD, listener.recv()).await {
                Ok(Ok(_)) => {
                    // Several changes at once (an attack blocked from many addresses): one reload.
                    while listener.next_buffered().is_some() {}
                    self.reload(db).await?;
                }
                Ok(Err(error)) => return Err(error),
                Err(_elapsed) => self.reload(db).await?,
            }
        }
    }
}

/// Two active blocks of one target (a manual one over an automatic one): the later expiry holds.
fn keep_longest<K: std::hash::Hash + Eq>(map: &mut HashMap<K, BlockHit>, key: K, hit: BlockHit) {
    let entry = map.entry(key).or_insert(hit);
    if hit.expires_at > entry.expires_at {
        *entry = hit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_offenders_are_blocked_longer_up_to_a_week() {
        let base = Duration::from_secs(900);
        assert_eq!(escalated(base, 1), base);
        assert_eq!(escalated(base, 2), base * 4);
        assert_eq!(escalated(base, 3), base * 16);
        assert_eq!(escalated(base, 12), MAX_AUTOMATIC);
    }
}

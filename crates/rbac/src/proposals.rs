//! Dual control: changes that hand out access to clinical data (or administration itself) take
//! two administrators. The first proposes, and the change waits in `access_proposals`; another
//! administrator approves it (or anyone with `user:manage` rejects it) before it expires. Who
//! proposed cannot approve, and nobody approves a change to their own account. docs/rbac.md
//! lists which changes need it and why.
//!
//! This module keeps the proposals; applying an approved one is the caller's (the API, or the
//! command line for a clinic with a single administrator), in the transaction that records the
//! decision and its audit event.

use chrono::{DateTime, Duration, Utc};
use clinicd_identity::users::UserId;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::error::RbacError;

/// How long a proposal waits for a second administrator unless configured otherwise.
pub const DEFAULT_TTL_HOURS: u32 = 72;

/// What a proposal would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// Set a user's roles to `payload.roles`.
    UserRoles,
    /// Replace a custom role's content with `payload` (description, permissions, ...).
    RolePermissions,
    /// Change a user's e-mail address (where one-time passwords go) to `payload.email`.
    UserEmail,
    UserEnable,
    UserDisable,
    UserResetPassword,
    UserResetMfa,
}

impl ProposalKind {
    pub const ALL: [ProposalKind; 7] = [
        Self::UserRoles,
        Self::RolePermissions,
        Self::UserEmail,
        Self::UserEnable,
        Self::UserDisable,
        Self::UserResetPassword,
        Self::UserResetMfa,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserRoles => "user_roles",
            Self::RolePermissions => "role_permissions",
            Self::UserEmail => "user_email",
            Self::UserEnable => "user_enable",
            Self::UserDisable => "user_disable",
            Self::UserResetPassword => "user_reset_password",
            Self::UserResetMfa => "user_reset_mfa",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the target is a user account (else a role, by name).
    pub fn targets_user(self) -> bool {
        self != Self::RolePermissions
    }
}

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
}

impl ProposalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }
}

/// A proposal as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub id: Uuid,
    pub kind: ProposalKind,
    /// A user id, or a role name for [`ProposalKind::RolePermissions`].
    pub target: String,
    pub payload: Value,
    pub proposed_by: Uuid,
    pub proposed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `None` with a decision: approved at the command line.
    pub decided_by: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
    decision: Option<String>,
}

impl Proposal {
    pub fn status(&self, now: DateTime<Utc>) -> ProposalStatus {
        match self.decision.as_deref() {
            Some("approved") => ProposalStatus::Approved,
            Some(_) => ProposalStatus::Rejected,
            None if now >= self.expires_at => ProposalStatus::Expired,
            None => ProposalStatus::Pending,
        }
    }

    /// The target as a user, for the kinds that target one.
    pub fn target_user(&self) -> Option<UserId> {
        self.kind
            .targets_user()
            .then(|| self.target.parse().ok().map(UserId))
            .flatten()
    }

    /// The proposal as an audit before/after value.
    pub fn audit_value(&self, now: DateTime<Utc>) -> Value {
        serde_json::json!({
            "id": self.id,
            "kind": self.kind.as_str(),
            "target": self.target,
            "payload": self.payload,
            "proposed_by": self.proposed_by,
            "expires_at": self.expires_at,
            "status": self.status(now).as_str(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    kind: String,
    target: String,
    payload: Value,
    proposed_by: Uuid,
    proposed_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    decided_by: Option<Uuid>,
    decided_at: Option<DateTime<Utc>>,
    decision: Option<String>,
}

impl TryFrom<Row> for Proposal {
    type Error = RbacError;

    fn try_from(row: Row) -> Result<Self, RbacError> {
        Ok(Self {
            id: row.id,
            // The table's constraint admits only known kinds.
            kind: ProposalKind::parse(&row.kind).ok_or(RbacError::NotFound)?,
            target: row.target,
            payload: row.payload,
            proposed_by: row.proposed_by,
            proposed_at: row.proposed_at,
            expires_at: row.expires_at,
            decided_by: row.decided_by,
            decided_at: row.decided_at,
            decision: row.decision,
        })
    }
}

/// A new proposal, in the caller's transaction.
pub async fn propose(
    tx: &mut PgConnection,
    kind: ProposalKind,
    target: &str,
    payload: Value,
    by: UserId,
    now: DateTime<Utc>,
    ttl_hours: u32,
) -> Result<Proposal, RbacError> {
    let row: Row = sqlx::query_as!(Row, "INSERT INTO access_proposals (id, kind, target, payload, proposed_by, proposed_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, kind, target, payload, proposed_by, proposed_at, expires_at, decided_by, decided_at, decision", Uuid::now_v7(), kind.as_str(), target, payload, by.0, now, now + Duration::hours(i64::from(ttl_hours)))
    .fetch_one(tx)
    .await?;
    row.try_into()
}

pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Proposal>, RbacError> {
    let row: Option<Row> = sqlx::query_as!(Row, "SELECT id, kind, target, payload, proposed_by, proposed_at, expires_at, decided_by, decided_at, decision FROM access_proposals WHERE id = $1", id)
    .fetch_optional(db)
    .await?;
    row.map(Proposal::try_from).transpose()
}

/// Proposals, newest first: pending ones only (not decided, not expired), or all.
pub async fn list(
    db: impl PgExecutor<'_>,
    pending_only: bool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Proposal>, RbacError> {
    let rows: Vec<Row> = sqlx::query_as!(Row, "SELECT id, kind, target, payload, proposed_by, proposed_at, expires_at, decided_by, decided_at, decision FROM access_proposals \
         WHERE NOT $1 OR (decision IS NULL AND expires_at > $2) \
         ORDER BY proposed_at DESC, id DESC LIMIT $3", pending_only, now, limit)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(Proposal::try_from).collect()
}

/// Locks a proposal that is still pending for its decision. `decider` is `None` at the
/// command line (the operator of the server is the second person there).
pub async fn for_decision(
    tx: &mut PgConnection,
    id: Uuid,
    decider: Option<UserId>,
    approving: bool,
    now: DateTime<Utc>,
) -> Result<Proposal, RbacError> {
    let row: Option<Row> = sqlx::query_as!(Row, "SELECT id, kind, target, payload, proposed_by, proposed_at, expires_at, decided_by, decided_at, decision FROM access_proposals WHERE id = $1 FOR UPDATE", id)
    .fetch_optional(&mut *tx)
    .await?;
    let proposal = Proposal::try_from(row.ok_or(RbacError::NotFound)?)?;
    match proposal.status(now) {
        ProposalStatus::Pending => {}
        ProposalStatus::Expired => return Err(RbacError::ProposalExpired),
        ProposalStatus::Approved | ProposalStatus::Rejected => {
            return Err(RbacError::ProposalDecided);
        }
    }
    if let (true, Some(decider)) = (approving, decider) {
        if decider.0 == proposal.proposed_by {
            return Err(RbacError::OwnProposal);
        }
        if proposal.target_user() == Some(decider) {
            return Err(RbacError::OwnRoles);
        }
    }
    Ok(proposal)
}

/// Records the decision on a proposal locked by [`for_decision`].
pub async fn decide(
    tx: &mut PgConnection,
    id: Uuid,
    decider: Option<UserId>,
    approved: bool,
    now: DateTime<Utc>,
) -> Result<(), RbacError> {
    sqlx::query!(
        "UPDATE access_proposals SET decided_by = $2, decided_at = $3, decision = $4 \
         WHERE id = $1 AND decision IS NULL",
        id,
        decider.map(|d| d.0),
        now,
        if approved { "approved" } else { "rejected" }
    )
    .execute(tx)
    .await?;
    Ok(())
}

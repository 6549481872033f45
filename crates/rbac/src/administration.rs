//! Account and role administration under dual control (docs/rbac.md, "Dual control").
//!
//! An administrator asks for a [`Change`]; it is checked at once (what the actor may grant,
//! their own account, the last administrator), then either applied or, when it hands out
//! access to clinical data or administration, recorded as a proposal that a second
//! administrator approves ([`approve`]). Both paths apply a change the same way, in the
//! caller's transaction, which commits it with its audit event; each returns the before and
//! after values that event seals.
//!
//! | change | needs a second administrator when |
//! |---|---|
//! | a user's roles | a role added reaches a dual-control permission |
//! | a custom role's content | it widens the role by a dual-control permission |
//! | a user's e-mail address | the account reaches a dual-control permission |
//! | enabling an account | the account reaches a dual-control permission |
//! | disabling, password reset, MFA reset | the account administers (users, roles or keys) |

use chrono::{DateTime, Utc};
use clinicd_identity::Identity;
use clinicd_identity::admin::{AdminAct, AdminError};
use clinicd_identity::users::{self, Email, UserError, UserId};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::PgConnection;

use crate::error::RbacError;
use crate::grants::{self, Grants};
use crate::permission::Permissions;
use crate::proposals::{self, Proposal, ProposalKind};
use crate::roles::{self, Role, RoleSpec};

/// One administrative change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Roles { user: UserId, roles: Vec<String> },
    Role { name: String, spec: RoleSpec },
    Email { user: UserId, email: Email },
    Enable(UserId),
    Disable(UserId),
    ResetPassword(UserId),
    ResetMfa(UserId),
}

/// What became of a change.
#[derive(Debug)]
pub enum Outcome {
    Applied(Applied),
    /// Waiting for a second administrator; `before` and `after` are the state now and the
    /// state the proposal would make.
    Proposed {
        proposal: Proposal,
        before: Value,
        after: Value,
    },
}

/// A change that took effect.
#[derive(Debug)]
pub struct Applied {
    pub before: Value,
    pub after: Value,
    /// A reset's one-time password, for the caller to deliver to the account's owner.
    pub credential: Option<SecretString>,
}

/// Who acts, and the settings dual control needs.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub grants: &'a Grants,
    pub now: DateTime<Utc>,
    pub proposal_ttl_hours: u32,
}

impl Change {
    fn kind(&self) -> ProposalKind {
        match self {
            Self::Roles { .. } => ProposalKind::UserRoles,
            Self::Role { .. } => ProposalKind::RolePermissions,
            Self::Email { .. } => ProposalKind::UserEmail,
            Self::Enable(_) => ProposalKind::UserEnable,
            Self::Disable(_) => ProposalKind::UserDisable,
            Self::ResetPassword(_) => ProposalKind::UserResetPassword,
            Self::ResetMfa(_) => ProposalKind::UserResetMfa,
        }
    }

    fn target(&self) -> String {
        match self {
            Self::Role { name, .. } => name.clone(),
            Self::Roles { user, .. }
            | Self::Email { user, .. }
            | Self::Enable(user)
            | Self::Disable(user)
            | Self::ResetPassword(user)
            | Self::ResetMfa(user) => user.0.to_string(),
        }
    }

    fn payload(&self) -> Value {
        match self {
            Self::Roles { roles, .. } => serde_json::json!({ "roles": roles }),
            Self::Role { spec, .. } => serde_json::json!({
                "description": spec.description,
                "permissions": spec.permissions.names(),
                "delegable": spec.delegable.names(),
                "privileged": spec.privileged,
            }),
            Self::Email { email, .. } => serde_json::json!({ "email": email.as_str() }),
            _ => serde_json::json!({}),
        }
    }

    /// The change a stored proposal describes (its payload was checked when it was made).
    pub fn of(proposal: &Proposal) -> Result<Self, RbacError> {
        let corrupt = || RbacError::NotFound;
        let user = || proposal.target_user().ok_or_else(corrupt);
        let strings = |field: &str| -> Result<Vec<String>, RbacError> {
            serde_json::from_value(proposal.payload.get(field).cloned().unwrap_or_default())
                .map_err(|_| corrupt())
        };
        Ok(match proposal.kind {
            ProposalKind::UserRoles => Self::Roles {
                user: user()?,
                roles: strings("roles")?,
            },
            ProposalKind::RolePermissions => Self::Role {
                name: proposal.target.clone(),
                spec: RoleSpec {
                    description: proposal
                        .payload
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    permissions: Permissions::parse_names(&strings("permissions")?)
                        .map_err(|_| corrupt())?,
                    delegable: Permissions::parse_names(&strings("delegable")?)
                        .map_err(|_| corrupt())?,
                    privileged: proposal
                        .payload
                        .get("privileged")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                },
            },
            ProposalKind::UserEmail => Self::Email {
                user: user()?,
                email: proposal
                    .payload
                    .get("email")
                    .and_then(Value::as_str)
                    .and_then(|e| Email::parse(e).ok())
                    .ok_or_else(corrupt)?,
            },
            ProposalKind::UserEnable => Self::Enable(user()?),
            ProposalKind::UserDisable => Self::Disable(user()?),
            ProposalKind::UserResetPassword => Self::ResetPassword(user()?),
            ProposalKind::UserResetMfa => Self::ResetMfa(user()?),
        })
    }
}

/// Asks for a change: applies it, or proposes it when it needs a second administrator.
pub async fn request(
    tx: &mut PgConnection,
    identity: &Identity,
    actor: Actor<'_>,
    change: Change,
) -> Result<Outcome, RbacError> {
    let dual = check(tx, actor.grants, &change).await?;
    if !dual {
        return apply(tx, identity, actor.grants, &change)
            .await
            .map(Outcome::Applied);
    }
    let before = current(tx, &change).await?;
    let proposal = proposals::propose(
        tx,
        change.kind(),
        &change.target(),
        change.payload(),
        actor.grants.user,
        actor.now,
        actor.proposal_ttl_hours,
    )
    .await?;
    Ok(Outcome::Proposed {
        after: projected(&before, change.payload()),
        proposal,
        before,
    })
}

/// Creates an account and asks for its roles, in the caller's transaction: the account and its
/// roles (or the proposal for them) commit together with the audit event, or not at all. The
/// roles go through [`request`] like any change of roles, so dual control holds for a new
/// account as for an existing one.
pub async fn create_user(
    tx: &mut PgConnection,
    identity: &Identity,
    actor: Actor<'_>,
    user: users::NewUser,
    roles: Vec<String>,
) -> Result<(UserId, Outcome), RbacError> {
    let id = users::create(&mut *tx, user).await.map_err(user_error)?;
    let outcome = request(tx, identity, actor, Change::Roles { user: id, roles }).await?;
    Ok((id, outcome))
}

/// The state a proposal would make: `before` with the payload's fields in place.
fn projected(before: &Value, payload: Value) -> Value {
    match (before, payload) {
        (Value::Object(before), Value::Object(payload)) => {
            let mut after = before.clone();
            after.extend(payload);
            Value::Object(after)
        }
        (_, payload) => payload,
    }
}

/// Approves a pending proposal: the approver (not its proposer, not its target) must be able
/// to make the change themselves, checked again now. `None` approves at the command line.
pub async fn approve(
    tx: &mut PgConnection,
    identity: &Identity,
    approver: Option<&Grants>,
    id: uuid::Uuid,
    now: DateTime<Utc>,
) -> Result<(Proposal, Applied), RbacError> {
    let decider = approver.map(|g| g.user);
    let proposal = proposals::for_decision(tx, id, decider, true, now).await?;
    let change = Change::of(&proposal)?;
    // At the command line the proposer's own rights bound the change, as when they asked.
    let grants = match approver {
        Some(grants) => grants.clone(),
        None => grants::load(&mut *tx, UserId(proposal.proposed_by)).await?,
    };
    check(tx, &grants, &change).await?;
    let applied = apply(tx, identity, &grants, &change).await?;
    proposals::decide(tx, id, decider, true, now).await?;
    Ok((proposal, applied))
}

/// Rejects (or, for its proposer, withdraws) a pending proposal.
pub async fn reject(
    tx: &mut PgConnection,
    decider: UserId,
    id: uuid::Uuid,
    now: DateTime<Utc>,
) -> Result<Proposal, RbacError> {
    let proposal = proposals::for_decision(tx, id, Some(decider), false, now).await?;
    proposals::decide(tx, id, Some(decider), false, now).await?;
    Ok(proposal)
}

/// Checks that `actor` may make the change; `true` if it needs a second administrator.
async fn check(tx: &mut PgConnection, actor: &Grants, change: &Change) -> Result<bool, RbacError> {
    match change {
        Change::Roles { user, roles } => {
            let plan = roles::plan_user_roles(tx, actor, *user, roles).await?;
            Ok(plan.needs_dual_control())
        }
        Change::Role { name, spec } => {
            let before = roles::check_update(tx, actor, name, spec).await?;
            let widened = spec
                .permissions
                .union(spec.delegable)
                .missing_from(before.reach());
            Ok(!widened.dual_control().is_empty())
        }
        Change::Email { user, .. } | Change::Enable(user) => {
            let target = target(tx, actor, *user).await?;
            Ok(!target.grantable().dual_control().is_empty())
        }
        Change::Disable(user) | Change::ResetPassword(user) | Change::ResetMfa(user) => {
            let target = target(tx, actor, *user).await?;
            if matches!(change, Change::Disable(_)) {
                roles::guard_last_admin(tx, *user).await?;
            }
            Ok(target.permissions.administers())
        }
    }
}

/// The target account's grants, if `actor` may act on it at all.
async fn target(tx: &mut PgConnection, actor: &Grants, user: UserId) -> Result<Grants, RbacError> {
    if users::summary(&mut *tx, user)
        .await
        .map_err(user_error)?
        .is_none()
    {
        return Err(RbacError::NotFound);
    }
    roles::guard_target(&mut *tx, actor, user).await?;
    Ok(grants::load(&mut *tx, user).await?)
}

/// The state a change starts from, as an audit value.
async fn current(tx: &mut PgConnection, change: &Change) -> Result<Value, RbacError> {
    match change {
        Change::Role { name, .. } => Ok(roles::get(tx, name)
            .await?
            .map(|r| r.audit_value())
            .unwrap_or_default()),
        Change::Roles { user, .. }
        | Change::Email { user, .. }
        | Change::Enable(user)
        | Change::Disable(user)
        | Change::ResetPassword(user)
        | Change::ResetMfa(user) => account(tx, *user).await,
    }
}

async fn account(tx: &mut PgConnection, user: UserId) -> Result<Value, RbacError> {
    let summary = users::summary(&mut *tx, user)
        .await
        .map_err(user_error)?
        .ok_or(RbacError::NotFound)?;
    Ok(serde_json::to_value(summary).unwrap_or_default())
}

/// Makes a checked change, in the caller's transaction.
async fn apply(
    tx: &mut PgConnection,
    identity: &Identity,
    actor: &Grants,
    change: &Change,
) -> Result<Applied, RbacError> {
    let before = current(tx, change).await?;
    let mut credential = None;
    match change {
        Change::Roles { user, roles } => {
            let plan = roles::plan_user_roles(tx, actor, *user, roles).await?;
            roles::apply_user_roles(tx, &plan, Some(actor.user)).await?;
        }
        Change::Role { name, spec } => {
            let (_, after) = roles::update(tx, actor, name, spec).await?;
            return Ok(Applied {
                before,
                after: Role::audit_value(&after),
                credential: None,
            });
        }
        Change::Email { user, email } => {
            users::update_profile(&mut *tx, *user, Some(email), None)
                .await
                .map_err(user_error)?;
        }
        Change::Enable(user) => {
            let act = act(tx, actor, *user).await?;
            identity
                .enable_user(tx, *user, act)
                .await
                .map_err(admin_error)?;
        }
        Change::Disable(user) => {
            let act = act(tx, actor, *user).await?;
            identity
                .disable_user(tx, *user, act)
                .await
                .map_err(admin_error)?;
        }
        Change::ResetPassword(user) => {
            let act = act(tx, actor, *user).await?;
            let password = identity
                .admin_reset_password(tx, *user, act)
                .await
                .map_err(admin_error)?;
            credential = Some(password);
        }
        Change::ResetMfa(user) => {
            let act = act(tx, actor, *user).await?;
            identity
                .admin_reset_mfa(tx, *user, act)
                .await
                .map_err(admin_error)?;
        }
    }
    let after = current(tx, change).await?;
    Ok(Applied {
        before,
        after,
        credential,
    })
}

/// The security-event context of an account action: who, and whether the account reaches
/// sensitive permissions (its reset then raises an event saying so).
async fn act(tx: &mut PgConnection, actor: &Grants, user: UserId) -> Result<AdminAct, RbacError> {
    let target = grants::load(&mut *tx, user).await?;
    Ok(AdminAct {
        actor: Some(actor.user),
        sensitive_target: !target.grantable().dual_control().is_empty(),
    })
}

fn user_error(error: UserError) -> RbacError {
    RbacError::User(error)
}

fn admin_error(error: AdminError) -> RbacError {
    match error {
        AdminError::NoSuchUser => RbacError::NotFound,
        other => RbacError::Account(other.to_string()),
    }
}

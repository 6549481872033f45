//! Roles and who holds them. Every change runs in one transaction under one advisory lock, so
//! the invariants (no one grants what they do not hold, no one changes their own roles, at least
//! one active administrator remains) hold under concurrent administrators and instances.

use chrono::{DateTime, Utc};
use clinicd_identity::users::UserId;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::error::RbacError;
use crate::grants::Grants;
use crate::permission::Permissions;

/// The built-in role that administers; the last active holder cannot lose it.
pub const ADMIN: &str = "Admin";

/// Serialises role and account-status changes across instances (an arbitrary constant).
const ROLE_LOCK: i64 = 0x0072_6261_6300_0001;

/// A role as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub description: String,
    pub permissions: Permissions,
    pub delegable: Permissions,
    /// Holders must have a second factor.
    pub privileged: bool,
    pub built_in: bool,
    pub members: i64,
}

impl Role {
    /// Everything holding this role hands out: what its holders may use or delegate.
    pub fn reach(&self) -> Permissions {
        self.permissions.union(self.delegable)
    }

    /// The role as an audit before/after value.
    pub fn audit_value(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "permissions": self.permissions.names(),
            "delegable": self.delegable.names(),
            "privileged": self.privileged,
        })
    }
}

/// What a custom role is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    pub description: String,
    pub permissions: Permissions,
    pub delegable: Permissions,
    pub privileged: bool,
}

#[derive(sqlx::FromRow)]
struct RoleRow {
    name: String,
    description: String,
    permissions: Vec<String>,
    delegable: Vec<String>,
    privileged: bool,
    built_in: bool,
    members: i64,
}

impl From<RoleRow> for Role {
    fn from(row: RoleRow) -> Self {
        Self {
            // The table's constraint admits only known names.
            permissions: Permissions::parse_names(&row.permissions).unwrap_or_default(),
            delegable: Permissions::parse_names(&row.delegable).unwrap_or_default(),
            name: row.name,
            description: row.description,
            privileged: row.privileged,
            built_in: row.built_in,
            members: row.members,
        }
    }
}

pub async fn list(db: &PgPool) -> Result<Vec<Role>, RbacError> {
    let rows: Vec<RoleRow> = sqlx::query_as!(RoleRow, "SELECT r.name, r.description, r.permissions, r.delegable, r.privileged, r.built_in, (SELECT count(*) FROM user_roles ur WHERE ur.role_name = r.name) AS \"members!\" FROM roles r ORDER BY r.built_in DESC, r.name")
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Role::from).collect())
}

pub async fn get(db: &mut PgConnection, name: &str) -> Result<Option<Role>, RbacError> {
    let row: Option<RoleRow> = sqlx::query_as!(RoleRow, "SELECT r.name, r.description, r.permissions, r.delegable, r.privileged, r.built_in, (SELECT count(*) FROM user_roles ur WHERE ur.role_name = r.name) AS \"members!\" FROM roles r WHERE r.name = $1", name)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Role::from))
}

fn check_name(name: &str) -> Result<(), RbacError> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(RbacError::InvalidRoleName)
    }
}

fn check_spec(actor: &Grants, spec: &RoleSpec) -> Result<(), RbacError> {
    if spec.description.chars().count() > 500 {
        return Err(RbacError::InvalidDescription);
    }
    let asked = spec.permissions.union(spec.delegable);
    let missing = asked.missing_from(actor.grantable());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RbacError::NotHeld(missing))
    }
}

async fn lock(tx: &mut PgConnection) -> Result<(), RbacError> {
    sqlx::query_scalar!(
        r#"SELECT true AS "locked!" FROM pg_advisory_xact_lock($1)"#,
        ROLE_LOCK
    )
    .fetch_one(tx)
    .await?;
    Ok(())
}

/// Creates a custom role in the caller's transaction; the actor must hold (or be able to
/// delegate) all it grants.
pub async fn create(
    tx: &mut PgConnection,
    actor: &Grants,
    name: &str,
    spec: &RoleSpec,
) -> Result<Role, RbacError> {
    check_name(name)?;
    check_spec(actor, spec)?;
    lock(tx).await?;
    let inserted = sqlx::query!(
        "INSERT INTO roles (name, description, permissions, delegable, privileged, built_in) \
         VALUES ($1, $2, $3, $4, $5, false) ON CONFLICT DO NOTHING",
        name,
        &spec.description,
        spec.permissions.names() as _,
        spec.delegable.names() as _,
        spec.privileged
    )
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(RbacError::RoleExists(name.to_owned()));
    }
    get(tx, name).await?.ok_or(RbacError::NotFound)
}

/// Checks that `actor` may replace a custom role's content with `spec` (see [`update`]),
/// under the role lock; returns the role as it is.
pub async fn check_update(
    tx: &mut PgConnection,
    actor: &Grants,
    name: &str,
    spec: &RoleSpec,
) -> Result<Role, RbacError> {
    check_spec(actor, spec)?;
    lock(tx).await?;
    let role = get(tx, name).await?.ok_or(RbacError::NotFound)?;
    guard_custom(actor, &role)?;
    Ok(role)
}

/// Replaces a custom role's description, permissions and flags, in the caller's transaction.
/// The actor must be able to grant both what the role had and what it will have, and may not
/// change a role they hold (that would change their own permissions). Returns the role before
/// and after.
pub async fn update(
    tx: &mut PgConnection,
    actor: &Grants,
    name: &str,
    spec: &RoleSpec,
) -> Result<(Role, Role), RbacError> {
    check_spec(actor, spec)?;
    lock(tx).await?;
    let before = get(tx, name).await?.ok_or(RbacError::NotFound)?;
    guard_custom(actor, &before)?;
    sqlx::query!("UPDATE roles SET description = $2, permissions = $3, delegable = $4, privileged = $5, updated_at = now() \
         WHERE name = $1", name, &spec.description, spec.permissions.names() as _, spec.delegable.names() as _, spec.privileged)
    .execute(&mut *tx)
    .await?;
    let after = get(tx, name).await?.ok_or(RbacError::NotFound)?;
    Ok((before, after))
}

/// Deletes a custom role that no one holds, in the caller's transaction.
pub async fn delete(tx: &mut PgConnection, actor: &Grants, name: &str) -> Result<Role, RbacError> {
    lock(tx).await?;
    let role = get(tx, name).await?.ok_or(RbacError::NotFound)?;
    guard_custom(actor, &role)?;
    if role.members > 0 {
        return Err(RbacError::RoleInUse(role.members));
    }
    sqlx::query!("DELETE FROM roles WHERE name = $1", name)
        .execute(&mut *tx)
        .await?;
    Ok(role)
}

fn guard_custom(actor: &Grants, role: &Role) -> Result<(), RbacError> {
    if role.built_in {
        return Err(RbacError::BuiltInRole);
    }
    if actor.roles.contains(&role.name) {
        return Err(RbacError::OwnRoles);
    }
    let missing = role.reach().missing_from(actor.grantable());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RbacError::NotHeld(missing))
    }
}

/// A user's roles before and after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleChange {
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// One role a user holds, with who gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Assignment {
    pub role_name: String,
    pub assigned_by: Option<uuid::Uuid>,
    pub assigned_at: DateTime<Utc>,
}

pub async fn assignments(db: &PgPool, user: UserId) -> Result<Vec<Assignment>, RbacError> {
    Ok(sqlx::query_as!(Assignment, "SELECT role_name, assigned_by, assigned_at FROM user_roles WHERE user_id = $1 ORDER BY role_name", user.0)
    .fetch_all(db)
    .await?)
}

/// A change of a user's roles, checked under the role lock but not yet applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolePlan {
    pub target: UserId,
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// What the roles being added reach (hold or delegate).
    pub added: Permissions,
}

impl RolePlan {
    /// Whether a second administrator must approve it (docs/rbac.md, "Dual control").
    pub fn needs_dual_control(&self) -> bool {
        !self.added.dual_control().is_empty()
    }

    pub fn changes_nothing(&self) -> bool {
        self.before == self.after
    }
}

/// Checks setting the roles of `target` to exactly `wanted`, under the role lock. The actor
/// may not change their own roles, must be able to grant every role added or removed, and may
/// not take the last active administrator's Admin role away.
pub async fn plan_user_roles(
    tx: &mut PgConnection,
    actor: &Grants,
    target: UserId,
    wanted: &[String],
) -> Result<RolePlan, RbacError> {
    if actor.user == target {
        return Err(RbacError::OwnRoles);
    }
    lock(tx).await?;
    let active = clinicd_identity::users::is_active(&mut *tx, target).await?;
    let Some(active) = active else {
        return Err(RbacError::NotFound);
    };
    let before: Vec<String> = sqlx::query_scalar!(
        "SELECT role_name FROM user_roles WHERE user_id = $1 ORDER BY role_name",
        target.0
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut after = wanted.to_vec();
    after.sort();
    after.dedup();
    let (mut changed, mut added) = (Permissions::NONE, Permissions::NONE);
    for name in after.iter().filter(|r| !before.contains(r)) {
        let role = get(tx, name)
            .await?
            .ok_or_else(|| RbacError::UnknownRole(name.clone()))?;
        added = added.union(role.reach());
    }
    for name in before.iter().filter(|r| !after.contains(r)) {
        if let Some(role) = get(tx, name).await? {
            changed = changed.union(role.reach());
        }
    }
    let missing = changed.union(added).missing_from(actor.grantable());
    if !missing.is_empty() {
        return Err(RbacError::NotHeld(missing));
    }
    let losing_admin = before.iter().any(|r| r == ADMIN) && !after.iter().any(|r| r == ADMIN);
    if losing_admin && active && other_active_admins(tx, target).await? == 0 {
        return Err(RbacError::LastAdministrator);
    }
    Ok(RolePlan {
        target,
        before,
        after,
        added,
    })
}

/// Applies a checked plan in the caller's transaction (which still holds the role lock).
pub async fn apply_user_roles(
    tx: &mut PgConnection,
    plan: &RolePlan,
    assigned_by: Option<UserId>,
) -> Result<RoleChange, RbacError> {
    clinicd_identity::users::replace_roles(tx, plan.target, &plan.after, assigned_by).await?;
    Ok(RoleChange {
        before: plan.before.clone(),
        after: plan.after.clone(),
    })
}

/// Takes the role lock and refuses if `target` is the last active administrator: called in
/// the transaction that disables an account.
pub async fn guard_last_admin(tx: &mut PgConnection, target: UserId) -> Result<(), RbacError> {
    lock(tx).await?;
    let holds_admin: bool = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM user_roles ur JOIN users u ON u.id = ur.user_id \
         WHERE ur.user_id = $1 AND ur.role_name = $2 AND u.status = 'active') AS \"v!\"",
        target.0,
        ADMIN
    )
    .fetch_one(&mut *tx)
    .await?;
    if holds_admin && other_active_admins(tx, target).await? == 0 {
        return Err(RbacError::LastAdministrator);
    }
    Ok(())
}

async fn other_active_admins(tx: &mut PgConnection, target: UserId) -> Result<i64, RbacError> {
    Ok(sqlx::query_scalar!(
        "SELECT count(*) AS \"v!\" FROM user_roles ur JOIN users u ON u.id = ur.user_id \
         WHERE ur.role_name = $1 AND u.status = 'active' AND ur.user_id <> $2",
        ADMIN,
        target.0
    )
    .fetch_one(tx)
    .await?)
}

/// Refuses an administrative action on `target` by `actor` when it is the actor's own account,
/// or when the target's roles reach permissions the actor could not grant: resetting the
/// password of a more powerful account would be a way to become it.
pub async fn guard_target(
    db: impl sqlx::PgExecutor<'_>,
    actor: &Grants,
    target: UserId,
) -> Result<(), RbacError> {
    if actor.user == target {
        return Err(RbacError::OwnRoles);
    }
    let target = crate::grants::load(db, target).await?;
    let missing = target
        .permissions
        .union(target.delegable)
        .missing_from(actor.grantable());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RbacError::NotHeld(missing))
    }
}

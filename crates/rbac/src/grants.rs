//! What a user may do right now: the union of their roles' permissions. A request's grants
//! come from memory only while the user's `access_version` (read by the session check, in the
//! same query, on every request) is the one they were loaded at; the database bumps it in the
//! transaction of any change to the user's roles, a role's definition or their second factor
//! (migration 0027), so a role change or removal takes effect on the caller's next request, on
//! every instance. No time-based expiry: an entry is only ever replaced or dropped.

use clinicd_identity::users::UserId;
use sqlx::PgExecutor;

use crate::permission::{Permission, Permissions};

/// A user's effective permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub user: UserId,
    /// Role names, sorted.
    pub roles: Vec<String>,
    /// What the user may do.
    pub permissions: Permissions,
    /// What the user may grant to others without holding it for use (the Admin role delegates
    /// clinical permissions it cannot use itself; see docs/rbac.md).
    pub delegable: Permissions,
    /// One of the user's roles is privileged: it requires a second factor.
    pub privileged: bool,
    pub mfa_enrolled: bool,
}

/// The answer to "may this caller use that permission".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// The caller holds a privileged role but has not enrolled a second factor: nothing that
    /// needs a permission works until they do.
    MfaEnrolmentRequired,
    Denied,
}

impl Grants {
    /// A user with no roles: denied everything.
    pub fn none(user: UserId) -> Self {
        Self {
            user,
            roles: Vec::new(),
            permissions: Permissions::NONE,
            delegable: Permissions::NONE,
            privileged: false,
            mfa_enrolled: false,
        }
    }

    pub fn decide(&self, permission: Permission) -> Decision {
        if self.privileged && !self.mfa_enrolled {
            Decision::MfaEnrolmentRequired
        } else if self.permissions.contains(permission) {
            Decision::Allowed
        } else {
            Decision::Denied
        }
    }

    pub fn has(&self, permission: Permission) -> bool {
        self.decide(permission) == Decision::Allowed
    }

    /// What this user may hand to someone else: what they hold and what they may delegate.
    pub fn grantable(&self) -> Permissions {
        self.permissions.union(self.delegable)
    }
}

/// Grants by user, with the access version they were loaded at.
#[derive(Debug, Default)]
pub struct GrantsCache {
    entries: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, (i64, Grants)>>,
}

/// Past this many users the cache starts again empty (a bound, not an expiry).
const CACHE_USERS: usize = 50_000;

impl GrantsCache {
    /// The user's grants if they were loaded at exactly `version`.
    pub fn get(&self, user: UserId, version: i64) -> Option<Grants> {
        let entries = self.entries.lock().ok()?;
        let (at, grants) = entries.get(&user.0)?;
        (*at == version).then(|| grants.clone())
    }

    /// Keeps grants loaded after a session check that read `version`. Loaded after that read,
    /// they are at least as new as the version says; a later change bumps the version, and
    /// the next request misses.
    pub fn put(&self, version: i64, grants: &Grants) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CACHE_USERS {
            entries.clear();
        }
        entries.insert(grants.user.0, (version, grants.clone()));
    }
}

#[derive(sqlx::FromRow)]
struct RoleRow {
    name: String,
    permissions: Vec<String>,
    delegable: Vec<String>,
    privileged: bool,
    mfa_enrolled: bool,
}

/// Loads a user's grants in one query. A permission name the code does not know (impossible
/// while the table's constraint holds) is dropped: unknown means not granted.
pub async fn load(db: impl PgExecutor<'_>, user: UserId) -> Result<Grants, sqlx::Error> {
    let rows: Vec<RoleRow> = sqlx::query_as!(RoleRow, "SELECT r.name, r.permissions, r.delegable, r.privileged, \
                EXISTS (SELECT 1 FROM mfa_totp t WHERE t.user_id = $1 AND t.confirmed_at IS NOT NULL) AS \"mfa_enrolled!\" \
         FROM user_roles ur JOIN roles r ON r.name = ur.role_name \
         WHERE ur.user_id = $1 ORDER BY r.name", user.0)
    .fetch_all(db)
    .await?;
    let mut grants = Grants::none(user);
    for row in rows {
        grants.permissions = grants.permissions.union(known(&row.permissions));
        grants.delegable = grants.delegable.union(known(&row.delegable));
        grants.privileged |= row.privileged;
        grants.mfa_enrolled = row.mfa_enrolled;
        grants.roles.push(row.name);
    }
    Ok(grants)
}

fn known(names: &[String]) -> Permissions {
    names
        .iter()
        .filter_map(|name| {
            let parsed = Permission::parse(name);
            if parsed.is_none() {
                tracing::warn!(permission = %name, "unknown permission in roles ignored");
            }
            parsed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(permissions: &[Permission], privileged: bool, mfa: bool) -> Grants {
        Grants {
            permissions: permissions.iter().collect(),
            privileged,
            mfa_enrolled: mfa,
            ..Grants::none(UserId(uuid::Uuid::nil()))
        }
    }

    #[test]
    fn decisions() {
        let reader = grants(&[Permission::PatientRead], false, false);
        assert_eq!(reader.decide(Permission::PatientRead), Decision::Allowed);
        assert_eq!(reader.decide(Permission::NoteRead), Decision::Denied);
        let admin = grants(&[Permission::UserManage], true, false);
        assert_eq!(
            admin.decide(Permission::UserManage),
            Decision::MfaEnrolmentRequired
        );
        let enrolled = grants(&[Permission::UserManage], true, true);
        assert!(enrolled.has(Permission::UserManage));
        assert_eq!(
            Grants::none(UserId(uuid::Uuid::nil())).decide(Permission::PatientRead),
            Decision::Denied
        );
    }
}

//! User accounts: the types that cannot hold an invalid value, and the SQL of `users`.

use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct UserId(pub Uuid);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error(
        "a username is 3 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit"
    )]
    InvalidUsername,
    #[error("not a valid e-mail address")]
    InvalidEmail,
    #[error(
        "a display name is 1 to 100 characters, with no control, invisible, direction-changing or line-breaking characters"
    )]
    InvalidDisplayName,
    #[error("that username is taken")]
    UsernameTaken,
    #[error("that e-mail address is taken")]
    EmailTaken,
    #[error("database error: {0}")]
    Database(#[source] crate::Failure),
}

impl From<sqlx::Error> for UserError {
    fn from(error: sqlx::Error) -> Self {
        match error.as_database_error().and_then(|e| e.constraint()) {
            Some("users_username_unique") => Self::UsernameTaken,
            Some("users_email_unique") => Self::EmailTaken,
            _ => Self::Database(error.into()),
        }
    }
}

/// A username as typed (its case is kept for display; uniqueness ignores case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Exactly as sent (no trimming): the schema's pattern is this rule.
    pub fn parse(value: &str) -> Result<Self, UserError> {
        let valid = (3..=64).contains(&value.len())
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        valid
            .then(|| Self(value.to_owned()))
            .ok_or(UserError::InvalidUsername)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// A deliberately plain check (one `@`, a dotted domain, no spaces): deliverability is
    /// proven by use, not by a regular expression.
    pub fn parse(value: &str) -> Result<Self, UserError> {
        let (local, domain) = value.split_once('@').ok_or(UserError::InvalidEmail)?;
        let valid = (3..=254).contains(&value.chars().count())
            && !local.is_empty()
            && local.chars().count() <= 64
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && !value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '\u{FEFF}');
        valid
            .then(|| Self(value.to_owned()))
            .ok_or(UserError::InvalidEmail)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Characters that change how the text around them is shown without being seen themselves:
/// controls, bidirectional overrides and isolates (which can make one name read as another),
/// zero-width and other invisible format characters, and line or paragraph separators. Refused
/// wherever a person's name is taken: names appear in listings and in the audit trail.
pub fn is_deceptive(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

impl DisplayName {
    pub fn parse(value: &str) -> Result<Self, UserError> {
        // Counted as sent, as the schema's maxLength counts; stored trimmed.
        let too_long = value.chars().count() > 100;
        let value = value.trim();
        let valid = !too_long && !value.is_empty() && !value.chars().any(is_deceptive);
        valid
            .then(|| Self(value.to_owned()))
            .ok_or(UserError::InvalidDisplayName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Disabled,
    Locked,
}

impl UserStatus {
    fn parse(value: &str) -> Self {
        match value {
            "active" => Self::Active,
            "locked" => Self::Locked,
            // Unknown states deny access.
            _ => Self::Disabled,
        }
    }
}

/// A user as stored. The password hash is here for verification only; it never leaves the
/// identity crate in a response.
#[derive(Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub status: UserStatus,
    pub password_hash: String,
    pub must_change_password: bool,
    pub mfa_enabled: bool,
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

pub struct NewUser {
    pub username: Username,
    pub email: Email,
    pub display_name: DisplayName,
    pub password_hash: String,
    pub must_change_password: bool,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

pub async fn create(db: impl sqlx::PgExecutor<'_>, user: NewUser) -> Result<UserId, UserError> {
    let id = UserId(Uuid::now_v7());
    sqlx::query!("INSERT INTO users (id, username, email, display_name, password_hash, must_change_password) \
         VALUES ($1, $2, $3, $4, $5, $6)", id.0, user.username.as_str(), user.email.as_str(), user.display_name.as_str(), &user.password_hash, user.must_change_password)
    .execute(db)
    .await?;
    Ok(id)
}

/// Gives `user` a role (by name). RBAC owns what roles mean; identity stores who holds which,
/// so that a role's "MFA required" flag can be read at login.
pub async fn assign_role(
    db: impl sqlx::PgExecutor<'_>,
    user: UserId,
    role: &str,
    assigned_by: Option<UserId>,
) -> Result<(), UserError> {
    sqlx::query!("INSERT INTO user_roles (user_id, role_name, assigned_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", user.0, role, assigned_by.map(|u| u.0))
    .execute(db)
    .await?;
    Ok(())
}

/// Makes `roles` the complete set `user` holds, in the caller's transaction (RBAC decides
/// whether the change is allowed: `clinicd_rbac::roles`).
pub async fn replace_roles(
    tx: &mut sqlx::PgConnection,
    user: UserId,
    roles: &[String],
    assigned_by: Option<UserId>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM user_roles WHERE user_id = $1 AND NOT (role_name = ANY($2))",
        user.0,
        roles
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("INSERT INTO user_roles (user_id, role_name, assigned_by) SELECT $1, unnest($2::text[]), $3 \
         ON CONFLICT DO NOTHING", user.0, roles, assigned_by.map(|u| u.0))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Whether the account exists (`None` if not) and is active.
pub async fn is_active(
    db: impl sqlx::PgExecutor<'_>,
    user: UserId,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT status = 'active' AS "active!" FROM users WHERE id = $1"#,
        user.0
    )
    .fetch_optional(db)
    .await
}

/// Whether the user holds `role`.
pub async fn has_role(
    db: impl sqlx::PgExecutor<'_>,
    user: UserId,
    role: &str,
) -> Result<bool, UserError> {
    Ok(sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM user_roles WHERE user_id = $1 AND role_name = $2) AS \"v!\"",
        user.0,
        role
    )
    .fetch_one(db)
    .await?)
}

/// Whether any of the user's roles requires a second factor (enforced once RBAC lands).
pub async fn mfa_required(db: impl sqlx::PgExecutor<'_>, user: UserId) -> Result<bool, UserError> {
    Ok(sqlx::query_scalar!("SELECT EXISTS (SELECT 1 FROM user_roles ur JOIN roles r ON r.name = ur.role_name WHERE ur.user_id = $1 AND r.privileged) AS \"v!\"", user.0)
    .fetch_one(db)
    .await?)
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    username: String,
    email: String,
    display_name: String,
    status: String,
    password_hash: String,
    must_change_password: bool,
    mfa_enabled: bool,
    created_at: DateTime<Utc>,
}

impl From<UserRow> for UserRecord {
    fn from(row: UserRow) -> Self {
        Self {
            id: UserId(row.id),
            username: row.username,
            email: row.email,
            display_name: row.display_name,
            status: UserStatus::parse(&row.status),
            password_hash: row.password_hash,
            must_change_password: row.must_change_password,
            mfa_enabled: row.mfa_enabled,
            created_at: row.created_at,
        }
    }
}

pub async fn find_by_id(db: &PgPool, id: UserId) -> Result<Option<UserRecord>, UserError> {
    find_in(db, id).await
}

/// [`find_by_id`] on a connection of the caller's (inside a transaction).
pub async fn find_in(
    db: impl sqlx::PgExecutor<'_>,
    id: UserId,
) -> Result<Option<UserRecord>, UserError> {
    let row: Option<UserRow> = sqlx::query_as!(UserRow, "SELECT id, username, email, display_name, status, password_hash, must_change_password, mfa_enabled, created_at \
         FROM users WHERE id = $1", id.0)
    .fetch_optional(db)
    .await?;
    Ok(row.map(UserRecord::from))
}

/// The user with this username, compared case-insensitively.
pub async fn find_by_username(
    db: &PgPool,
    username: &str,
) -> Result<Option<UserRecord>, UserError> {
    let row: Option<UserRow> = sqlx::query_as!(UserRow, "SELECT id, username, email, display_name, status, password_hash, must_change_password, mfa_enabled, created_at \
         FROM users WHERE lower(username) = lower($1)", username.trim())
    .fetch_optional(db)
    .await?;
    Ok(row.map(UserRecord::from))
}

/// Sets an account's status in the caller's transaction; `Ok(false)` if there is no such user.
/// (The administrator operations in `admin.rs` then end sessions and record the event.)
pub async fn set_status(
    db: impl sqlx::PgExecutor<'_>,
    id: UserId,
    status: &str,
) -> Result<bool, UserError> {
    let updated = sqlx::query!(
        "UPDATE users SET status = $2, updated_at = now() WHERE id = $1",
        id.0,
        status
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// A user as an administrator sees them: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct UserSummary {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub display_name: String,
    /// `active`, `disabled` or `locked`.
    pub status: String,
    /// Locked out after failed logins until then.
    pub locked_until: Option<DateTime<Utc>>,
    pub must_change_password: bool,
    pub mfa_enabled: bool,
    /// Role names, sorted.
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// Every user, by username, `limit` at a time after `after` (a username; keyset paging).
pub async fn summaries(
    db: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<UserSummary>, UserError> {
    Ok(sqlx::query_as!(UserSummary, "SELECT u.id, u.username, u.email, u.display_name, u.status, (SELECT max(a.locked_until) FROM login_attempts a WHERE a.user_id = u.id AND a.locked_until > now()) AS locked_until, u.must_change_password, u.mfa_enabled, ARRAY(SELECT ur.role_name FROM user_roles ur WHERE ur.user_id = u.id ORDER BY ur.role_name) AS \"roles!\", u.created_at FROM users u WHERE $1::text IS NULL OR lower(u.username) > lower($1) \
         ORDER BY lower(u.username) LIMIT $2", after, limit)
    .fetch_all(db)
    .await?)
}

pub async fn summary(
    db: impl sqlx::PgExecutor<'_>,
    id: UserId,
) -> Result<Option<UserSummary>, UserError> {
    Ok(sqlx::query_as!(UserSummary, "SELECT u.id, u.username, u.email, u.display_name, u.status, (SELECT max(a.locked_until) FROM login_attempts a WHERE a.user_id = u.id AND a.locked_until > now()) AS locked_until, u.must_change_password, u.mfa_enabled, ARRAY(SELECT ur.role_name FROM user_roles ur WHERE ur.user_id = u.id ORDER BY ur.role_name) AS \"roles!\", u.created_at FROM users u WHERE u.id = $1", id.0)
    .fetch_optional(db)
    .await?)
}

/// Changes the e-mail address and/or display name; `Ok(false)` if there is no such user.
pub async fn update_profile(
    db: impl sqlx::PgExecutor<'_>,
    id: UserId,
    email: Option<&Email>,
    display_name: Option<&DisplayName>,
) -> Result<bool, UserError> {
    let updated = sqlx::query!(
        "UPDATE users SET email = coalesce($2, email), display_name = coalesce($3, display_name), \
         updated_at = now() WHERE id = $1",
        id.0,
        email.map(Email::as_str),
        display_name.map(DisplayName::as_str)
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["abc", "dr.house", "nurse_01", "A-B", &"x".repeat(64)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            ".abc",
            "has space",
            "ünïcode",
            "a@b",
            &"x".repeat(65),
            "",
        ] {
            assert_eq!(
                Username::parse(bad),
                Err(UserError::InvalidUsername),
                "{bad}"
            );
        }
    }

    #[test]
    fn emails() {
        assert!(Email::parse("front.desk@clinic.example").is_ok());
        for bad in [
            "no-at",
            "@clinic.example",
            "a@nodot",
            "a@.example",
            "a b@clinic.example",
            "a@b@c.example",
        ] {
            assert_eq!(Email::parse(bad), Err(UserError::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn display_names() {
        assert!(DisplayName::parse("Dr. Gregory House").is_ok());
        assert!(DisplayName::parse("").is_err());
        assert!(DisplayName::parse("bell\u{7}").is_err());
        // Names that would read as another, or break a listing's lines.
        for spoof in [
            "Dr \u{202E}esuoH",
            "Dr\u{2066} House",
            "Dr\u{200B}House",
            "Dr House\u{2028}Admin",
            "Dr\u{00A0}House",
            "Dr\u{FEFF}House",
        ] {
            assert!(DisplayName::parse(spoof).is_err(), "{spoof:?}");
        }
        assert!(DisplayName::parse("Dr. María-José O'Neil").is_ok());
        assert!(DisplayName::parse("Dr 张伟").is_ok());
    }
}

//! Account operations for administrators. The admin API (with RBAC) calls these; until then
//! they are reachable from code and tests only.

use secrecy::SecretString;

use crate::bootstrap::{BootstrapError, one_time_password};
use crate::devices;
use crate::login::LoginError;
use crate::service::Identity;
use crate::sessions::{ClientInfo, SecurityEvent, record_event};
use crate::users::UserId;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such user")]
    NoSuchUser,
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for AdminError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.to_string())
    }
}

impl From<crate::sessions::SessionError> for AdminError {
    fn from(error: crate::sessions::SessionError) -> Self {
        Self::Database(error.to_string())
    }
}

impl From<crate::password::HashError> for AdminError {
    fn from(error: crate::password::HashError) -> Self {
        Self::Database(error.to_string())
    }
}

impl Identity {
    /// Resets a user's password to a one-time password (returned once) that must be changed at
    /// the next login. Every session of the user ends. The second factor is left as it is, so
    /// a reset never lets anyone skip MFA.
    pub async fn admin_reset_password(
        &self,
        user: UserId,
        actor: Option<UserId>,
    ) -> Result<SecretString, AdminError> {
        let password = one_time_password()?;
        let hash = self.login.hasher().hash(&password).await?;
        let updated = sqlx::query(
            "UPDATE users SET password_hash = $2, must_change_password = true, password_changed_at = now(), \
             updated_at = now() WHERE id = $1",
        )
        .bind(user.0)
        .bind(hash)
        .execute(&self.db)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(AdminError::NoSuchUser);
        }
        self.sessions
            .revoke_all(user, None, "password_reset")
            .await?;
        // The second factor stays; devices trusted before the reset must prove it again.
        devices::revoke_all(&self.db, user, self.clock.now(), "password_reset").await?;
        self.admin_event("password_reset", user, actor).await?;
        Ok(password)
    }

    /// Removes a user's second factor (a lost phone and no backup codes). Every session and
    /// trusted device ends; the user logs in with their password and enrols again (RBAC
    /// requires it at once for roles that need MFA).
    pub async fn admin_reset_mfa(
        &self,
        user: UserId,
        actor: Option<UserId>,
    ) -> Result<(), AdminError> {
        let mut tx = self.db.begin().await?;
        let exists: Option<bool> =
            sqlx::query_scalar("SELECT true FROM users WHERE id = $1 FOR UPDATE")
                .bind(user.0)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(AdminError::NoSuchUser);
        }
        self.mfa
            .remove(&mut tx, user)
            .await
            .map_err(|e| AdminError::Database(e.to_string()))?;
        devices::revoke_all(&mut *tx, user, self.clock.now(), "mfa_reset").await?;
        tx.commit().await?;
        self.sessions.revoke_all(user, None, "mfa_reset").await?;
        self.admin_event("mfa_reset", user, actor).await
    }

    /// Disables an account: it cannot log in and every session ends at once.
    pub async fn disable_user(
        &self,
        user: UserId,
        actor: Option<UserId>,
    ) -> Result<(), AdminError> {
        self.set_status(user, "disabled").await?;
        self.sessions
            .revoke_all(user, None, "user_disabled")
            .await?;
        devices::revoke_all(&self.db, user, self.clock.now(), "user_disabled").await?;
        self.admin_event("user_disabled", user, actor).await
    }

    pub async fn enable_user(&self, user: UserId, actor: Option<UserId>) -> Result<(), AdminError> {
        self.set_status(user, "active").await?;
        self.admin_event("user_enabled", user, actor).await
    }

    async fn set_status(&self, user: UserId, status: &str) -> Result<(), AdminError> {
        let updated = sqlx::query("UPDATE users SET status = $2, updated_at = now() WHERE id = $1")
            .bind(user.0)
            .bind(status)
            .execute(&self.db)
            .await?;
        if updated.rows_affected() == 1 {
            Ok(())
        } else {
            Err(AdminError::NoSuchUser)
        }
    }

    async fn admin_event(
        &self,
        kind: &str,
        user: UserId,
        actor: Option<UserId>,
    ) -> Result<(), AdminError> {
        let event = SecurityEvent {
            kind,
            user: Some(user.0),
            session: None,
            reason: None,
            actor: actor.map(|a| a.0),
        };
        let mut conn = self.db.acquire().await?;
        record_event(&mut conn, self.clock.now(), event, &ClientInfo::default()).await?;
        Ok(())
    }
}

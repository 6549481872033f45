//! Account operations for administrators. The admin API (with RBAC) calls these; until then
//! they are reachable from code and tests only.

use secrecy::SecretString;
use sqlx::PgConnection;

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
    Database(#[source] crate::Failure),
}

impl From<sqlx::Error> for AdminError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.into())
    }
}

impl From<crate::sessions::SessionError> for AdminError {
    fn from(error: crate::sessions::SessionError) -> Self {
        Self::Database(error.into())
    }
}

impl From<crate::password::HashError> for AdminError {
    fn from(error: crate::password::HashError) -> Self {
        Self::Database(error.into())
    }
}

/// Who did an administrative action, and whether its target holds sensitive permissions
/// (clinical data, export, emergency access, sealed audit values or administration): the
/// security event of a reset then says so, for the alerting that watches such resets.
#[derive(Debug, Clone, Copy)]
pub struct AdminAct {
    pub actor: Option<UserId>,
    pub sensitive_target: bool,
}

impl Identity {
    /// Resets a user's password to a one-time password (returned once, for the caller to
    /// deliver) that must be changed at the next login, in the caller's transaction. Every
    /// session of the user ends. The second factor is left as it is, so a reset never lets
    /// anyone skip MFA.
    pub async fn admin_reset_password(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        act: AdminAct,
    ) -> Result<SecretString, AdminError> {
        let password = one_time_password()?;
        let hash = self.login.hasher().hash(&password).await?;
        let updated = sqlx::query!("UPDATE users SET password_hash = $2, must_change_password = true, password_changed_at = now(), \
             updated_at = now() WHERE id = $1", user.0, hash)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(AdminError::NoSuchUser);
        }
        self.sessions
            .revoke_all_in(tx, user, None, "password_reset")
            .await?;
        // The second factor stays; devices trusted before the reset must prove it again.
        devices::revoke_all(&mut *tx, user, self.clock.now(), "password_reset").await?;
        self.admin_event(tx, "password_reset", user, act).await?;
        Ok(password)
    }

    /// Removes a user's second factor (a lost phone and no backup codes), in the caller's
    /// transaction. Every session and trusted device ends; the user logs in with their
    /// password and enrols again (RBAC requires it at once for roles that need MFA).
    pub async fn admin_reset_mfa(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        act: AdminAct,
    ) -> Result<(), AdminError> {
        let exists: Option<bool> = sqlx::query_scalar!(
            "SELECT true AS \"v!\" FROM users WHERE id = $1 FOR UPDATE",
            user.0
        )
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Err(AdminError::NoSuchUser);
        }
        self.mfa
            .remove(tx, user)
            .await
            .map_err(|e| AdminError::Database(e.into()))?;
        devices::revoke_all(&mut *tx, user, self.clock.now(), "mfa_reset").await?;
        self.sessions
            .revoke_all_in(tx, user, None, "mfa_reset")
            .await?;
        self.admin_event(tx, "mfa_reset", user, act).await
    }

    /// Disables an account, in the caller's transaction: it cannot log in and every session
    /// ends at once.
    pub async fn disable_user(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        act: AdminAct,
    ) -> Result<(), AdminError> {
        set_status(tx, user, "disabled").await?;
        self.sessions
            .revoke_all_in(tx, user, None, "user_disabled")
            .await?;
        devices::revoke_all(&mut *tx, user, self.clock.now(), "user_disabled").await?;
        self.admin_event(tx, "user_disabled", user, act).await
    }

    pub async fn enable_user(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        act: AdminAct,
    ) -> Result<(), AdminError> {
        set_status(tx, user, "active").await?;
        self.admin_event(tx, "user_enabled", user, act).await
    }

    async fn admin_event(
        &self,
        tx: &mut PgConnection,
        kind: &str,
        user: UserId,
        act: AdminAct,
    ) -> Result<(), AdminError> {
        let event = SecurityEvent {
            kind,
            user: Some(user.0),
            session: None,
            reason: act.sensitive_target.then_some("sensitive_account"),
            actor: act.actor.map(|a| a.0),
        };
        record_event(tx, self.clock.now(), event, &ClientInfo::default()).await?;
        Ok(())
    }
}

async fn set_status(tx: &mut PgConnection, user: UserId, status: &str) -> Result<(), AdminError> {
    let updated = sqlx::query!(
        "UPDATE users SET status = $2, updated_at = now() WHERE id = $1",
        user.0,
        status
    )
    .execute(tx)
    .await?;
    if updated.rows_affected() == 1 {
        Ok(())
    } else {
        Err(AdminError::NoSuchUser)
    }
}

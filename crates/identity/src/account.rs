//! A user's own account security: turning the second factor off and replacing backup codes.
//! Both need fresh proof (a current code; turning MFA off also the password), so a stolen
//! session alone cannot weaken the account.

use secrecy::SecretString;
use uuid::Uuid;

use crate::devices;
use crate::mfa::MfaError;
use crate::service::Identity;
use crate::sessions::{ClientInfo, SecurityEvent, record_event};
use crate::users::{self, UserId};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the password is not correct")]
    WrongPassword,
    #[error("the code is not valid")]
    InvalidCode,
    #[error("no second factor is enrolled")]
    NotEnrolled,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for AccountError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<crate::sessions::SessionError> for AccountError {
    fn from(error: crate::sessions::SessionError) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<MfaError> for AccountError {
    fn from(error: MfaError) -> Self {
        match error {
            MfaError::InvalidCode => Self::InvalidCode,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl Identity {
    /// Turns the caller's second factor off. Needs the password and a current code (TOTP or
    /// backup); every trusted device and every other session ends.
    pub async fn disable_mfa(
        &self,
        user: UserId,
        session: Uuid,
        password: &SecretString,
        code: &str,
    ) -> Result<(), AccountError> {
        let record = users::find_by_id(&self.db, user)
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))?
            .ok_or(AccountError::WrongPassword)?;
        if !record.mfa_enabled {
            return Err(AccountError::NotEnrolled);
        }
        let verified = self
            .login
            .hasher()
            .verify(password, Some(&record.password_hash))
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        if !verified.matches {
            self.account_event("mfa_disable_failed", user, session, "wrong_password")
                .await?;
            return Err(AccountError::WrongPassword);
        }
        if let Err(error) = self.mfa.verify(user, code).await {
            self.account_event("mfa_disable_failed", user, session, "invalid_code")
                .await?;
            return Err(error.into());
        }
        let mut tx = self.db.begin().await?;
        self.mfa.remove(&mut tx, user).await?;
        devices::revoke_all(&mut *tx, user, self.clock.now(), "mfa_disabled").await?;
        tx.commit().await?;
        self.sessions
            .revoke_all(user, Some(session), "mfa_disabled")
            .await?;
        self.account_event("mfa_disabled", user, session, "user_request")
            .await
    }

    /// Replaces the caller's backup codes with ten new ones (shown once), after a current
    /// code. The old codes stop working.
    pub async fn regenerate_backup_codes(
        &self,
        user: UserId,
        session: Uuid,
        code: &str,
    ) -> Result<Vec<SecretString>, AccountError> {
        if !self.mfa.enrolled(user).await? {
            return Err(AccountError::NotEnrolled);
        }
        match self.mfa.regenerate_backup_codes(user, code).await {
            Ok(codes) => {
                self.account_event(
                    "mfa_backup_codes_regenerated",
                    user,
                    session,
                    "user_request",
                )
                .await?;
                Ok(codes)
            }
            Err(MfaError::InvalidCode) => {
                self.account_event("mfa_backup_codes_failed", user, session, "invalid_code")
                    .await?;
                Err(AccountError::InvalidCode)
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn account_event(
        &self,
        kind: &str,
        user: UserId,
        session: Uuid,
        reason: &str,
    ) -> Result<(), AccountError> {
        let event = SecurityEvent {
            kind,
            user: Some(user.0),
            session: Some(session),
            reason: Some(reason),
            actor: None,
        };
        let mut conn = self.db.acquire().await?;
        record_event(&mut conn, self.clock.now(), event, &ClientInfo::default()).await?;
        Ok(())
    }
}

//! A user's own account security: turning the second factor off and replacing backup codes.
//! Both need fresh proof (a current code; turning MFA off also the password), so a stolen
//! session alone cannot weaken the account.

use secrecy::SecretString;
use sqlx::PgConnection;
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
    /// The proof that turning the caller's second factor off needs: the password and a current
    /// code (TOTP or backup). The code is used up, and a failed proof recorded, at once.
    pub async fn prove_for_mfa_disable(
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
            self.failure_event("mfa_disable_failed", user, session, "wrong_password")
                .await?;
            return Err(AccountError::WrongPassword);
        }
        self.prove_code(user, session, code, "mfa_disable_failed")
            .await
    }

    /// Turns the caller's second factor off after [`Self::prove_for_mfa_disable`], in the
    /// caller's transaction: every trusted device and every other session ends.
    pub async fn disable_mfa(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        session: Uuid,
    ) -> Result<(), AccountError> {
        self.mfa.remove(tx, user).await?;
        devices::revoke_all(&mut *tx, user, self.clock.now(), "mfa_disabled").await?;
        self.sessions
            .revoke_all_in(tx, user, Some(session), "mfa_disabled")
            .await?;
        let event = account_event("mfa_disabled", user, session, "user_request");
        record_event(tx, self.clock.now(), event, &ClientInfo::default()).await?;
        Ok(())
    }

    /// A current code (TOTP or backup) of an enrolled user, used up at once; a wrong one is
    /// recorded as `failure_kind`.
    pub async fn prove_code(
        &self,
        user: UserId,
        session: Uuid,
        code: &str,
        failure_kind: &str,
    ) -> Result<(), AccountError> {
        if !self.mfa.enrolled(user).await? {
            return Err(AccountError::NotEnrolled);
        }
        let mut conn = self.db.acquire().await?;
        let verified = self.mfa.verify(&mut conn, user, code).await;
        drop(conn);
        match verified {
            Ok(_) => Ok(()),
            Err(MfaError::InvalidCode) => {
                self.failure_event(failure_kind, user, session, "invalid_code")
                    .await?;
                Err(AccountError::InvalidCode)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Replaces the caller's backup codes with ten new ones (shown once), after a code proved
    /// with [`Self::prove_code`], in the caller's transaction. The old codes stop working.
    pub async fn regenerate_backup_codes(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        session: Uuid,
    ) -> Result<Vec<SecretString>, AccountError> {
        let codes = self.mfa.replace_backup_codes(tx, user).await?;
        let event = account_event(
            "mfa_backup_codes_regenerated",
            user,
            session,
            "user_request",
        );
        record_event(tx, self.clock.now(), event, &ClientInfo::default()).await?;
        Ok(codes)
    }

    /// A failed proof, recorded on a connection of its own: it stands whatever becomes of the
    /// request.
    async fn failure_event(
        &self,
        kind: &str,
        user: UserId,
        session: Uuid,
        reason: &str,
    ) -> Result<(), AccountError> {
        let mut conn = self.db.acquire().await?;
        let event = account_event(kind, user, session, reason);
        record_event(&mut conn, self.clock.now(), event, &ClientInfo::default()).await?;
        Ok(())
    }
}

fn account_event<'a>(
    kind: &'a str,
    user: UserId,
    session: Uuid,
    reason: &'a str,
) -> SecurityEvent<'a> {
    SecurityEvent {
        kind,
        user: Some(user.0),
        session: Some(session),
        reason: Some(reason),
        actor: None,
    }
}

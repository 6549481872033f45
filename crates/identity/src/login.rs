//! Password login with anti-automation.
//!
//! Failures are counted per account in Postgres (so the count holds across instances): after 3
//! failures within the window each further attempt must wait (1 s, 2 s, 4 s, ... capped at 60 s)
//! and an earlier one is refused without checking the password; after 5 failures within 15
//! minutes the account is locked for 15 minutes. Unknown usernames take the same path (a dummy
//! hash is verified) and every refusal gives the caller the same answer, so responses do not
//! tell which usernames exist. Each failure, lockout and refusal is recorded as a security
//! event with its reason.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use uuid::Uuid;

use crate::challenge::ChallengeVerifier;
use crate::clock::Clock;
use crate::devices::{DeviceService, NewDevice};
use crate::mfa::{Factor, MfaService};
use crate::otp::{OtpMessage, OtpSender};
use crate::password::{HashError, PasswordHasherPool};
use crate::sessions::{
    ClientInfo, IssuedTokens, SecurityEvent, SessionError, SessionService, record_event,
};
use crate::tokens::{TokenService, TokenType};
use crate::users::{self, UserError, UserId, UserRecord, UserStatus};

pub const DELAY_AFTER: i32 = 3;
pub const LOCK_AFTER: i32 = 5;
pub const FAILURE_WINDOW_MINUTES: i64 = 15;
pub const LOCK_MINUTES: i64 = 15;
const MAX_DELAY_SECS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong password, unknown user, locked or disabled account: one answer for all.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too soon after the last failure of this account.
    #[error("too many failed attempts: wait {retry_after_secs} s")]
    TooSoon { retry_after_secs: u64 },
    /// A wrong, reused or expired second-factor code, or a used or expired challenge.
    #[error("the second-factor code or challenge is not valid")]
    InvalidMfa,
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Mfa(#[from] crate::mfa::MfaError),
    /// A challenge response is required (repeated failures) and was missing or wrong.
    #[error("a challenge response is required")]
    ChallengeRequired,
    /// The challenge verifier could not be asked.
    #[error("the challenge verifier is unavailable")]
    ChallengeUnavailable,
    /// No out-of-band sender is configured.
    #[error("no fallback channel is configured")]
    FallbackUnavailable,
    /// The sender failed (the gateway is down or refused).
    #[error("the code could not be sent: {0}")]
    FallbackUnavailableNow(String),
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for LoginError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.to_string())
    }
}

impl From<UserError> for LoginError {
    fn from(error: UserError) -> Self {
        Self::Database(error.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChangePasswordError {
    #[error("the current password is not correct")]
    WrongPassword,
    #[error(transparent)]
    Policy(crate::policy::PolicyViolation),
    #[error("the new password must differ from the current one")]
    Unchanged,
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for ChangePasswordError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.to_string())
    }
}

impl From<UserError> for ChangePasswordError {
    fn from(error: UserError) -> Self {
        Self::Database(error.to_string())
    }
}

/// The outcome of the password step.
#[derive(Debug)]
pub enum LoginOutcome {
    LoggedIn(LoggedIn),
    /// The account has a second factor: complete with [`LoginService::complete_mfa`].
    MfaRequired {
        challenge_token: String,
        expires_in_secs: i64,
    },
}

/// How long the password step's MFA challenge lasts.
pub const MFA_CHALLENGE_MINUTES: i64 = 5;

/// A successful login.
#[derive(Debug)]
pub struct LoggedIn {
    pub user_id: UserId,
    pub tokens: IssuedTokens,
    /// The session may only be used to change the password (first login, admin reset).
    pub must_change_password: bool,
    /// A device trusted at this login (token shown once, to the device).
    pub trusted_device: Option<NewDevice>,
}

#[derive(Debug)]
pub struct LoginService {
    db: PgPool,
    hasher: PasswordHasherPool,
    sessions: Arc<SessionService>,
    tokens: Arc<TokenService>,
    mfa: Arc<MfaService>,
    devices: Arc<DeviceService>,
    /// Out-of-band codes (e-mail/SMS fallback); `None` turns the fallback off.
    otp_sender: Option<Arc<dyn OtpSender>>,
    /// The CAPTCHA step after repeated failures; `None` turns it off.
    challenge_verifier: Option<Arc<dyn ChallengeVerifier>>,
    clock: Arc<dyn Clock>,
}

/// One login attempt as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct LoginAttempt<'a> {
    pub username: &'a str,
    pub password: &'a SecretString,
    pub remember_me: bool,
    pub device: Option<&'a SecretString>,
    pub challenge_response: Option<&'a str>,
}

/// A challenge as used up by the MFA step, with any fallback code sent for it.
#[derive(sqlx::FromRow)]
struct UsedChallenge {
    remember_me: bool,
    otp_hash: Option<Vec<u8>>,
    otp_expires_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct FailureState {
    failed_attempts: i32,
    first_failed_at: Option<DateTime<Utc>>,
    last_failed_at: Option<DateTime<Utc>>,
    locked_until: Option<DateTime<Utc>>,
}

/// The wait before the next attempt after `failures` recent failures, if any.
pub fn delay_after(failures: i32) -> Option<Duration> {
    (failures >= DELAY_AFTER).then(|| {
        let exponent = u32::try_from(failures - DELAY_AFTER)
            .unwrap_or(u32::MAX)
            .min(6);
        Duration::seconds((1i64 << exponent).min(MAX_DELAY_SECS))
    })
}

impl LoginService {
    pub fn new(
        db: PgPool,
        hasher: PasswordHasherPool,
        sessions: Arc<SessionService>,
        tokens: Arc<TokenService>,
        mfa: Arc<MfaService>,
        devices: Arc<DeviceService>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            db,
            hasher,
            sessions,
            tokens,
            mfa,
            devices,
            otp_sender: None,
            challenge_verifier: None,
            clock,
        }
    }

    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        remember_me: bool,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, LoginError> {
        let attempt = LoginAttempt {
            username,
            password,
            remember_me,
            device: None,
            challenge_response: None,
        };
        self.attempt(&attempt, client).await
    }

    /// A login with everything a client may bring: a trusted-device token (a live one of this
    /// user stands in for the second factor, never for the password) and a challenge response
    /// (required after repeated failures when a verifier is configured).
    pub async fn attempt(
        &self,
        attempt: &LoginAttempt<'_>,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, LoginError> {
        let LoginAttempt {
            username,
            password,
            remember_me,
            device,
            challenge_response,
        } = *attempt;
        let now = self.clock.now();
        let user = users::find_by_username(&self.db, username).await?;
        if let Some(user) = &user {
            let recent_failures = self.refuse_if_throttled(user, now, client).await?;
            if recent_failures >= DELAY_AFTER {
                self.require_challenge(user, challenge_response, client)
                    .await?;
            }
        }
        let verification = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        let Some(user) = user else {
            self.event("login_failed", None, client, "unknown_user")
                .await?;
            return Err(LoginError::InvalidCredentials);
        };
        if !verification.matches {
            self.count_failure(&user, now, client, "bad_password")
                .await?;
            return Err(LoginError::InvalidCredentials);
        }
        if user.status != UserStatus::Active {
            self.event(
                "login_failed",
                Some(user.id.0),
                client,
                "account_not_active",
            )
            .await?;
            return Err(LoginError::InvalidCredentials);
        }
        self.clear_failures(user.id).await?;
        if verification.needs_rehash {
            let rehashed = self.hasher.hash(password).await?;
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
                .bind(user.id.0)
                .bind(rehashed)
                .execute(&self.db)
                .await?;
        }
        if user.mfa_enabled && !self.trusted(&user, device, client).await? {
            return self.challenge(&user, remember_me, now).await;
        }
        let tokens = self.sessions.start(user.id, remember_me, client).await?;
        Ok(LoginOutcome::LoggedIn(LoggedIn {
            user_id: user.id,
            tokens,
            must_change_password: user.must_change_password,
            trusted_device: None,
        }))
    }

    async fn trusted(
        &self,
        user: &UserRecord,
        device: Option<&SecretString>,
        client: &ClientInfo,
    ) -> Result<bool, LoginError> {
        let Some(token) = device else {
            return Ok(false);
        };
        let recognised = self.devices.recognise(user.id, token).await?;
        let reason = if recognised {
            "trusted_device"
        } else {
            "unknown_device"
        };
        self.event("mfa_device_check", Some(user.id.0), client, reason)
            .await?;
        Ok(recognised)
    }

    /// A single-use, five-minute MFA challenge for a user who passed the password step.
    async fn challenge(
        &self,
        user: &UserRecord,
        remember_me: bool,
        now: DateTime<Utc>,
    ) -> Result<LoginOutcome, LoginError> {
        let id = Uuid::now_v7();
        let ttl = Duration::minutes(MFA_CHALLENGE_MINUTES);
        sqlx::query("INSERT INTO mfa_challenges (id, user_id, remember_me, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(user.id.0)
            .bind(remember_me)
            .bind(now + ttl)
            .execute(&self.db)
            .await?;
        let std_ttl = ttl.to_std().unwrap_or_default();
        let (token, _) = self
            .tokens
            .issue(TokenType::MfaChallenge, user.id.0, id, now, std_ttl)
            .map_err(|_| LoginError::Database("cannot issue an MFA challenge".into()))?;
        Ok(LoginOutcome::MfaRequired {
            challenge_token: token,
            expires_in_secs: ttl.num_seconds(),
        })
    }

    /// The second step: a TOTP or backup code against a challenge from [`login`](Self::login).
    /// The challenge is used up whatever the outcome; failures count towards the lockout.
    pub async fn complete_mfa(
        &self,
        challenge_token: &str,
        code: &str,
        client: &ClientInfo,
    ) -> Result<LoggedIn, LoginError> {
        self.complete_mfa_and_trust(challenge_token, code, false, client)
            .await
    }

    /// [`Self::complete_mfa`], and if `trust_device`, a trusted-device token for the next 30
    /// days in [`LoggedIn::trusted_device`].
    pub async fn complete_mfa_and_trust(
        &self,
        challenge_token: &str,
        code: &str,
        trust_device: bool,
        client: &ClientInfo,
    ) -> Result<LoggedIn, LoginError> {
        let claims = self
            .tokens
            .validate(challenge_token, TokenType::MfaChallenge)
            .map_err(|_| LoginError::InvalidMfa)?;
        let now = self.clock.now();
        let challenge: Option<UsedChallenge> = sqlx::query_as(
            "UPDATE mfa_challenges SET used_at = $3 WHERE id = $1 AND user_id = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING remember_me, otp_hash, otp_expires_at",
        )
        .bind(claims.sid)
        .bind(claims.sub)
        .bind(now)
        .fetch_optional(&self.db)
        .await?;
        let challenge = challenge.ok_or(LoginError::InvalidMfa)?;
        let remember_me = challenge.remember_me;
        let user = users::find_by_id(&self.db, UserId(claims.sub))
            .await?
            .ok_or(LoginError::InvalidMfa)?;
        if user.status != UserStatus::Active {
            return Err(LoginError::InvalidMfa);
        }
        let sent_code = match (&challenge.otp_hash, challenge.otp_expires_at) {
            (Some(hash), Some(expires)) if now < expires => Some(hash.as_slice()),
            _ => None,
        };
        let verified = match sent_code {
            Some(hash) if otp_hash(code.trim()) == hash => Ok(Factor::SentCode),
            _ => self.mfa.verify(user.id, code).await,
        };
        match verified {
            Ok(Factor::Totp | Factor::SentCode) => {}
            Ok(Factor::BackupCode { remaining }) => {
                let reason = format!("remaining={remaining}");
                self.event("mfa_backup_code_used", Some(user.id.0), client, &reason)
                    .await?;
            }
            Err(crate::mfa::MfaError::InvalidCode) => {
                self.event("mfa_failed", Some(user.id.0), client, "invalid_code")
                    .await?;
                self.count_failure(&user, now, client, "bad_mfa_code")
                    .await?;
                return Err(LoginError::InvalidMfa);
            }
            Err(other) => return Err(other.into()),
        }
        let tokens = self.sessions.start(user.id, remember_me, client).await?;
        let trusted_device = if trust_device {
            let device = self
                .devices
                .trust(user.id, client.user_agent.as_deref())
                .await?;
            self.event(
                "mfa_device_trusted",
                Some(user.id.0),
                client,
                "user_request",
            )
            .await?;
            Some(device)
        } else {
            None
        };
        Ok(LoggedIn {
            user_id: user.id,
            tokens,
            must_change_password: user.must_change_password,
            trusted_device,
        })
    }

    /// Sends a one-time code for an MFA challenge through the configured out-of-band sender.
    /// The code is bound to the challenge; at most [`MAX_SENDS_PER_CHALLENGE`] sends each.
    pub async fn send_fallback_code(
        &self,
        challenge_token: &str,
        client: &ClientInfo,
    ) -> Result<&'static str, LoginError> {
        let sender = self
            .otp_sender
            .as_ref()
            .ok_or(LoginError::FallbackUnavailable)?;
        let claims = self
            .tokens
            .validate(challenge_token, TokenType::MfaChallenge)
            .map_err(|_| LoginError::InvalidMfa)?;
        let now = self.clock.now();
        let code = SecretString::from(six_digits()?);
        let expires_at = now + Duration::seconds(crate::otp::CODE_TTL_SECS);
        let updated = sqlx::query(
            "UPDATE mfa_challenges SET otp_hash = $3, otp_expires_at = $4, otp_sends = otp_sends + 1 \
             WHERE id = $1 AND user_id = $2 AND used_at IS NULL AND expires_at > $5 AND otp_sends < $6",
        )
        .bind(claims.sid)
        .bind(claims.sub)
        .bind(otp_hash(code.expose_secret()))
        .bind(expires_at)
        .bind(now)
        .bind(crate::otp::MAX_SENDS_PER_CHALLENGE)
        .execute(&self.db)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(LoginError::InvalidMfa);
        }
        let user = users::find_by_id(&self.db, UserId(claims.sub))
            .await?
            .ok_or(LoginError::InvalidMfa)?;
        let message = OtpMessage {
            user_id: user.id.0,
            to: &user.email,
            code: &code,
            expires_at,
        };
        sender
            .send(&message)
            .await
            .map_err(|e| LoginError::FallbackUnavailableNow(e.to_string()))?;
        self.event("mfa_code_sent", Some(user.id.0), client, sender.channel())
            .await?;
        Ok(sender.channel())
    }

    /// With a verifier configured, the challenge response must pass; a verifier that cannot be
    /// reached refuses (fail closed).
    async fn require_challenge(
        &self,
        user: &UserRecord,
        response: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(), LoginError> {
        let Some(verifier) = &self.challenge_verifier else {
            return Ok(());
        };
        let Some(response) = response.filter(|r| !r.is_empty()) else {
            self.event(
                "login_refused",
                Some(user.id.0),
                client,
                "challenge_missing",
            )
            .await?;
            return Err(LoginError::ChallengeRequired);
        };
        match verifier.verify(response, client).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.event("login_refused", Some(user.id.0), client, "challenge_failed")
                    .await?;
                Err(LoginError::ChallengeRequired)
            }
            Err(error) => {
                tracing::warn!(error = %error, "login challenge verifier unavailable: refusing");
                Err(LoginError::ChallengeUnavailable)
            }
        }
    }

    /// Turns the login challenge on with this verifier.
    pub fn set_challenge_verifier(&mut self, verifier: Arc<dyn ChallengeVerifier>) {
        self.challenge_verifier = Some(verifier);
    }

    /// Locked accounts and attempts inside the progressive delay are refused before the
    /// password is checked, so guessing during a lockout learns nothing. Returns the number of
    /// failures in the current window.
    async fn refuse_if_throttled(
        &self,
        user: &UserRecord,
        now: DateTime<Utc>,
        client: &ClientInfo,
    ) -> Result<i32, LoginError> {
        let state: FailureState = sqlx::query_as(
            "SELECT failed_attempts, first_failed_at, last_failed_at, locked_until FROM users WHERE id = $1",
        )
        .bind(user.id.0)
        .fetch_one(&self.db)
        .await?;
        let FailureState {
            failed_attempts: failures,
            first_failed_at: first_failed,
            last_failed_at: last_failed,
            locked_until,
        } = state;
        if locked_until.is_some_and(|until| now < until) {
            self.event("login_refused", Some(user.id.0), client, "locked")
                .await?;
            return Err(LoginError::InvalidCredentials);
        }
        let in_window = first_failed
            .is_some_and(|first| now - first < Duration::minutes(FAILURE_WINDOW_MINUTES));
        if let (true, Some(last), Some(delay)) = (in_window, last_failed, delay_after(failures)) {
            let ready_at = last + delay;
            if now < ready_at {
                self.event(
                    "login_refused",
                    Some(user.id.0),
                    client,
                    "progressive_delay",
                )
                .await?;
                let wait = (ready_at - now).num_milliseconds().max(0);
                return Err(LoginError::TooSoon {
                    retry_after_secs: u64::try_from(wait).unwrap_or(0).div_ceil(1000).max(1),
                });
            }
        }
        Ok(if in_window { failures } else { 0 })
    }

    async fn count_failure(
        &self,
        user: &UserRecord,
        now: DateTime<Utc>,
        client: &ClientInfo,
        reason: &str,
    ) -> Result<(), LoginError> {
        // Restart the count when the window has passed; lock at the threshold.
        let (failures,): (i32,) = sqlx::query_as(
            "UPDATE users SET \
               failed_attempts = CASE WHEN first_failed_at IS NULL OR first_failed_at <= $2 - make_interval(mins => $3) \
                                      THEN 1 ELSE failed_attempts + 1 END, \
               first_failed_at = CASE WHEN first_failed_at IS NULL OR first_failed_at <= $2 - make_interval(mins => $3) \
                                      THEN $2 ELSE first_failed_at END, \
               last_failed_at = $2 \
             WHERE id = $1 RETURNING failed_attempts",
        )
        .bind(user.id.0)
        .bind(now)
        .bind(i32::try_from(FAILURE_WINDOW_MINUTES).unwrap_or(15))
        .fetch_one(&self.db)
        .await?;
        self.event("login_failed", Some(user.id.0), client, reason)
            .await?;
        if failures >= LOCK_AFTER {
            sqlx::query("UPDATE users SET locked_until = $2 WHERE id = $1")
                .bind(user.id.0)
                .bind(now + Duration::minutes(LOCK_MINUTES))
                .execute(&self.db)
                .await?;
            self.event(
                "account_locked",
                Some(user.id.0),
                client,
                "too_many_failures",
            )
            .await?;
            tracing::warn!(user_id = %user.id, "account locked after repeated login failures");
        }
        Ok(())
    }

    async fn clear_failures(&self, user: UserId) -> Result<(), LoginError> {
        sqlx::query(
            "UPDATE users SET failed_attempts = 0, first_failed_at = NULL, last_failed_at = NULL, locked_until = NULL WHERE id = $1",
        )
        .bind(user.0)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Changes a user's own password: the current one must be given, the new one must pass the
    /// policy and differ from it. Every other session of the user is revoked; the forced-change
    /// flag is cleared.
    pub async fn change_password(
        &self,
        user: UserId,
        current_session: Uuid,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<(), ChangePasswordError> {
        let record = users::find_by_id(&self.db, user)
            .await?
            .ok_or(ChangePasswordError::WrongPassword)?;
        if !self
            .hasher
            .verify(current, Some(&record.password_hash))
            .await?
            .matches
        {
            let event = SecurityEvent {
                kind: "password_change_failed",
                user: Some(user.0),
                session: Some(current_session),
                reason: Some("wrong_current_password"),
                actor: None,
            };
            record_event(
                &mut *self.db.acquire().await?,
                self.clock.now(),
                event,
                &ClientInfo::default(),
            )
            .await?;
            return Err(ChangePasswordError::WrongPassword);
        }
        let normalized = crate::policy::normalize(new.expose_secret());
        crate::policy::check(&normalized, &record.username).map_err(ChangePasswordError::Policy)?;
        if normalized == crate::policy::normalize(current.expose_secret()) {
            return Err(ChangePasswordError::Unchanged);
        }
        let hash = self.hasher.hash(new).await?;
        sqlx::query(
            "UPDATE users SET password_hash = $2, must_change_password = false, password_changed_at = $3, updated_at = $3 WHERE id = $1",
        )
        .bind(user.0)
        .bind(hash)
        .bind(self.clock.now())
        .execute(&self.db)
        .await?;
        self.sessions
            .revoke_all(user, Some(current_session), "password_changed")
            .await?;
        let event = SecurityEvent {
            kind: "password_changed",
            user: Some(user.0),
            session: Some(current_session),
            reason: None,
            actor: None,
        };
        record_event(
            &mut *self.db.acquire().await?,
            self.clock.now(),
            event,
            &ClientInfo::default(),
        )
        .await?;
        Ok(())
    }

    /// Turns the out-of-band fallback on with this sender.
    pub fn set_otp_sender(&mut self, sender: Arc<dyn OtpSender>) {
        self.otp_sender = Some(sender);
    }

    pub fn hasher(&self) -> &PasswordHasherPool {
        &self.hasher
    }

    /// The administrator's unlock: clears the lock and the failure count.
    pub async fn unlock(&self, user: UserId) -> Result<(), LoginError> {
        self.clear_failures(user).await?;
        self.event(
            "account_unlocked",
            Some(user.0),
            &ClientInfo::default(),
            "admin",
        )
        .await
    }

    async fn event(
        &self,
        kind: &str,
        user: Option<Uuid>,
        client: &ClientInfo,
        reason: &str,
    ) -> Result<(), LoginError> {
        let mut conn = self.db.acquire().await?;
        let event = SecurityEvent {
            kind,
            user,
            session: None,
            reason: Some(reason),
            actor: None,
        };
        record_event(&mut conn, self.clock.now(), event, client).await?;
        Ok(())
    }
}

/// Six uniformly random digits.
fn six_digits() -> Result<String, LoginError> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let rng = SystemRandom::new();
    loop {
        let mut raw = [0u8; 4];
        rng.fill(&mut raw)
            .map_err(|_| LoginError::Database("the random number generator failed".into()))?;
        let n = u32::from_le_bytes(raw);
        // Rejection sampling: drop the top sliver so every code is equally likely.
        if n < u32::MAX - u32::MAX % 1_000_000 {
            return Ok(format!("{:06}", n % 1_000_000));
        }
    }
}

fn otp_hash(code: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, code.as_bytes())
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_and_is_capped() {
        assert_eq!(delay_after(2), None);
        assert_eq!(delay_after(3), Some(Duration::seconds(1)));
        assert_eq!(delay_after(4), Some(Duration::seconds(2)));
        assert_eq!(delay_after(5), Some(Duration::seconds(4)));
        assert_eq!(delay_after(40), Some(Duration::seconds(60)));
    }
}

//! Password login with anti-automation.
//!
//! Failures are counted per username in Postgres (`login_attempts`, so the count holds across
//! instances), keyed by a keyed hash of the folded username whether or not an account has it:
//! an unknown username meets exactly the same delays, challenge and lockout as a real one (and
//! a dummy hash is verified for it), so no answer tells, by status, body, headers or timing,
//! which usernames exist. After 3 failures within the window each further attempt must wait
//! (1 s, 2 s, 4 s, ... capped at 60 s) and an earlier one is refused without checking the
//! password; after 5 failures within 15 minutes the username is locked for 15 minutes.
//!
//! Each attempt is counted as a failure *before* its password is checked, under a row lock,
//! and the count is cleared when it succeeds: parallel guesses cannot all pass the check on the
//! same count, so at most the threshold are ever verified before the lock.
//!
//! Counters and the security events of failures commit at once, on their own: they are the
//! defence against guessing and hold whatever becomes of the request. What a success changes
//! (a session, an MFA challenge) is written in the caller's transaction, which commits it with
//! its audit event ([`LoginService::finish`]). Each failure, lockout and refusal is recorded as
//! a security event with its reason.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgConnection, PgPool};
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
    Database(#[source] crate::Failure),
}

impl From<sqlx::Error> for LoginError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.into())
    }
}

impl From<UserError> for LoginError {
    fn from(error: UserError) -> Self {
        Self::Database(error.into())
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
    Database(#[source] crate::Failure),
}

impl From<sqlx::Error> for ChangePasswordError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.into())
    }
}

impl From<UserError> for ChangePasswordError {
    fn from(error: UserError) -> Self {
        Self::Database(error.into())
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

/// One password step as the client sent it (a trusted-device token, if any, goes to
/// [`LoginService::finish`]: it stands in for the second factor, never for the password).
#[derive(Debug, Clone, Copy)]
pub struct LoginAttempt<'a> {
    pub username: &'a str,
    pub password: &'a SecretString,
    pub remember_me: bool,
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

/// What the throttle decided about one attempt, under the row lock.
enum Reservation {
    /// Locked out: refused without a password check.
    Locked,
    /// Inside the progressive delay: refused without a password check.
    TooSoon { retry_after_secs: u64 },
    /// Counted as a failure in advance; `before` failures were recent, and this attempt
    /// locked the username if it fails (`locks`).
    Counted { before: i32, locks: bool },
}

/// A password step that passed: what [`LoginService::finish`] needs to open the session.
#[derive(Debug)]
pub struct Verified {
    user: UserRecord,
    key: Vec<u8>,
    /// A new hash under the configured parameters, when the stored one is outdated.
    rehash: Option<String>,
    remember_me: bool,
}

impl MfaVerified {
    pub fn user_id(&self) -> UserId {
        self.user.id
    }

    pub fn username(&self) -> &str {
        &self.user.username
    }
}

impl Verified {
    pub fn user_id(&self) -> UserId {
        self.user.id
    }

    pub fn username(&self) -> &str {
        &self.user.username
    }
}

/// A checked new password: its hash, ready for [`LoginService::change_password`].
#[derive(Debug)]
pub struct NewPassword(String);

/// An MFA step that passed: the user and how long their session may live.
#[derive(Debug)]
pub struct MfaVerified {
    user: UserRecord,
    remember_me: bool,
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

    /// A whole login in a transaction of its own, for callers outside a request (tests, the
    /// benchmark): a request commits [`Self::finish`]'s changes with its audit event instead.
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
            challenge_response: None,
        };
        let verified = self.check(&attempt, client).await?;
        let mut tx = self.db.begin().await?;
        let outcome = self.finish(&mut tx, verified, None, client).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// The password step: throttle, challenge and password check. Changes nothing but the
    /// username's failure count and the security events of a failure.
    pub async fn check(
        &self,
        attempt: &LoginAttempt<'_>,
        client: &ClientInfo,
    ) -> Result<Verified, LoginError> {
        let now = self.clock.now();
        let key = self.attempt_key(attempt.username);
        let user = users::find_by_username(&self.db, attempt.username).await?;
        let user_id = user.as_ref().map(|u| u.id);
        // The challenge comes before anything is counted: a bot that fails it does not lock
        // the account it aims at. (Read without the lock; the reservation decides again.)
        if let Reservation::Counted { before, .. } = decide(&self.peek(&key).await?, now)
            && before >= DELAY_AFTER
        {
            self.require_challenge(user_id, attempt.challenge_response, client)
                .await?;
        }
        let (_, locks) = match self.reserve(&key, user_id, now).await? {
            Reservation::Locked => {
                // The same work as a wrong password, so a locked username cannot be told from
                // the others by how long the answer takes.
                self.hasher
                    .verify(
                        attempt.password,
                        user.as_ref().map(|u| u.password_hash.as_str()),
                    )
                    .await?;
                self.event("login_refused", user_id, client, "locked")
                    .await?;
                return Err(LoginError::InvalidCredentials);
            }
            Reservation::TooSoon { retry_after_secs } => {
                self.event("login_refused", user_id, client, "progressive_delay")
                    .await?;
                return Err(LoginError::TooSoon { retry_after_secs });
            }
            Reservation::Counted { before, locks } => (before, locks),
        };
        let verification = self
            .hasher
            .verify(
                attempt.password,
                user.as_ref().map(|u| u.password_hash.as_str()),
            )
            .await?;
        let reason = match &user {
            None => Some("unknown_user"),
            Some(_) if !verification.matches => Some("bad_password"),
            Some(user) if user.status != UserStatus::Active => Some("account_not_active"),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            self.failed(user_id, client, reason, locks).await?;
            return Err(LoginError::InvalidCredentials);
        }
        let Some(user) = user else {
            return Err(LoginError::InvalidCredentials);
        };
        let rehash = if verification.needs_rehash {
            Some(self.hasher.hash(attempt.password).await?)
        } else {
            None
        };
        Ok(Verified {
            user,
            key,
            rehash,
            remember_me: attempt.remember_me,
        })
    }

    /// Completes a password step that passed, in the caller's transaction: clears the failure
    /// count, stores a rehash, and opens a session, or an MFA challenge when the account has a
    /// second factor (a live trusted-device token of this user stands in for it, never for the
    /// password).
    pub async fn finish(
        &self,
        tx: &mut PgConnection,
        verified: Verified,
        device: Option<&SecretString>,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, LoginError> {
        let Verified {
            user,
            key,
            rehash,
            remember_me,
        } = verified;
        sqlx::query!("DELETE FROM login_attempts WHERE username_key = $1", &key)
            .execute(&mut *tx)
            .await?;
        if let Some(rehashed) = rehash {
            sqlx::query!(
                "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
                user.id.0,
                rehashed
            )
            .execute(&mut *tx)
            .await?;
        }
        if user.mfa_enabled && !self.trusted(tx, &user, device, client).await? {
            return self.challenge(tx, &user, remember_me).await;
        }
        let tokens = self
            .sessions
            .start_in(tx, user.id, remember_me, client)
            .await?;
        Ok(LoginOutcome::LoggedIn(LoggedIn {
            user_id: user.id,
            tokens,
            must_change_password: user.must_change_password,
            trusted_device: None,
        }))
    }

    /// The key of a username's row in `login_attempts`: a keyed hash of the username as
    /// typed (trimmed, case folded), so the table holds no username in clear.
    fn attempt_key(&self, username: &str) -> Vec<u8> {
        self.tokens.username_key(&username.trim().to_lowercase())
    }

    /// The failure state of a username as it is now (all clear if it has none).
    async fn peek(&self, key: &[u8]) -> Result<FailureState, LoginError> {
        let state: Option<FailureState> = sqlx::query_as!(
            FailureState,
            "SELECT failed_attempts, first_failed_at, last_failed_at, locked_until \
             FROM login_attempts WHERE username_key = $1",
            key
        )
        .fetch_optional(&self.db)
        .await?;
        Ok(state.unwrap_or(FailureState {
            failed_attempts: 0,
            first_failed_at: None,
            last_failed_at: None,
            locked_until: None,
        }))
    }

    /// Decides an attempt under the username's row lock and, unless it is refused, counts it as
    /// a failure in advance (locking the username at the threshold). Committed at once.
    async fn reserve(
        &self,
        key: &[u8],
        user: Option<UserId>,
        now: DateTime<Utc>,
    ) -> Result<Reservation, LoginError> {
        let mut tx = self.db.begin().await?;
        sqlx::query!("INSERT INTO login_attempts (username_key, user_id) VALUES ($1, $2) \
             ON CONFLICT (username_key) DO UPDATE SET user_id = coalesce(EXCLUDED.user_id, login_attempts.user_id)", key, user.map(|u| u.0))
        .execute(&mut *tx)
        .await?;
        let state: FailureState = sqlx::query_as!(
            FailureState,
            "SELECT failed_attempts, first_failed_at, last_failed_at, locked_until \
             FROM login_attempts WHERE username_key = $1 FOR UPDATE",
            key
        )
        .fetch_one(&mut *tx)
        .await?;
        let decision = decide(&state, now);
        if let Reservation::Counted { before, locks } = decision {
            let window_start = if before == 0 {
                now
            } else {
                state.first_failed_at.unwrap_or(now)
            };
            sqlx::query!("UPDATE login_attempts SET failed_attempts = $2, first_failed_at = $3, last_failed_at = $4, \
                 locked_until = $5 WHERE username_key = $1", key, before + 1, window_start, now, locks.then(|| now + Duration::minutes(LOCK_MINUTES)))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(decision)
    }

    /// Records a failed attempt (already counted) and, if it reached the threshold, the lock.
    async fn failed(
        &self,
        user: Option<UserId>,
        client: &ClientInfo,
        reason: &str,
        locked: bool,
    ) -> Result<(), LoginError> {
        self.event("login_failed", user, client, reason).await?;
        if locked {
            self.event("account_locked", user, client, "too_many_failures")
                .await?;
            tracing::warn!(user_id = ?user.map(|u| u.0), "username locked after repeated login failures");
        }
        Ok(())
    }

    async fn trusted(
        &self,
        tx: &mut PgConnection,
        user: &UserRecord,
        device: Option<&SecretString>,
        client: &ClientInfo,
    ) -> Result<bool, LoginError> {
        let Some(token) = device else {
            return Ok(false);
        };
        let recognised = self.devices.recognise(&mut *tx, user.id, token).await?;
        let reason = if recognised {
            "trusted_device"
        } else {
            "unknown_device"
        };
        let event = SecurityEvent {
            kind: "mfa_device_check",
            user: Some(user.id.0),
            session: None,
            reason: Some(reason),
            actor: None,
        };
        record_event(tx, self.clock.now(), event, client).await?;
        Ok(recognised)
    }

    /// A single-use, five-minute MFA challenge for a user who passed the password step.
    async fn challenge(
        &self,
        tx: &mut PgConnection,
        user: &UserRecord,
        remember_me: bool,
    ) -> Result<LoginOutcome, LoginError> {
        let now = self.clock.now();
        let id = Uuid::now_v7();
        let ttl = Duration::minutes(MFA_CHALLENGE_MINUTES);
        sqlx::query!("INSERT INTO mfa_challenges (id, user_id, remember_me, expires_at) VALUES ($1, $2, $3, $4)", id, user.id.0, remember_me, now + ttl)
            .execute(&mut *tx)
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

    /// Whose MFA challenge this is, if the token is a valid one (signature and expiry only;
    /// for keying the login rate limit before anything else is looked at).
    pub fn challenge_user(&self, challenge_token: &str) -> Option<UserId> {
        self.tokens
            .validate(challenge_token, TokenType::MfaChallenge)
            .ok()
            .map(|claims| UserId(claims.sub))
    }

    /// The second step's check: a TOTP, backup or sent code against a challenge from the
    /// password step. Changes only defensive state, committed at once whatever becomes of the
    /// request: the challenge is used up whatever the outcome, the code is used up (each TOTP
    /// step and backup code works once), and a wrong code counts towards the lockout.
    /// [`Self::finish_mfa`] then opens the session in the caller's transaction.
    pub async fn check_mfa(
        &self,
        challenge_token: &str,
        code: &str,
        client: &ClientInfo,
    ) -> Result<MfaVerified, LoginError> {
        let claims = self
            .tokens
            .validate(challenge_token, TokenType::MfaChallenge)
            .map_err(|_| LoginError::InvalidMfa)?;
        let now = self.clock.now();
        let mut conn = self.db.acquire().await?;
        let challenge: Option<UsedChallenge> = sqlx::query_as!(UsedChallenge, "UPDATE mfa_challenges SET used_at = $3 WHERE id = $1 AND user_id = $2 AND used_at IS NULL AND expires_at > $3 \
             RETURNING remember_me, otp_hash, otp_expires_at", claims.sid, claims.sub, now)
        .fetch_optional(&mut *conn)
        .await?;
        let challenge = challenge.ok_or(LoginError::InvalidMfa)?;
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
            _ => self.mfa.verify(&mut conn, user.id, code).await,
        };
        drop(conn);
        match verified {
            Ok(Factor::Totp | Factor::SentCode) => {}
            Ok(Factor::BackupCode { remaining }) => {
                let reason = format!("remaining={remaining}");
                self.event("mfa_backup_code_used", Some(user.id), client, &reason)
                    .await?;
            }
            Err(crate::mfa::MfaError::InvalidCode) => {
                self.event("mfa_failed", Some(user.id), client, "invalid_code")
                    .await?;
                self.count_failure(&user, client, "bad_mfa_code").await?;
                return Err(LoginError::InvalidMfa);
            }
            Err(other) => return Err(other.into()),
        }
        Ok(MfaVerified {
            user,
            remember_me: challenge.remember_me,
        })
    }

    /// Opens the session of an MFA step that passed, in the caller's transaction, and if
    /// `trust_device`, a trusted-device token for the next 30 days in
    /// [`LoggedIn::trusted_device`].
    pub async fn finish_mfa(
        &self,
        tx: &mut PgConnection,
        verified: MfaVerified,
        trust_device: bool,
        client: &ClientInfo,
    ) -> Result<LoggedIn, LoginError> {
        let MfaVerified { user, remember_me } = verified;
        let tokens = self
            .sessions
            .start_in(tx, user.id, remember_me, client)
            .await?;
        let trusted_device = if trust_device {
            let device = self
                .devices
                .trust(&mut *tx, user.id, client.user_agent.as_deref())
                .await?;
            let event = SecurityEvent {
                kind: "mfa_device_trusted",
                user: Some(user.id.0),
                session: None,
                reason: Some("user_request"),
                actor: None,
            };
            record_event(tx, self.clock.now(), event, client).await?;
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

    /// The MFA step in a transaction of its own, for callers outside a request (tests).
    pub async fn complete_mfa(
        &self,
        challenge_token: &str,
        code: &str,
        client: &ClientInfo,
    ) -> Result<LoggedIn, LoginError> {
        let verified = self.check_mfa(challenge_token, code, client).await?;
        let mut tx = self.db.begin().await?;
        let logged_in = self.finish_mfa(&mut tx, verified, false, client).await?;
        tx.commit().await?;
        Ok(logged_in)
    }

    /// Sends a one-time code for an MFA challenge through the configured out-of-band sender,
    /// storing its hash in the caller's transaction (if that does not commit, the code sent is
    /// worth nothing). The code is bound to the challenge; at most [`MAX_SENDS_PER_CHALLENGE`]
    /// sends each.
    pub async fn send_fallback_code(
        &self,
        tx: &mut PgConnection,
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
        let updated = sqlx::query!("UPDATE mfa_challenges SET otp_hash = $3, otp_expires_at = $4, otp_sends = otp_sends + 1 \
             WHERE id = $1 AND user_id = $2 AND used_at IS NULL AND expires_at > $5 AND otp_sends < $6", claims.sid, claims.sub, otp_hash(code.expose_secret()), expires_at, now, crate::otp::MAX_SENDS_PER_CHALLENGE)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(LoginError::InvalidMfa);
        }
        let user = users::find_in(&mut *tx, UserId(claims.sub))
            .await?
            .ok_or(LoginError::InvalidMfa)?;
        let message = OtpMessage {
            user_id: user.id.0,
            to: &user.email,
            purpose: crate::otp::OtpPurpose::MfaCode,
            code: &code,
            expires_at: Some(expires_at),
        };
        sender
            .send(&message)
            .await
            .map_err(|e| LoginError::FallbackUnavailableNow(e.to_string()))?;
        let event = SecurityEvent {
            kind: "mfa_code_sent",
            user: Some(user.id.0),
            session: None,
            reason: Some(sender.channel()),
            actor: None,
        };
        record_event(tx, now, event, client).await?;
        Ok(sender.channel())
    }

    /// With a verifier configured, the challenge response must pass; a verifier that cannot be
    /// reached refuses (fail closed).
    async fn require_challenge(
        &self,
        user: Option<UserId>,
        response: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(), LoginError> {
        let Some(verifier) = &self.challenge_verifier else {
            return Ok(());
        };
        let Some(response) = response.filter(|r| !r.is_empty()) else {
            self.event("login_refused", user, client, "challenge_missing")
                .await?;
            return Err(LoginError::ChallengeRequired);
        };
        match verifier.verify(response, client).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.event("login_refused", user, client, "challenge_failed")
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

    /// Counts a failure of a later step (a wrong second-factor code) against the username,
    /// locking it at the threshold.
    async fn count_failure(
        &self,
        user: &UserRecord,
        client: &ClientInfo,
        reason: &str,
    ) -> Result<(), LoginError> {
        let now = self.clock.now();
        let key = self.attempt_key(&user.username);
        // Restart the count when the window has passed; lock at the threshold.
        let failures: i32 = sqlx::query_scalar!("INSERT INTO login_attempts AS a (username_key, user_id, failed_attempts, first_failed_at, last_failed_at) \
             VALUES ($1, $2, 1, $3, $3) \
             ON CONFLICT (username_key) DO UPDATE SET \
               failed_attempts = CASE WHEN a.first_failed_at IS NULL OR a.first_failed_at <= $3 - make_interval(mins => $4) \
                                      THEN 1 ELSE a.failed_attempts + 1 END, \
               first_failed_at = CASE WHEN a.first_failed_at IS NULL OR a.first_failed_at <= $3 - make_interval(mins => $4) \
                                      THEN $3 ELSE a.first_failed_at END, \
               last_failed_at = $3 \
             RETURNING failed_attempts", &key, user.id.0, now, i32::try_from(FAILURE_WINDOW_MINUTES).unwrap_or(15))
        .fetch_one(&self.db)
        .await?;
        let locks = failures >= LOCK_AFTER;
        if locks {
            sqlx::query!(
                "UPDATE login_attempts SET locked_until = $2 WHERE username_key = $1",
                &key,
                now + Duration::minutes(LOCK_MINUTES)
            )
            .execute(&self.db)
            .await?;
        }
        self.failed(Some(user.id), client, reason, locks).await
    }

    /// The checks of a user's own password change: the current password must be given (a
    /// wrong one is recorded at once), the new one must pass the policy and differ from it.
    /// Returns the new hash for [`Self::change_password`].
    pub async fn check_password_change(
        &self,
        user: UserId,
        current_session: Uuid,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<NewPassword, ChangePasswordError> {
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
        Ok(NewPassword(self.hasher.hash(new).await?))
    }

    /// Stores a checked new password in the caller's transaction: every other session of the
    /// user is revoked and the forced-change flag cleared.
    pub async fn change_password(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        current_session: Uuid,
        new: NewPassword,
    ) -> Result<(), ChangePasswordError> {
        sqlx::query!("UPDATE users SET password_hash = $2, must_change_password = false, password_changed_at = $3, updated_at = $3 WHERE id = $1", user.0, new.0, self.clock.now())
        .execute(&mut *tx)
        .await?;
        self.sessions
            .revoke_all_in(tx, user, Some(current_session), "password_changed")
            .await?;
        let event = SecurityEvent {
            kind: "password_changed",
            user: Some(user.0),
            session: Some(current_session),
            reason: None,
            actor: None,
        };
        record_event(tx, self.clock.now(), event, &ClientInfo::default()).await?;
        Ok(())
    }

    /// Turns the out-of-band fallback on with this sender.
    pub fn set_otp_sender(&mut self, sender: Arc<dyn OtpSender>) {
        self.otp_sender = Some(sender);
    }

    /// The out-of-band sender, if one is configured.
    pub fn otp_sender(&self) -> Option<&Arc<dyn OtpSender>> {
        self.otp_sender.as_ref()
    }

    pub fn hasher(&self) -> &PasswordHasherPool {
        &self.hasher
    }

    /// Clears a lockout and the failure count, in the caller's transaction (an administrator's
    /// unlock, or `clinicd admin unlock`).
    pub async fn unlock(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        actor: Option<UserId>,
    ) -> Result<(), LoginError> {
        let username: Option<String> =
            sqlx::query_scalar!("SELECT username FROM users WHERE id = $1", user.0)
                .fetch_optional(&mut *tx)
                .await?;
        let key = username.as_deref().map(|name| self.attempt_key(name));
        sqlx::query!(
            "DELETE FROM login_attempts WHERE user_id = $1 OR username_key = $2",
            user.0,
            key
        )
        .execute(&mut *tx)
        .await?;
        let event = SecurityEvent {
            kind: "account_unlocked",
            user: Some(user.0),
            session: None,
            reason: Some(if actor.is_some() { "admin" } else { "cli" }),
            actor: actor.map(|a| a.0),
        };
        record_event(tx, self.clock.now(), event, &ClientInfo::default()).await?;
        Ok(())
    }

    /// Records a security event at once, on a connection of its own.
    async fn event(
        &self,
        kind: &str,
        user: Option<UserId>,
        client: &ClientInfo,
        reason: &str,
    ) -> Result<(), LoginError> {
        let mut conn = self.db.acquire().await?;
        let event = SecurityEvent {
            kind,
            user: user.map(|u| u.0),
            session: None,
            reason: Some(reason),
            actor: None,
        };
        record_event(&mut conn, self.clock.now(), event, client).await?;
        Ok(())
    }
}

/// Whether an attempt may go ahead on this state at `now`, and what it counts.
fn decide(state: &FailureState, now: DateTime<Utc>) -> Reservation {
    if state.locked_until.is_some_and(|until| now < until) {
        return Reservation::Locked;
    }
    let in_window = state
        .first_failed_at
        .is_some_and(|first| now - first < Duration::minutes(FAILURE_WINDOW_MINUTES));
    let before = if in_window { state.failed_attempts } else { 0 };
    if let (true, Some(last), Some(delay)) = (in_window, state.last_failed_at, delay_after(before))
    {
        let ready_at = last + delay;
        if now < ready_at {
            let wait = (ready_at - now).num_milliseconds().max(0);
            return Reservation::TooSoon {
                retry_after_secs: u64::try_from(wait).unwrap_or(0).div_ceil(1000).max(1),
            };
        }
    }
    Reservation::Counted {
        before,
        locks: before + 1 >= LOCK_AFTER,
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

/// How long after its window and lock are over a failure counter is kept: a day, so an
/// administrator can still see yesterday's failures.
const FORGET_AFTER_HOURS: i64 = 24;

/// Forgets failure counters whose window and lock ended more than a day ago (a row past its
/// window counts as no row, so this changes no answer; it keeps the table from growing with
/// every username ever mistyped). Run by the scheduled job `forget_login_attempts`.
pub async fn forget_stale_attempts(db: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM login_attempts \
         WHERE coalesce(last_failed_at, '-infinity') < now() - make_interval(hours => $1::int) \
           AND coalesce(first_failed_at, '-infinity') < now() - make_interval(mins => $2::int) \
           AND coalesce(locked_until, '-infinity') < now() - make_interval(hours => $1::int)",
        i32::try_from(FORGET_AFTER_HOURS).unwrap_or(24),
        i32::try_from(FAILURE_WINDOW_MINUTES).unwrap_or(15)
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
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

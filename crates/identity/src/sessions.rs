//! Sessions: a short-lived access token (JWT) plus an opaque, single-use refresh token stored
//! hashed. Every refresh rotates the refresh token; presenting a used one again revokes the
//! whole session and records a security event (someone else holds a copy). A session that has
//! not been used for the idle timeout cannot refresh, and none outlives its absolute lifetime.
//! Each user has at most `max_sessions` live sessions; a new one revokes the oldest.
//!
//! Access tokens are checked against the session row on every request, so a revoked session's
//! access tokens stop working at once, not when they expire.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::clock::Clock;
use crate::live_sessions::{Live, LiveSessions};
use crate::recent_sessions::RecentSessions;
use crate::tokens::{Claims, TokenError, TokenService, TokenType};
use crate::users::UserId;

#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub access_ttl: Duration,
    pub idle_timeout: Duration,
    pub absolute_lifetime: Duration,
    pub remember_me_lifetime: Duration,
    pub max_sessions: u32,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            idle_timeout: Duration::from_secs(15 * 60),
            absolute_lifetime: Duration::from_secs(12 * 3600),
            remember_me_lifetime: Duration::from_secs(7 * 24 * 3600),
            max_sessions: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Unknown, expired, idle, revoked or reused: the client must log in again.
    #[error("the session is not valid; log in again")]
    Invalid,
    #[error("a refresh token was used twice; the session has been revoked")]
    Reused,
    /// The caller's own check (for example CSRF) failed; the session is unchanged.
    #[error("the request was refused")]
    Refused,
    #[error("database error: {0}")]
    Database(#[source] crate::Failure),
    #[error("the random number generator failed")]
    Random,
}

impl From<sqlx::Error> for SessionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.into())
    }
}

impl From<TokenError> for SessionError {
    fn from(_: TokenError) -> Self {
        Self::Invalid
    }
}

/// Who is logging in from where (stored with the session, shown in the session list).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// What a login or refresh hands the client.
#[derive(Debug)]
pub struct IssuedTokens {
    pub user_id: UserId,
    pub session_id: Uuid,
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: SecretString,
    /// The session's absolute end: no refresh succeeds after it.
    pub session_expires_at: DateTime<Utc>,
}

/// The authenticated caller, from a valid access token of a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    /// For the audit trail's actor name (the id stays the reference).
    pub username: String,
    pub session_id: Uuid,
    pub token_id: Uuid,
    /// The session may only be used to change the password.
    pub must_change_password: bool,
    /// Bumped by the database whenever anything that decides the user's grants changes (their
    /// roles, a role's definition, their second factor): the key of the grants cache.
    pub access_version: i64,
    /// The account as `GET /api/auth/me` shows it, read by the same query as the session.
    pub profile: Profile,
}

/// The caller's account details, read with the session check so that `me` needs no query of
/// its own.
#[derive(Clone, PartialEq, Eq)]
pub struct Profile {
    pub display_name: String,
    pub email: String,
    pub mfa_enabled: bool,
}

impl std::fmt::Debug for Profile {
    // Staff contact details stay out of debug output and logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("mfa_enabled", &self.mfa_enabled)
            .finish_non_exhaustive()
    }
}

/// A live session as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionSummary {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A refresh token with its session, locked for rotation.
#[derive(sqlx::FromRow)]
struct RefreshRow {
    session_id: Uuid,
    used_at: Option<DateTime<Utc>>,
    user_id: Uuid,
    last_seen_at: DateTime<Utc>,
    absolute_expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    user_active: bool,
}

#[derive(Debug)]
pub struct SessionService {
    db: PgPool,
    tokens: Arc<TokenService>,
    clock: Arc<dyn Clock>,
    policy: SessionPolicy,
    rng: SystemRandom,
    /// The per-request session check, gathered across concurrent requests.
    live: LiveSessions,
    /// Sessions checked in full within the last minute, for a check in a read's own statement.
    recent: RecentSessions,
}

/// What a statement must find still true to confirm a remembered session: the SQL function
/// `session_confirmed` (migration 0031) takes these, in this order, and fails the statement
/// with SQLSTATE CK002 otherwise. `now` and `seen_after` are the request's clock and the idle
/// timeout's start, as in the full check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCheck {
    pub session: Uuid,
    pub user: Uuid,
    pub username: String,
    pub access_version: i64,
    pub now: DateTime<Utc>,
    pub seen_after: DateTime<Utc>,
}

/// A caller admitted on a remembered session: `principal` as the last full check found it,
/// valid only once a statement has confirmed `check`.
#[derive(Debug, Clone)]
pub struct Recalled {
    pub principal: Principal,
    pub check: SessionCheck,
}

fn chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

fn principal(claims: &Claims, live: Live) -> Principal {
    Principal {
        user_id: UserId(claims.sub),
        username: live.username,
        session_id: claims.sid,
        token_id: claims.jti,
        must_change_password: live.must_change_password,
        access_version: live.access_version,
        profile: Profile {
            display_name: live.display_name,
            email: live.email,
            mfa_enabled: live.mfa_enabled,
        },
    }
}

fn hash_token(token: &str) -> Vec<u8> {
    digest(&SHA256, token.as_bytes()).as_ref().to_vec()
}

impl SessionService {
    pub fn new(
        db: PgPool,
        tokens: Arc<TokenService>,
        clock: Arc<dyn Clock>,
        policy: SessionPolicy,
    ) -> Self {
        let live = LiveSessions::new(db.clone(), clock.clone(), chrono(policy.idle_timeout));
        Self {
            db,
            tokens,
            clock,
            policy,
            rng: SystemRandom::new(),
            live,
            recent: RecentSessions::default(),
        }
    }

    /// The CSRF token a cookie client must echo in `X-CSRF-Token` for this session.
    pub fn csrf_token(&self, session: Uuid) -> String {
        self.tokens.csrf_token(session)
    }

    pub fn csrf_token_matches(&self, session: Uuid, presented: &str) -> bool {
        self.tokens.csrf_token_matches(session, presented)
    }

    /// A new session (always a new id: no session fixation) for a user who has just proved who
    /// they are. Revokes the user's oldest sessions beyond the limit.
    pub async fn start(
        &self,
        user: UserId,
        remember_me: bool,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, SessionError> {
        let mut tx = self.db.begin().await?;
        let tokens = self.start_in(&mut tx, user, remember_me, client).await?;
        tx.commit().await?;
        Ok(tokens)
    }

    /// [`Self::start`] in the caller's transaction (which commits it with its audit event).
    pub async fn start_in(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        remember_me: bool,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, SessionError> {
        let now = self.clock.now();
        let session = Uuid::now_v7();
        let lifetime = if remember_me {
            self.policy.remember_me_lifetime
        } else {
            self.policy.absolute_lifetime
        };
        // Serialise logins of one user so the session limit holds under concurrency.
        sqlx::query_scalar!(
            r#"SELECT 1 AS "locked!" FROM users WHERE id = $1 FOR UPDATE"#,
            user.0
        )
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query!("INSERT INTO sessions (id, user_id, created_at, last_seen_at, absolute_expires_at, remember_me, client_ip, user_agent) \
             VALUES ($1, $2, $3, $3, $4, $5, CAST($6::text AS inet), $7)", session, user.0, now, now + chrono(lifetime), remember_me, client.ip.map(|ip| ip.to_string()), client.user_agent.as_deref().map(|ua| ua.chars().take(512).collect::<String>()))
        .execute(&mut *tx)
        .await?;
        sqlx::query!("UPDATE sessions SET revoked_at = $3, revoked_reason = 'session_limit' WHERE id IN ( \
               SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND absolute_expires_at > $3 \
               ORDER BY created_at DESC, id DESC OFFSET $2)", user.0, i64::from(self.policy.max_sessions), now)
        .execute(&mut *tx)
        .await?;
        let refresh_token = self.new_refresh_token(tx, session, now).await?;
        self.issue(user, session, now, now + chrono(lifetime), refresh_token)
    }

    /// [`Self::refresh_in`] in a transaction of its own, for callers outside a request (tests):
    /// a request commits its change with its audit event instead.
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, SessionError> {
        let mut tx = self.db.begin().await?;
        let result = self
            .refresh_in(&mut tx, refresh_token, client, |_| true)
            .await;
        if matches!(result, Ok(_) | Err(SessionError::Reused)) {
            tx.commit().await?;
        }
        result
    }

    /// Rotates a refresh token in the caller's transaction: the presented one is used up and a
    /// new pair is issued, but only if `allowed(session id)` holds once the token's session is
    /// known (a cookie client's CSRF token is bound to the session); otherwise nothing changes
    /// and the answer is [`SessionError::Refused`].
    ///
    /// A token presented a second time revokes its session and records a security event: the
    /// answer is then [`SessionError::Reused`], and the caller must still commit the
    /// transaction (with its audit event) for the revocation to hold.
    pub async fn refresh_in(
        &self,
        tx: &mut PgConnection,
        refresh_token: &SecretString,
        client: &ClientInfo,
        allowed: impl FnOnce(Uuid) -> bool,
    ) -> Result<IssuedTokens, SessionError> {
        let now = self.clock.now();
        let hash = hash_token(refresh_token.expose_secret());
        let row: Option<RefreshRow> = sqlx::query_as!(RefreshRow, "SELECT r.session_id, r.used_at, s.user_id, s.last_seen_at, s.absolute_expires_at, s.revoked_at, \
                    u.status = 'active' AS \"user_active!\" \
             FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id \
             WHERE r.token_hash = $1 FOR UPDATE OF r, s", &hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(RefreshRow {
            session_id: session,
            used_at,
            user_id: user,
            last_seen_at: last_seen,
            absolute_expires_at: absolute_expiry,
            revoked_at,
            user_active,
        }) = row
        else {
            return Err(SessionError::Invalid);
        };
        if !allowed(session) {
            return Err(SessionError::Refused);
        }
        if used_at.is_some() {
            sqlx::query!("UPDATE sessions SET revoked_at = coalesce(revoked_at, $2), revoked_reason = coalesce(revoked_reason, 'refresh_token_reuse') WHERE id = $1", session, now)
                .execute(&mut *tx)
                .await?;
            let event = SecurityEvent {
                kind: "refresh_token_reuse",
                user: Some(user),
                session: Some(session),
                reason: None,
                actor: None,
            };
            record_event(tx, now, event, client).await?;
            tracing::warn!(session_id = %session, "refresh token reused: session revoked");
            return Err(SessionError::Reused);
        }
        let idle = now - last_seen > chrono(self.policy.idle_timeout);
        if revoked_at.is_some() || now >= absolute_expiry || idle || !user_active {
            return Err(SessionError::Invalid);
        }
        sqlx::query!(
            "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1",
            &hash,
            now
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE sessions SET last_seen_at = $2 WHERE id = $1",
            session,
            now
        )
        .execute(&mut *tx)
        .await?;
        let next = self.new_refresh_token(tx, session, now).await?;
        self.issue(UserId(user), session, now, absolute_expiry, next)
    }

    /// The caller behind an access token, if its session is still live. Records activity (at
    /// most once a minute per session) so an active user's session does not go idle.
    pub async fn authenticate(&self, access_token: &str) -> Result<Principal, SessionError> {
        let claims: Claims = self.tokens.validate(access_token, TokenType::Access)?;
        let now = self.clock.now();
        let Some(live) = self.live.check(claims.sid, claims.sub).await? else {
            self.recent.forget(claims.sid);
            return Err(SessionError::Invalid);
        };
        let last_seen = live.last_seen_at;
        if now - last_seen > crate::recent_sessions::REMEMBER_FOR {
            sqlx::query!(
                "UPDATE sessions SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2",
                claims.sid,
                now
            )
            .execute(&self.db)
            .await?;
        }
        self.recent.remember(&live, now);
        Ok(principal(&claims, live))
    }

    /// The caller behind an access token as this instance's last full check of its session
    /// found them, if that was within the last minute; `None` otherwise (then
    /// [`Self::authenticate`]). The token itself is verified as by `authenticate`. The answer
    /// is not an authentication: it holds until a statement has confirmed its
    /// [`SessionCheck`], and a failed confirmation calls for [`Self::forget`] and a full check.
    pub fn recall(&self, access_token: &str) -> Result<Option<Recalled>, SessionError> {
        let claims: Claims = self.tokens.validate(access_token, TokenType::Access)?;
        let now = self.clock.now();
        let Some(live) = self.recent.recall(claims.sid, claims.sub, now) else {
            return Ok(None);
        };
        let check = SessionCheck {
            session: claims.sid,
            user: claims.sub,
            username: live.username.clone(),
            access_version: live.access_version,
            now,
            seen_after: now - chrono(self.policy.idle_timeout),
        };
        Ok(Some(Recalled {
            principal: principal(&claims, live),
            check,
        }))
    }

    /// Drops what this instance remembers of a session, after a statement could not confirm it.
    pub fn forget(&self, session: Uuid) {
        self.recent.forget(session);
    }

    /// Revokes one session (logout, or the user's own choice in the session list), in the
    /// caller's transaction; `false` if it is not the user's or already over.
    pub async fn revoke_in(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        session: Uuid,
        reason: &str,
    ) -> Result<bool, SessionError> {
        self.recent.forget(session);
        let result = sqlx::query!("UPDATE sessions SET revoked_at = $3, revoked_reason = $4 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL", session, user.0, self.clock.now(), reason)
        .execute(tx)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// [`Self::revoke_all_in`] in a transaction of its own, for callers outside a request.
    pub async fn revoke_all(
        &self,
        user: UserId,
        keep: Option<Uuid>,
        reason: &str,
    ) -> Result<u64, SessionError> {
        let mut tx = self.db.begin().await?;
        let revoked = self.revoke_all_in(&mut tx, user, keep, reason).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Revokes every session of a user (password change, disabling, admin action), except
    /// `keep` if given (the session that changed the password), in the caller's transaction.
    pub async fn revoke_all_in(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        keep: Option<Uuid>,
        reason: &str,
    ) -> Result<u64, SessionError> {
        let result = sqlx::query!(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 \
             WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $4",
            user.0,
            self.clock.now(),
            reason,
            keep
        )
        .execute(tx)
        .await?;
        Ok(result.rows_affected())
    }

    /// The user's live sessions, newest first.
    pub async fn list(&self, user: UserId) -> Result<Vec<SessionSummary>, SessionError> {
        Ok(sqlx::query_as!(SessionSummary, "SELECT id, created_at, last_seen_at, absolute_expires_at, host(client_ip) AS client_ip, user_agent \
             FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND absolute_expires_at > $2 \
             ORDER BY created_at DESC, id DESC", user.0, self.clock.now())
        .fetch_all(&self.db)
        .await?)
    }

    async fn new_refresh_token(
        &self,
        tx: &mut sqlx::PgConnection,
        session: Uuid,
        now: DateTime<Utc>,
    ) -> Result<SecretString, SessionError> {
        let mut bytes = [0u8; 32];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| SessionError::Random)?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        sqlx::query!(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
            hash_token(&token),
            session,
            now
        )
        .execute(tx)
        .await?;
        Ok(SecretString::from(token))
    }

    fn issue(
        &self,
        user: UserId,
        session: Uuid,
        now: DateTime<Utc>,
        session_expires_at: DateTime<Utc>,
        refresh_token: SecretString,
    ) -> Result<IssuedTokens, SessionError> {
        let (access_token, claims) = self.tokens.issue(
            TokenType::Access,
            user.0,
            session,
            now,
            self.policy.access_ttl,
        )?;
        Ok(IssuedTokens {
            user_id: user,
            session_id: session,
            access_token,
            access_expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(now),
            refresh_token,
            session_expires_at,
        })
    }
}

/// A security event: what happened, to whom, and why (a short reason code, never a value).
#[derive(Debug, Clone, Copy)]
pub struct SecurityEvent<'a> {
    pub kind: &'a str,
    pub user: Option<Uuid>,
    pub session: Option<Uuid>,
    pub reason: Option<&'a str>,
    /// Who did it, when not the user themself (an administrator).
    pub actor: Option<Uuid>,
}

/// Persists a security event (failures, lockouts, token reuse, MFA failures).
pub async fn record_event(
    tx: &mut sqlx::PgConnection,
    now: DateTime<Utc>,
    event: SecurityEvent<'_>,
    client: &ClientInfo,
) -> Result<(), SessionError> {
    sqlx::query!("INSERT INTO security_events (id, occurred_at, kind, user_id, session_id, client_ip, detail) \
         VALUES ($1, $2, $3, $4, $5, CAST($6::text AS inet), jsonb_strip_nulls(jsonb_build_object('reason', $7::text, 'actor', $8::uuid)))", Uuid::now_v7(), now, event.kind, event.user, event.session, client.ip.map(|ip| ip.to_string()), event.reason, event.actor)
    .execute(tx)
    .await?;
    Ok(())
}

/// A security event as recorded, for the audit trail's forwarder.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RecordedEvent {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub client_ip: Option<String>,
    /// `reason` and `actor`.
    pub detail: serde_json::Value,
    /// The username of the actor (the administrator if one acted, else the user).
    pub actor_username: Option<String>,
}

/// Claims up to `limit` events not yet forwarded to the audit trail, oldest first, locked in
/// the caller's transaction (`SKIP LOCKED`: instances forwarding at once share the work).
pub async fn claim_unforwarded(
    tx: &mut sqlx::PgConnection,
    limit: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    sqlx::query_as!(RecordedEvent, "SELECT e.id, e.occurred_at, e.kind, e.user_id, e.session_id, host(e.client_ip) AS client_ip, e.detail, \
                u.username AS \"actor_username?\" \
         FROM security_events e \
         LEFT JOIN users u ON u.id = coalesce((e.detail->>'actor')::uuid, e.user_id) \
         WHERE e.forwarded_at IS NULL ORDER BY e.id LIMIT $1 FOR UPDATE OF e SKIP LOCKED", limit)
    .fetch_all(tx)
    .await
}

/// Marks claimed events forwarded, in the transaction that appended them to the trail.
pub async fn mark_forwarded(tx: &mut sqlx::PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE security_events SET forwarded_at = now() WHERE id = ANY($1)",
        ids
    )
    .execute(tx)
    .await?;
    Ok(())
}

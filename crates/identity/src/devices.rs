//! Trusted devices: "remember this device for 30 days".
//!
//! After a successful second factor a user may ask to trust the device. It gets an opaque
//! 256-bit token (stored here as a SHA-256 hash) that stands in for the second factor at later
//! logins of the same user, never for the password. Devices are listed and revocable by their
//! owner; turning MFA off, an administrator's MFA or password reset, and disabling the account
//! revoke them all.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use uuid::Uuid;

use crate::clock::Clock;
use crate::users::UserId;

pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// A trusted device as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TrustedDevice {
    pub id: Uuid,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A device just trusted: its token is shown once, to the device.
#[derive(Debug)]
pub struct NewDevice {
    pub id: Uuid,
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct DeviceService {
    db: PgPool,
    clock: Arc<dyn Clock>,
    lifetime: Duration,
    rng: SystemRandom,
}

fn hash(token: &str) -> Vec<u8> {
    digest(&SHA256, token.as_bytes()).as_ref().to_vec()
}

impl DeviceService {
    pub fn new(db: PgPool, clock: Arc<dyn Clock>, lifetime: Duration) -> Self {
        Self {
            db,
            clock,
            lifetime,
            rng: SystemRandom::new(),
        }
    }

    /// Trusts the device `label` (its user agent) for `user`.
    pub async fn trust(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        user: UserId,
        label: Option<&str>,
    ) -> Result<NewDevice, sqlx::Error> {
        let mut raw = [0u8; 32];
        self.rng
            .fill(&mut raw)
            .map_err(|_| sqlx::Error::Protocol("the random number generator failed".into()))?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = self.clock.now();
        let expires_at =
            now + chrono::Duration::from_std(self.lifetime).unwrap_or(chrono::Duration::days(30));
        let id = Uuid::now_v7();
        sqlx::query!(
            "INSERT INTO trusted_devices (id, user_id, token_hash, label, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            id,
            user.0,
            hash(&token),
            label.map(|l| l.chars().take(512).collect::<String>()),
            now,
            expires_at
        )
        .execute(db)
        .await?;
        Ok(NewDevice {
            id,
            token: SecretString::from(token),
            expires_at,
        })
    }

    /// Whether `token` is a live trusted device of `user`; records its use if so.
    pub async fn recognise(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        user: UserId,
        token: &SecretString,
    ) -> Result<bool, sqlx::Error> {
        let used = sqlx::query!(
            "UPDATE trusted_devices SET last_used_at = $3 \
             WHERE token_hash = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3",
            hash(token.expose_secret()),
            user.0,
            self.clock.now()
        )
        .execute(db)
        .await?;
        Ok(used.rows_affected() == 1)
    }

    /// The user's live trusted devices, newest first.
    pub async fn list(&self, user: UserId) -> Result<Vec<TrustedDevice>, sqlx::Error> {
        sqlx::query_as!(TrustedDevice, "SELECT id, label, created_at, expires_at, last_used_at FROM trusted_devices \
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC, id DESC", user.0, self.clock.now())
        .fetch_all(&self.db)
        .await
    }

    /// Revokes one of the user's devices; false if it is not theirs or not live.
    pub async fn revoke(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        user: UserId,
        device: Uuid,
    ) -> Result<bool, sqlx::Error> {
        let revoked = sqlx::query!(
            "UPDATE trusted_devices SET revoked_at = $3, revoked_reason = 'revoked_by_user' \
             WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            device,
            user.0,
            self.clock.now()
        )
        .execute(db)
        .await?;
        Ok(revoked.rows_affected() == 1)
    }
}

/// Revokes every device of `user` (MFA off or reset, password reset, account disabled).
pub async fn revoke_all(
    db: impl sqlx::PgExecutor<'_>,
    user: UserId,
    now: DateTime<Utc>,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let revoked = sqlx::query!("UPDATE trusted_devices SET revoked_at = $2, revoked_reason = $3 WHERE user_id = $1 AND revoked_at IS NULL", user.0, now, reason)
    .execute(db)
    .await?;
    Ok(revoked.rows_affected())
}

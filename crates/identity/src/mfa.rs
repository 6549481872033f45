//! The TOTP second factor (RFC 6238 through totp-rs) and single-use backup codes.
//!
//! The TOTP secret is made here (160 random bits), returned once (secret, `otpauth://` URI and
//! QR code) and stored only as a field ciphertext through the crypto crate. Codes are checked
//! with one step of clock skew either way, and each time step is accepted once: a code that
//! was used cannot be used again in its window (RFC 6238 §5.2). Ten backup codes of 16
//! characters (about 94 bits each) are shown once and stored as SHA-256 hashes; each works
//! once.

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use clinicd_crypto::{FieldLocation, Keyring, Owner, Purpose};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgConnection, PgPool};
use totp_rs::{Builder, Secret, Totp};
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::users::UserId;

const ISSUER: &str = "clinicd";
const SECRET_BYTES: usize = 20;
pub const BACKUP_CODES: usize = 10;
const BACKUP_CODE_LEN: usize = 16;
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error("the code is not valid")]
    InvalidCode,
    #[error("a second factor is already enrolled")]
    AlreadyEnrolled,
    #[error("no enrolment is pending: start one first")]
    NotPending,
    #[error("TOTP error: {0}")]
    Totp(String),
    #[error(transparent)]
    Crypto(#[from] clinicd_crypto::CryptoError),
    #[error("database error: {0}")]
    Database(#[source] crate::Failure),
    #[error("the random number generator failed")]
    Random,
}

impl From<sqlx::Error> for MfaError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error.into())
    }
}

/// Which factor a code proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    Totp,
    /// A backup code, now used up; `remaining` are left.
    BackupCode {
        remaining: i64,
    },
    /// A code sent out of band for this login (see [`crate::otp`]).
    SentCode,
}

/// What a user needs to set up their authenticator app. Shown once.
#[derive(Debug)]
pub struct Enrolment {
    pub secret_base32: SecretString,
    pub otpauth_uri: SecretString,
    pub qr_png_base64: String,
}

#[derive(Debug)]
pub struct MfaService {
    db: PgPool,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
}

fn location(user: UserId) -> FieldLocation<'static> {
    FieldLocation::new("mfa_totp", "secret", user.0)
}

fn totp(secret: Vec<u8>, account: &str) -> Result<Totp, MfaError> {
    Builder::new()
        .with_secret(Secret::from(secret))
        .with_skew(1)
        .with_issuer(Some(ISSUER))
        .with_account_name(account.replace(':', "_"))
        .build()
        .map_err(|e| MfaError::Totp(e.to_string()))
}

fn hash_code(code: &str) -> Vec<u8> {
    let normalized: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    digest(&SHA256, normalized.as_bytes()).as_ref().to_vec()
}

impl MfaService {
    pub fn new(db: PgPool, keyring: Arc<Keyring>, clock: Arc<dyn Clock>) -> Self {
        Self {
            db,
            keyring,
            clock,
            rng: SystemRandom::new(),
        }
    }

    fn unix_now(&self) -> u64 {
        u64::try_from(self.clock.now().timestamp()).unwrap_or(0)
    }

    /// Starts (or restarts) TOTP enrolment with a fresh secret, in the caller's transaction.
    pub async fn begin(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        account: &str,
    ) -> Result<Enrolment, MfaError> {
        let mut secret = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        self.rng.fill(&mut secret).map_err(|_| MfaError::Random)?;
        // Sealed before the transaction's first statement: key work may need a connection.
        let sealed = self
            .keyring
            .encrypt(Owner::Purpose(Purpose::Field), &location(user), &secret)
            .await?;
        let confirmed: Option<bool> = sqlx::query_scalar!(
            "SELECT confirmed_at IS NOT NULL AS \"v!\" FROM mfa_totp WHERE user_id = $1 FOR UPDATE",
            user.0
        )
        .fetch_optional(&mut *tx)
        .await?;
        if confirmed == Some(true) {
            return Err(MfaError::AlreadyEnrolled);
        }
        sqlx::query!("INSERT INTO mfa_totp (user_id, secret) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET secret = EXCLUDED.secret, created_at = now() WHERE mfa_totp.confirmed_at IS NULL", user.0, sealed)
        .execute(&mut *tx)
        .await?;
        let totp = totp(secret.to_vec(), account)?;
        Ok(Enrolment {
            secret_base32: SecretString::from(totp.secret().to_base32()),
            otpauth_uri: SecretString::from(
                totp.to_url().map_err(|e| MfaError::Totp(e.to_string()))?,
            ),
            qr_png_base64: totp
                .to_qr_base64()
                .map_err(|e| MfaError::Totp(e.to_string()))?,
        })
    }

    /// Confirms enrolment with a first code, in the caller's transaction; returns the backup
    /// codes, to be shown once.
    pub async fn confirm(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        code: &str,
    ) -> Result<Vec<SecretString>, MfaError> {
        let step = self.check_totp(user, code, false).await?;
        let confirmed = sqlx::query!("UPDATE mfa_totp SET confirmed_at = now(), last_step = $2 WHERE user_id = $1 AND confirmed_at IS NULL", user.0, step)
        .execute(&mut *tx)
        .await?;
        if confirmed.rows_affected() != 1 {
            return Err(MfaError::NotPending);
        }
        sqlx::query!(
            "UPDATE users SET mfa_enabled = true, updated_at = now() WHERE id = $1",
            user.0
        )
        .execute(&mut *tx)
        .await?;
        self.replace_backup_codes(tx, user).await
    }

    /// Checks a TOTP code (each time step once) or a backup code (each code once), using it up
    /// in the caller's transaction.
    pub async fn verify(
        &self,
        tx: &mut PgConnection,
        user: UserId,
        code: &str,
    ) -> Result<Factor, MfaError> {
        if code.chars().filter(char::is_ascii_digit).count() == 6 && code.trim().len() <= 7 {
            let step = self.check_totp(user, code, true).await?;
            let accepted = sqlx::query!("UPDATE mfa_totp SET last_step = $2 WHERE user_id = $1 AND confirmed_at IS NOT NULL \
                 AND (last_step IS NULL OR last_step < $2)", user.0, step)
            .execute(&mut *tx)
            .await?;
            return if accepted.rows_affected() == 1 {
                Ok(Factor::Totp)
            } else {
                Err(MfaError::InvalidCode)
            };
        }
        let used = sqlx::query!("UPDATE mfa_backup_codes SET used_at = now() WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL", user.0, hash_code(code))
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Err(MfaError::InvalidCode);
        }
        let remaining: i64 = sqlx::query_scalar!(
            "SELECT count(*) AS \"v!\" FROM mfa_backup_codes WHERE user_id = $1 AND used_at IS NULL",
            user.0
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok(Factor::BackupCode { remaining })
    }

    /// Removes the user's second factor and backup codes (the caller checks who may).
    pub async fn remove(
        &self,
        tx: &mut sqlx::PgConnection,
        user: UserId,
    ) -> Result<bool, MfaError> {
        sqlx::query!("DELETE FROM mfa_backup_codes WHERE user_id = $1", user.0)
            .execute(&mut *tx)
            .await?;
        let removed = sqlx::query!("DELETE FROM mfa_totp WHERE user_id = $1", user.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query!(
            "UPDATE users SET mfa_enabled = false, updated_at = now() WHERE id = $1",
            user.0
        )
        .execute(&mut *tx)
        .await?;
        Ok(removed.rows_affected() > 0)
    }

    /// The time step the code matches, within one step either way.
    async fn check_totp(&self, user: UserId, code: &str, confirmed: bool) -> Result<i64, MfaError> {
        let sealed: Option<Vec<u8>> = sqlx::query_scalar!(
            "SELECT secret FROM mfa_totp WHERE user_id = $1 AND (confirmed_at IS NOT NULL) = $2",
            user.0,
            confirmed
        )
        .fetch_optional(&self.db)
        .await?;
        let sealed = sealed.ok_or(if confirmed {
            MfaError::InvalidCode
        } else {
            MfaError::NotPending
        })?;
        let secret = self.keyring.decrypt(&location(user), &sealed).await?;
        let totp = totp(secret.to_vec(), "user")?;
        let step = totp
            .check(code.trim(), self.unix_now())
            .ok_or(MfaError::InvalidCode)?;
        i64::try_from(step).map_err(|_| MfaError::InvalidCode)
    }

    /// Ten new backup codes (shown once) in place of the user's old ones, in the caller's
    /// transaction.
    pub async fn replace_backup_codes(
        &self,
        tx: &mut sqlx::PgConnection,
        user: UserId,
    ) -> Result<Vec<SecretString>, MfaError> {
        sqlx::query!("DELETE FROM mfa_backup_codes WHERE user_id = $1", user.0)
            .execute(&mut *tx)
            .await?;
        let mut codes = Vec::with_capacity(BACKUP_CODES);
        for _ in 0..BACKUP_CODES {
            let code = self.backup_code()?;
            sqlx::query!(
                "INSERT INTO mfa_backup_codes (user_id, code_hash) VALUES ($1, $2)",
                user.0,
                hash_code(code.expose_secret())
            )
            .execute(&mut *tx)
            .await?;
            codes.push(code);
        }
        Ok(codes)
    }

    /// `XXXX-XXXX-XXXX-XXXX` from an alphabet without look-alike characters.
    fn backup_code(&self) -> Result<SecretString, MfaError> {
        let mut raw = [0u8; BACKUP_CODE_LEN];
        self.rng.fill(&mut raw).map_err(|_| MfaError::Random)?;
        // 32 symbols: each byte's low 5 bits pick one uniformly.
        let chars: Vec<char> = raw
            .iter()
            .filter_map(|b| ALPHABET.get(usize::from(b & 31)).copied().map(char::from))
            .collect();
        let groups: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
        Ok(SecretString::from(groups.join("-")))
    }

    /// Whether `user` has a confirmed second factor.
    pub async fn enrolled(&self, user: UserId) -> Result<bool, MfaError> {
        Ok(sqlx::query_scalar!("SELECT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL) AS \"v!\"", user.0)
            .fetch_one(&self.db)
            .await?)
    }
}

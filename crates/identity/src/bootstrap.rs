//! `clinicd admin create`: the first account, with a one-time password shown once and a forced
//! change at first login.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use secrecy::SecretString;
use sqlx::PgConnection;

use crate::password::{HashError, PasswordHasherPool};
use crate::users::{self, DisplayName, Email, NewUser, UserError, UserId, Username};

/// Letters and digits that cannot be confused with each other when read off a screen.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
const ONE_TIME_LEN: usize = 24;
/// The built-in role the first account gets (seeded by migration 0008).
pub const ADMIN_ROLE: &str = "Admin";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("the random number generator failed")]
    Random,
}

/// A random password of 24 characters (about 139 bits).
pub fn one_time_password() -> Result<SecretString, BootstrapError> {
    let rng = SystemRandom::new();
    let mut password = String::with_capacity(ONE_TIME_LEN);
    while password.len() < ONE_TIME_LEN {
        let mut byte = [0u8; 1];
        rng.fill(&mut byte).map_err(|_| BootstrapError::Random)?;
        // Rejection sampling keeps every character equally likely.
        let [byte] = byte;
        if usize::from(byte) < 256 - 256 % ALPHABET.len()
            && let Some(c) = ALPHABET.get(usize::from(byte) % ALPHABET.len())
        {
            password.push(char::from(*c));
        }
    }
    Ok(SecretString::from(password))
}

/// Creates an administrator account with a one-time password that must be changed at first
/// login. Returns the id and the password (to be shown once, never stored in clear).
/// Creates an administrator in the caller's transaction (which commits it with its audit
/// event), with a one-time password returned once.
pub async fn create_admin(
    tx: &mut PgConnection,
    hasher: &PasswordHasherPool,
    username: &str,
    email: Option<&str>,
) -> Result<(UserId, SecretString), BootstrapError> {
    let username = Username::parse(username)?;
    let email =
        Email::parse(email.unwrap_or(&format!("{}@localhost.localdomain", username.as_str())))?;
    let password = one_time_password()?;
    let password_hash = hasher.hash(&password).await?;
    let id = users::create(
        &mut *tx,
        NewUser {
            display_name: DisplayName::parse(username.as_str())?,
            username,
            email,
            password_hash,
            must_change_password: true,
        },
    )
    .await?;
    users::assign_role(&mut *tx, id, ADMIN_ROLE, None).await?;
    tracing::info!(user_id = %id, "administrator account created");
    Ok((id, password))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn one_time_passwords_are_long_distinct_and_from_the_alphabet() {
        let a = one_time_password().expect("random");
        let b = one_time_password().expect("random");
        assert_eq!(a.expose_secret().len(), ONE_TIME_LEN);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().bytes().all(|c| ALPHABET.contains(&c)));
        assert!(crate::policy::check(a.expose_secret(), "admin").is_ok());
    }
}

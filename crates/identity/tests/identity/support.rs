use std::sync::Arc;

use chrono::Utc;
use clinicd_crypto::{Keyring, LocalKeyProvider, SecretKey};
use clinicd_identity::clock::ManualClock;
use clinicd_identity::password::{HashParams, PasswordHasherPool};
use clinicd_identity::sessions::ClientInfo;
use clinicd_identity::users::{self, DisplayName, Email, NewUser, UserId, Username};
use clinicd_identity::{Identity, IdentitySettings};
use secrecy::{SecretSlice, SecretString};
use sqlx::PgPool;

pub const PASSWORD: &str = "correct horse battery staple";

/// Identity services over a fresh database with one user whose password is [`PASSWORD`].
pub struct Fixture {
    pub identity: Identity,
    pub clock: Arc<ManualClock>,
    pub user: UserId,
    pub db: PgPool,
}

pub async fn fixture(
    db: PgPool,
    username: &str,
    stored_with: HashParams,
    must_change_password: bool,
) -> Fixture {
    let password_hash = PasswordHasherPool::new(stored_with, 1)
        .unwrap()
        .hash(&secret(PASSWORD))
        .await
        .unwrap();
    let user = users::create(
        &db,
        NewUser {
            username: Username::parse(username).unwrap(),
            email: Email::parse(&format!("{username}@clinic.example")).unwrap(),
            display_name: DisplayName::parse("Test User").unwrap(),
            password_hash,
            must_change_password,
        },
    )
    .await
    .unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let master = SecretKey::from_bytes(&[5; 32]).unwrap();
    let keyring = Arc::new(Keyring::new(
        db.clone(),
        Arc::new(LocalKeyProvider::new(master)),
        Default::default(),
    ));
    keyring.bootstrap().await.unwrap();
    let key = SecretSlice::from(vec![9u8; 32]);
    let identity = Identity::new(
        db.clone(),
        &key,
        keyring,
        IdentitySettings::default(),
        clock.clone(),
    )
    .unwrap();
    Fixture {
        identity,
        clock,
        user,
        db,
    }
}

/// Another user in the fixture's database, with the same password.
pub async fn fixture_user(f: &Fixture, username: &str) -> UserId {
    let password_hash = f
        .identity
        .login
        .hasher()
        .hash(&secret(PASSWORD))
        .await
        .unwrap();
    users::create(
        &f.db,
        NewUser {
            username: Username::parse(username).unwrap(),
            email: Email::parse(&format!("{username}@clinic.example")).unwrap(),
            display_name: DisplayName::parse("Another User").unwrap(),
            password_hash,
            must_change_password: false,
        },
    )
    .await
    .unwrap()
}

pub fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

pub fn client() -> ClientInfo {
    ClientInfo {
        ip: Some("198.51.100.4".parse().unwrap()),
        user_agent: Some("tests".into()),
    }
}

//! Managing the second factor: turning it off, new backup codes, an administrator's reset,
//! trusted devices, and the record each leaves.

use chrono::Duration;
use clinicd_identity::account::AccountError;
use clinicd_identity::clock::Clock;
use clinicd_identity::login::{LoggedIn, LoginAttempt, LoginOutcome};
use clinicd_identity::password::HashParams;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use crate::mfa::{code, enrol, password_step};
use crate::support::{Fixture, PASSWORD, client, fixture, secret};

async fn events(f: &Fixture, kind: &str) -> Vec<serde_json::Value> {
    sqlx::query_scalar("SELECT detail FROM security_events WHERE kind = $1 ORDER BY occurred_at")
        .bind(kind)
        .fetch_all(&f.db)
        .await
        .unwrap()
}

/// Password step then the code, asking to trust the device.
async fn login_trusting_device(f: &Fixture, secret_base32: &str) -> LoggedIn {
    let challenge = password_step(f).await;
    f.identity
        .login
        .complete_mfa_and_trust(&challenge, &code(secret_base32, &f.clock), true, &client())
        .await
        .unwrap()
}

fn attempt<'a>(password: &'a SecretString, device: Option<&'a SecretString>) -> LoginAttempt<'a> {
    LoginAttempt {
        username: "dr.mfa",
        password,
        remember_me: false,
        device,
        challenge_response: None,
    }
}

async fn login_from(f: &Fixture, device: Option<&SecretString>) -> LoginOutcome {
    let password = secret(PASSWORD);
    f.identity
        .login
        .attempt(&attempt(&password, device), &client())
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn turning_mfa_off_needs_the_password_and_a_code(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    let (secret_base32, _) = enrol(&f).await;
    let session = f
        .identity
        .sessions
        .start(f.user, false, &client())
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(30));
    let now_code = code(&secret_base32, &f.clock);

    let wrong_password = f
        .identity
        .disable_mfa(
            f.user,
            session.session_id,
            &secret("not the password!!"),
            &now_code,
        )
        .await;
    assert!(matches!(wrong_password, Err(AccountError::WrongPassword)));
    let wrong_code = f
        .identity
        .disable_mfa(f.user, session.session_id, &secret(PASSWORD), "000000")
        .await;
    assert!(matches!(wrong_code, Err(AccountError::InvalidCode)));
    assert!(f.identity.mfa.enrolled(f.user).await.unwrap(), "still on");
    assert_eq!(events(&f, "mfa_disable_failed").await.len(), 2);

    f.identity
        .disable_mfa(f.user, session.session_id, &secret(PASSWORD), &now_code)
        .await
        .unwrap();
    assert!(!f.identity.mfa.enrolled(f.user).await.unwrap());
    assert!(matches!(
        login_from(&f, None).await,
        LoginOutcome::LoggedIn(_)
    ));
    assert_eq!(events(&f, "mfa_disabled").await.len(), 1);
    let again = f
        .identity
        .disable_mfa(f.user, session.session_id, &secret(PASSWORD), &now_code)
        .await;
    assert!(matches!(again, Err(AccountError::NotEnrolled)));
}

#[sqlx::test(migrations = "../../migrations")]
async fn new_backup_codes_replace_the_old_ones_and_each_use_is_recorded(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    let (secret_base32, old_codes) = enrol(&f).await;
    let session = uuid::Uuid::now_v7();

    let refused = f
        .identity
        .regenerate_backup_codes(f.user, session, "AAAA-BBBB-CCCC-DDDD")
        .await;
    assert!(matches!(refused, Err(AccountError::InvalidCode)));
    f.clock.advance(Duration::seconds(30));
    let new_codes = f
        .identity
        .regenerate_backup_codes(f.user, session, &code(&secret_base32, &f.clock))
        .await
        .unwrap();
    assert_eq!(new_codes.len(), 10);

    let challenge = password_step(&f).await;
    let old = f
        .identity
        .login
        .complete_mfa(&challenge, old_codes[0].expose_secret(), &client())
        .await;
    assert!(old.is_err(), "old backup codes stop working");
    let challenge = password_step(&f).await;
    f.identity
        .login
        .complete_mfa(&challenge, new_codes[3].expose_secret(), &client())
        .await
        .unwrap();
    let used = events(&f, "mfa_backup_code_used").await;
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[0]["reason"], "remaining=9");
    assert_eq!(events(&f, "mfa_backup_codes_regenerated").await.len(), 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_administrators_mfa_reset_ends_sessions_and_devices(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    let (secret_base32, _) = enrol(&f).await;
    f.clock.advance(Duration::seconds(30));
    let logged_in = login_trusting_device(&f, &secret_base32).await;
    let device = logged_in.trusted_device.unwrap();

    f.identity.admin_reset_mfa(f.user, None).await.unwrap();
    assert!(
        f.identity
            .sessions
            .authenticate(&logged_in.tokens.access_token)
            .await
            .is_err()
    );
    assert!(f.identity.devices.list(f.user).await.unwrap().is_empty());
    assert!(!f.identity.mfa.enrolled(f.user).await.unwrap());
    // The password alone logs in now; the user enrols again.
    assert!(matches!(
        login_from(&f, Some(&device.token)).await,
        LoginOutcome::LoggedIn(_)
    ));
    assert_eq!(events(&f, "mfa_reset").await.len(), 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_trusted_device_stands_in_for_the_code_for_thirty_days(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    let (secret_base32, _) = enrol(&f).await;
    f.clock.advance(Duration::seconds(30));
    let device = login_trusting_device(&f, &secret_base32)
        .await
        .trusted_device
        .unwrap();
    let listed = f.identity.devices.list(f.user).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, device.id);
    assert_eq!(listed[0].label.as_deref(), Some("tests"));
    assert_eq!(
        (device.expires_at - f.clock.now()).num_days(),
        30,
        "thirty days"
    );

    assert!(matches!(
        login_from(&f, Some(&device.token)).await,
        LoginOutcome::LoggedIn(_)
    ));
    assert!(
        matches!(
            login_from(&f, Some(&secret("deadbeef"))).await,
            LoginOutcome::MfaRequired { .. }
        ),
        "an unknown token is no device"
    );
    // Still the password first: a device token with a wrong password gets nowhere.
    let wrong_password = secret("wrong password here");
    let wrong = f
        .identity
        .login
        .attempt(&attempt(&wrong_password, Some(&device.token)), &client())
        .await;
    assert!(wrong.is_err());

    f.clock.advance(Duration::days(30) + Duration::seconds(1));
    assert!(
        matches!(
            login_from(&f, Some(&device.token)).await,
            LoginOutcome::MfaRequired { .. }
        ),
        "expired after thirty days"
    );
    assert!(f.identity.devices.list(f.user).await.unwrap().is_empty());
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_revoked_device_needs_the_code_again_and_only_its_owner_can_revoke_it(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    let other = crate::support::fixture_user(&f, "dr.other").await;
    let (secret_base32, _) = enrol(&f).await;
    f.clock.advance(Duration::seconds(30));
    let device = login_trusting_device(&f, &secret_base32)
        .await
        .trusted_device
        .unwrap();
    assert!(
        !f.identity.devices.revoke(other, device.id).await.unwrap(),
        "not theirs"
    );
    assert!(matches!(
        login_from(&f, Some(&device.token)).await,
        LoginOutcome::LoggedIn(_)
    ));
    assert!(f.identity.devices.revoke(f.user, device.id).await.unwrap());
    assert!(matches!(
        login_from(&f, Some(&device.token)).await,
        LoginOutcome::MfaRequired { .. }
    ));

    // A password reset also forgets trusted devices (and keeps MFA).
    f.clock.advance(Duration::seconds(30));
    login_trusting_device(&f, &secret_base32).await;
    assert_eq!(f.identity.devices.list(f.user).await.unwrap().len(), 1);
    f.identity.admin_reset_password(f.user, None).await.unwrap();
    assert!(f.identity.devices.list(f.user).await.unwrap().is_empty());
    assert!(f.identity.mfa.enrolled(f.user).await.unwrap());
}

//! Managing the second factor: turning it off, new backup codes, an administrator's reset,
//! trusted devices, and the record each leaves.

use chrono::Duration;
use clinicd_identity::account::AccountError;
use clinicd_identity::clock::Clock;
use clinicd_identity::login::{LoggedIn, LoginAttempt, LoginError, LoginOutcome};
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

/// Turning MFA off as the API does: the proof, then the change in a transaction.
async fn disable(
    f: &Fixture,
    session: uuid::Uuid,
    password: &SecretString,
    code: &str,
) -> Result<(), AccountError> {
    f.identity
        .prove_for_mfa_disable(f.user, session, password, code)
        .await?;
    in_tx!(f.db, |tx| f.identity.disable_mfa(tx, f.user, session))
}

/// New backup codes as the API makes them: the proof, then the change in a transaction.
async fn regenerate(
    f: &Fixture,
    session: uuid::Uuid,
    code: &str,
) -> Result<Vec<SecretString>, AccountError> {
    f.identity
        .prove_code(f.user, session, code, "mfa_backup_codes_failed")
        .await?;
    in_tx!(f.db, |tx| f
        .identity
        .regenerate_backup_codes(tx, f.user, session))
}

/// Password step then the code, asking to trust the device.
async fn login_trusting_device(f: &Fixture, secret_base32: &str) -> LoggedIn {
    let challenge = password_step(f).await;
    let login = &f.identity.login;
    in_tx!(f.db, |tx| async {
        let verified = login
            .check_mfa(&challenge, &code(secret_base32, &f.clock), &client())
            .await?;
        login.finish_mfa(&mut *tx, verified, true, &client()).await
    })
    .unwrap()
}

/// The password step and its completion, presenting a trusted-device token.
async fn attempt(
    f: &Fixture,
    password: &SecretString,
    device: Option<&SecretString>,
) -> Result<LoginOutcome, LoginError> {
    let login = &f.identity.login;
    let attempt = LoginAttempt {
        username: "dr.mfa",
        password,
        remember_me: false,
        challenge_response: None,
    };
    let verified = login.check(&attempt, &client()).await?;
    in_tx!(f.db, |tx| login.finish(tx, verified, device, &client()))
}

async fn login_from(f: &Fixture, device: Option<&SecretString>) -> LoginOutcome {
    attempt(f, &secret(PASSWORD), device).await.unwrap()
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

    let wrong_password = disable(
        &f,
        session.session_id,
        &secret("not the password!!"),
        &now_code,
    )
    .await;
    assert!(matches!(wrong_password, Err(AccountError::WrongPassword)));
    let wrong_code = disable(&f, session.session_id, &secret(PASSWORD), "000000").await;
    assert!(matches!(wrong_code, Err(AccountError::InvalidCode)));
    assert!(f.identity.mfa.enrolled(f.user).await.unwrap(), "still on");
    assert_eq!(events(&f, "mfa_disable_failed").await.len(), 2);

    disable(&f, session.session_id, &secret(PASSWORD), &now_code)
        .await
        .unwrap();
    assert!(!f.identity.mfa.enrolled(f.user).await.unwrap());
    assert!(matches!(
        login_from(&f, None).await,
        LoginOutcome::LoggedIn(_)
    ));
    assert_eq!(events(&f, "mfa_disabled").await.len(), 1);
    let again = disable(&f, session.session_id, &secret(PASSWORD), &now_code).await;
    assert!(matches!(again, Err(AccountError::NotEnrolled)));
}

#[sqlx::test(migrations = "../../migrations")]
async fn new_backup_codes_replace_the_old_ones_and_each_use_is_recorded(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    let (secret_base32, old_codes) = enrol(&f).await;
    let session = uuid::Uuid::now_v7();

    let refused = regenerate(&f, session, "AAAA-BBBB-CCCC-DDDD").await;
    assert!(matches!(refused, Err(AccountError::InvalidCode)));
    f.clock.advance(Duration::seconds(30));
    let new_codes = regenerate(&f, session, &code(&secret_base32, &f.clock))
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

    in_tx!(f.db, |tx| f.identity.admin_reset_mfa(
        tx,
        f.user,
        clinicd_identity::admin::AdminAct {
            actor: None,
            sensitive_target: false
        }
    ))
    .unwrap();
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
    let wrong = attempt(&f, &wrong_password, Some(&device.token)).await;
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
        !f.identity
            .devices
            .revoke(&f.db, other, device.id)
            .await
            .unwrap(),
        "not theirs"
    );
    assert!(matches!(
        login_from(&f, Some(&device.token)).await,
        LoginOutcome::LoggedIn(_)
    ));
    assert!(
        f.identity
            .devices
            .revoke(&f.db, f.user, device.id)
            .await
            .unwrap()
    );
    assert!(matches!(
        login_from(&f, Some(&device.token)).await,
        LoginOutcome::MfaRequired { .. }
    ));

    // A password reset also forgets trusted devices (and keeps MFA).
    f.clock.advance(Duration::seconds(30));
    login_trusting_device(&f, &secret_base32).await;
    assert_eq!(f.identity.devices.list(f.user).await.unwrap().len(), 1);
    in_tx!(f.db, |tx| f.identity.admin_reset_password(
        tx,
        f.user,
        clinicd_identity::admin::AdminAct {
            actor: None,
            sensitive_target: false
        }
    ))
    .unwrap();
    assert!(f.identity.devices.list(f.user).await.unwrap().is_empty());
    assert!(f.identity.mfa.enrolled(f.user).await.unwrap());
}

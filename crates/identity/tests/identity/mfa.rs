//! TOTP enrolment, the MFA login step, replay refusal and backup codes.

use chrono::Duration;
use clinicd_identity::clock::{Clock, ManualClock};
use clinicd_identity::login::{LoginError, LoginOutcome};
use clinicd_identity::mfa::MfaError;
use clinicd_identity::password::HashParams;
use clinicd_identity::sessions::ClientInfo;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use totp_rs::{Builder, Secret};

use crate::support::{Fixture, PASSWORD, fixture};

/// The code an authenticator app would show at the clock's time.
pub fn code(secret_base32: &str, clock: &ManualClock) -> String {
    let secret = Secret::try_from_base32(secret_base32).unwrap();
    let totp = Builder::new().with_secret(secret).build().unwrap();
    totp.generate(u64::try_from(clock.now().timestamp()).unwrap())
        .to_string()
}

pub async fn enrol(f: &Fixture) -> (String, Vec<SecretString>) {
    let enrolment = in_tx!(f.db, |tx| f.identity.mfa.begin(tx, f.user, "dr.mfa")).unwrap();
    let secret = enrolment.secret_base32.expose_secret().to_owned();
    let codes = in_tx!(f.db, |tx| f.identity.mfa.confirm(
        tx,
        f.user,
        &code(&secret, &f.clock)
    ))
    .unwrap();
    (secret, codes)
}

pub async fn password_step(f: &Fixture) -> String {
    match f
        .identity
        .login
        .login(
            "dr.mfa",
            &SecretString::from(PASSWORD.to_owned()),
            false,
            &ClientInfo::default(),
        )
        .await
        .unwrap()
    {
        LoginOutcome::MfaRequired {
            challenge_token,
            expires_in_secs,
        } => {
            assert_eq!(expires_in_secs, 300);
            challenge_token
        }
        LoginOutcome::LoggedIn(_) => panic!("MFA is enrolled: the password alone must not log in"),
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn enrolment_returns_the_secret_once_and_stores_it_encrypted(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    let enrolment = in_tx!(f.db, |tx| f.identity.mfa.begin(tx, f.user, "dr.mfa")).unwrap();
    let uri = enrolment.otpauth_uri.expose_secret();
    assert!(uri.starts_with("otpauth://totp/clinicd:dr.mfa?"), "{uri}");
    assert!(uri.contains(enrolment.secret_base32.expose_secret()));
    assert!(enrolment.qr_png_base64.len() > 100);
    let raw: Vec<u8> = Secret::try_from_base32(enrolment.secret_base32.expose_secret())
        .unwrap()
        .as_ref()
        .to_vec();
    assert_eq!(raw.len(), 20, "160-bit secret");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret FROM mfa_totp")
        .fetch_one(&f.db)
        .await
        .unwrap();
    assert!(
        !stored.windows(raw.len()).any(|w| w == raw.as_slice()),
        "the secret is stored encrypted"
    );

    assert!(matches!(
        in_tx!(f.db, |tx| f.identity.mfa.confirm(tx, f.user, "000000")),
        Err(MfaError::InvalidCode)
    ));
    let codes = in_tx!(f.db, |tx| f.identity.mfa.confirm(
        tx,
        f.user,
        &code(enrolment.secret_base32.expose_secret(), &f.clock),
    ))
    .unwrap();
    assert_eq!(codes.len(), 10);
    assert!(matches!(
        in_tx!(f.db, |tx| f.identity.mfa.begin(tx, f.user, "dr.mfa")),
        Err(MfaError::AlreadyEnrolled)
    ));
}

#[sqlx::test(migrations = "../../migrations")]
async fn login_needs_the_second_factor_and_a_code_is_never_accepted_twice(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    let (secret, _) = enrol(&f).await;
    // The code used to confirm enrolment cannot log in within its window.
    let challenge = password_step(&f).await;
    let replayed = f
        .identity
        .login
        .complete_mfa(&challenge, &code(&secret, &f.clock), &ClientInfo::default())
        .await;
    assert!(
        matches!(replayed, Err(LoginError::InvalidMfa)),
        "{replayed:?}"
    );

    f.clock.advance(Duration::seconds(30));
    let challenge = password_step(&f).await;
    let fresh = code(&secret, &f.clock);
    let ok = f
        .identity
        .login
        .complete_mfa(&challenge, &fresh, &ClientInfo::default())
        .await
        .unwrap();
    assert_eq!(ok.user_id, f.user);
    assert!(
        f.identity
            .sessions
            .authenticate(&ok.tokens.access_token)
            .await
            .is_ok()
    );

    // The challenge is single use, and so is the code.
    assert!(matches!(
        f.identity
            .login
            .complete_mfa(&challenge, &fresh, &ClientInfo::default())
            .await,
        Err(LoginError::InvalidMfa)
    ));
    let another = password_step(&f).await;
    assert!(matches!(
        f.identity
            .login
            .complete_mfa(&another, &fresh, &ClientInfo::default())
            .await,
        Err(LoginError::InvalidMfa)
    ));
    // An MFA challenge is not an access token.
    assert!(f.identity.sessions.authenticate(&another).await.is_err());
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_code_one_step_either_side_is_accepted_and_two_steps_is_not(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    let (secret, _) = enrol(&f).await;
    f.clock.advance(Duration::seconds(60));
    let previous_step = {
        let earlier = ManualClock::new(f.clock.now() - Duration::seconds(30));
        code(&secret, &earlier)
    };
    let challenge = password_step(&f).await;
    assert!(
        f.identity
            .login
            .complete_mfa(&challenge, &previous_step, &ClientInfo::default())
            .await
            .is_ok()
    );
    f.clock.advance(Duration::seconds(120));
    let stale = ManualClock::new(f.clock.now() - Duration::seconds(60));
    let challenge = password_step(&f).await;
    assert!(
        f.identity
            .login
            .complete_mfa(&challenge, &code(&secret, &stale), &ClientInfo::default())
            .await
            .is_err()
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn backup_codes_work_once_each(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    let (_, codes) = enrol(&f).await;
    let first = codes[0].expose_secret().to_lowercase();
    let challenge = password_step(&f).await;
    assert!(
        f.identity
            .login
            .complete_mfa(&challenge, &first, &ClientInfo::default())
            .await
            .is_ok(),
        "case and dashes do not matter"
    );
    let challenge = password_step(&f).await;
    assert!(matches!(
        f.identity
            .login
            .complete_mfa(&challenge, &first, &ClientInfo::default())
            .await,
        Err(LoginError::InvalidMfa)
    ));
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT code_hash FROM mfa_backup_codes")
        .fetch_all(&f.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 10);
    assert!(
        stored.iter().all(|h| h.len() == 32),
        "only hashes are stored"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn wrong_codes_are_recorded_and_count_towards_the_lockout(db: PgPool) {
    let f = fixture(db, "dr.mfa", HashParams::default(), false).await;
    enrol(&f).await;
    let challenge = password_step(&f).await;
    assert!(
        f.identity
            .login
            .complete_mfa(&challenge, "123456", &ClientInfo::default())
            .await
            .is_err()
    );
    let events: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT kind, detail->>'reason' FROM security_events ORDER BY id")
            .fetch_all(&f.db)
            .await
            .unwrap();
    assert_eq!(
        events,
        [
            ("mfa_failed".into(), Some("invalid_code".into())),
            ("login_failed".into(), Some("bad_mfa_code".into()))
        ]
    );
    let failures: i32 = sqlx::query_scalar("SELECT failed_attempts FROM login_attempts")
        .fetch_one(&f.db)
        .await
        .unwrap();
    assert_eq!(failures, 1);
}

//! Administrator operations on accounts.

use clinicd_identity::login::{LoginError, LoginOutcome};
use clinicd_identity::password::HashParams;
use clinicd_identity::users::UserId;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use totp_rs::{Builder, Secret};

use crate::support::{PASSWORD, client, fixture, secret};

#[sqlx::test(migrations = "../../migrations")]
async fn a_reset_forces_a_change_ends_sessions_and_records_who_did_it(db: PgPool) {
    let f = fixture(db, "dr.reset", HashParams::default(), false).await;
    let LoginOutcome::LoggedIn(before) = f
        .identity
        .login
        .login("dr.reset", &secret(PASSWORD), false, &client())
        .await
        .unwrap()
    else {
        panic!("no MFA")
    };
    let admin = UserId(uuid::Uuid::now_v7());
    let one_time = in_tx!(f.db, |tx| f.identity.admin_reset_password(
        tx,
        f.user,
        clinicd_identity::admin::AdminAct {
            actor: Some(admin),
            sensitive_target: false
        }
    ))
    .unwrap();

    assert!(
        f.identity
            .sessions
            .authenticate(&before.tokens.access_token)
            .await
            .is_err(),
        "sessions end"
    );
    let old = f
        .identity
        .login
        .login("dr.reset", &secret(PASSWORD), false, &client())
        .await;
    assert!(matches!(old, Err(LoginError::InvalidCredentials)));
    let LoginOutcome::LoggedIn(after) = f
        .identity
        .login
        .login(
            "dr.reset",
            &secret(one_time.expose_secret()),
            false,
            &client(),
        )
        .await
        .unwrap()
    else {
        panic!("no MFA")
    };
    assert!(after.must_change_password);
    let (kind, actor): (String, Option<String>) = sqlx::query_as(
        "SELECT kind, detail->>'actor' FROM security_events WHERE kind = 'password_reset'",
    )
    .fetch_one(&f.db)
    .await
    .unwrap();
    assert_eq!(
        (kind.as_str(), actor),
        ("password_reset", Some(admin.0.to_string()))
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_reset_does_not_skip_the_second_factor(db: PgPool) {
    let f = fixture(db, "dr.reset", HashParams::default(), false).await;
    let enrolment = in_tx!(f.db, |tx| f.identity.mfa.begin(tx, f.user, "dr.reset")).unwrap();
    let totp = Builder::new()
        .with_secret(Secret::try_from_base32(enrolment.secret_base32.expose_secret()).unwrap())
        .build()
        .unwrap();
    let code = totp.generate(
        u64::try_from(clinicd_identity::clock::Clock::now(&*f.clock).timestamp()).unwrap(),
    );
    in_tx!(f.db, |tx| f.identity.mfa.confirm(
        tx,
        f.user,
        &code.to_string()
    ))
    .unwrap();

    let one_time = in_tx!(f.db, |tx| f.identity.admin_reset_password(
        tx,
        f.user,
        clinicd_identity::admin::AdminAct {
            actor: None,
            sensitive_target: false
        }
    ))
    .unwrap();
    let outcome = f
        .identity
        .login
        .login(
            "dr.reset",
            &secret(one_time.expose_secret()),
            false,
            &client(),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, LoginOutcome::MfaRequired { .. }),
        "the one-time password alone is not enough"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn disabling_ends_sessions_and_refuses_login_until_enabled(db: PgPool) {
    let f = fixture(db, "dr.off", HashParams::default(), false).await;
    let LoginOutcome::LoggedIn(session) = f
        .identity
        .login
        .login("dr.off", &secret(PASSWORD), false, &client())
        .await
        .unwrap()
    else {
        panic!("no MFA")
    };
    in_tx!(f.db, |tx| f.identity.disable_user(
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
            .authenticate(&session.tokens.access_token)
            .await
            .is_err()
    );
    assert!(
        f.identity
            .sessions
            .refresh(&session.tokens.refresh_token, &client())
            .await
            .is_err()
    );
    assert!(matches!(
        f.identity
            .login
            .login("dr.off", &secret(PASSWORD), false, &client())
            .await,
        Err(LoginError::InvalidCredentials)
    ));
    in_tx!(f.db, |tx| f.identity.enable_user(
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
            .login
            .login("dr.off", &secret(PASSWORD), false, &client())
            .await
            .is_ok()
    );
    assert!(
        in_tx!(f.db, |tx| f.identity.disable_user(
            tx,
            UserId(uuid::Uuid::now_v7()),
            clinicd_identity::admin::AdminAct {
                actor: None,
                sensitive_target: false
            }
        ))
        .is_err(),
        "unknown users are an error"
    );
}

//! Password login and anti-automation.

use chrono::Duration;
use clinicd_identity::login::{LoginError, LoginOutcome};
use clinicd_identity::password::HashParams;
use clinicd_identity::users::UserId;
use sqlx::PgPool;

use crate::support::{Fixture, PASSWORD, client, fixture, secret};

async fn attempt(f: &Fixture, username: &str, password: &str) -> Result<UserId, LoginError> {
    match f
        .identity
        .login
        .login(username, &secret(password), false, &client())
        .await?
    {
        LoginOutcome::LoggedIn(ok) => Ok(ok.user_id),
        LoginOutcome::MfaRequired { .. } => panic!("no MFA in these tests"),
    }
}

async fn events(db: &PgPool) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT kind, detail->>'reason' FROM security_events ORDER BY id")
        .fetch_all(db)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_right_password_logs_in_and_reports_a_forced_change(db: PgPool) {
    let f = fixture(db, "dr.quinn", HashParams::default(), true).await;
    let outcome = f
        .identity
        .login
        .login("DR.QUINN", &secret(PASSWORD), false, &client())
        .await
        .unwrap();
    let LoginOutcome::LoggedIn(ok) = outcome else {
        panic!("no MFA enrolled")
    };
    assert_eq!(ok.user_id, f.user);
    assert!(ok.must_change_password);
    assert!(!ok.tokens.access_token.is_empty());
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer(db: PgPool) {
    let f = fixture(db, "dr.quinn", HashParams::default(), true).await;
    let wrong = attempt(&f, "dr.quinn", "not the password at all")
        .await
        .unwrap_err();
    let unknown = attempt(&f, "nobody.here", PASSWORD).await.unwrap_err();
    assert!(matches!(wrong, LoginError::InvalidCredentials));
    assert!(matches!(unknown, LoginError::InvalidCredentials));
    assert_eq!(wrong.to_string(), unknown.to_string());
    assert_eq!(
        events(&f.db).await,
        [
            ("login_failed".into(), Some("bad_password".into())),
            ("login_failed".into(), Some("unknown_user".into()))
        ]
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn after_three_failures_attempts_must_wait_even_with_the_right_password(db: PgPool) {
    let f = fixture(db, "dr.quinn", HashParams::default(), true).await;
    for _ in 0..3 {
        attempt(&f, "dr.quinn", "wrong wrong wrong")
            .await
            .unwrap_err();
    }
    let early = attempt(&f, "dr.quinn", PASSWORD).await.unwrap_err();
    assert!(
        matches!(
            early,
            LoginError::TooSoon {
                retry_after_secs: 1
            }
        ),
        "{early:?}"
    );
    f.clock.advance(Duration::seconds(1));
    assert_eq!(attempt(&f, "dr.quinn", PASSWORD).await.unwrap(), f.user);
    // Success clears the count: three more failures are needed before the next delay.
    attempt(&f, "dr.quinn", "wrong wrong wrong")
        .await
        .unwrap_err();
    assert!(matches!(
        attempt(&f, "dr.quinn", "wrong wrong wrong").await,
        Err(LoginError::InvalidCredentials)
    ));
}

#[sqlx::test(migrations = "../../migrations")]
async fn five_failures_lock_the_account_for_fifteen_minutes(db: PgPool) {
    let f = fixture(db, "dr.quinn", HashParams::default(), true).await;
    for _ in 0..5 {
        attempt(&f, "dr.quinn", "wrong wrong wrong")
            .await
            .unwrap_err();
        f.clock.advance(Duration::seconds(10));
    }
    let locked = attempt(&f, "dr.quinn", PASSWORD).await.unwrap_err();
    assert!(
        matches!(locked, LoginError::InvalidCredentials),
        "locked accounts refuse even the right password"
    );
    assert!(
        events(&f.db)
            .await
            .contains(&("account_locked".into(), Some("too_many_failures".into())))
    );
    f.clock.advance(Duration::minutes(14));
    assert!(attempt(&f, "dr.quinn", PASSWORD).await.is_err());
    f.clock.advance(Duration::minutes(1));
    assert_eq!(attempt(&f, "dr.quinn", PASSWORD).await.unwrap(), f.user);
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_administrator_can_unlock_at_once(db: PgPool) {
    let f = fixture(db, "dr.quinn", HashParams::default(), true).await;
    for _ in 0..5 {
        attempt(&f, "dr.quinn", "wrong wrong wrong")
            .await
            .unwrap_err();
        f.clock.advance(Duration::seconds(10));
    }
    assert!(attempt(&f, "dr.quinn", PASSWORD).await.is_err());
    in_tx!(f.db, |tx| f.identity.login.unlock(tx, f.user, None)).unwrap();
    assert_eq!(attempt(&f, "dr.quinn", PASSWORD).await.unwrap(), f.user);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_disabled_account_cannot_log_in(db: PgPool) {
    let f = fixture(db, "dr.quinn", HashParams::default(), true).await;
    sqlx::query("UPDATE users SET status = 'disabled'")
        .execute(&f.db)
        .await
        .unwrap();
    assert!(matches!(
        attempt(&f, "dr.quinn", PASSWORD).await,
        Err(LoginError::InvalidCredentials)
    ));
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_hash_with_old_parameters_is_replaced_at_login(db: PgPool) {
    let f = fixture(
        db,
        "dr.quinn",
        HashParams {
            iterations: 1,
            ..HashParams::default()
        },
        true,
    )
    .await;
    attempt(&f, "dr.quinn", PASSWORD).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&f.db)
        .await
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert_eq!(attempt(&f, "dr.quinn", PASSWORD).await.unwrap(), f.user);
}

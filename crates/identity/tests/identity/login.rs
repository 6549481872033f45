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

/// Each attempt counts before its password is checked, under the username's row lock: parallel
/// guesses cannot all pass the throttle on the same count.
#[sqlx::test(migrations = "../../migrations")]
async fn parallel_wrong_guesses_verify_at_most_the_threshold(db: PgPool) {
    let f = fixture(db, "dr.quinn", HashParams::default(), false).await;
    let guesses = (0..50).map(|i| {
        let f = &f;
        async move { attempt(f, "dr.quinn", &format!("wrong guess number {i}")).await }
    });
    let answers = futures_util::future::join_all(guesses).await;
    assert!(answers.iter().all(Result::is_err));
    // Every guess whose password was verified left a `bad_password` event.
    let verified: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM security_events WHERE kind = 'login_failed' AND detail->>'reason' = 'bad_password'",
    )
    .fetch_one(&f.db)
    .await
    .unwrap();
    assert!(
        (1..=i64::from(clinicd_identity::login::LOCK_AFTER)).contains(&verified),
        "{verified} of 50 parallel guesses reached the password check"
    );
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Err(LoginError::TooSoon { .. })))
        .count();
    assert_eq!(
        refused,
        50 - usize::try_from(verified).unwrap(),
        "the rest waited out the delay without a check"
    );
}

/// An unknown username meets the same delay and lockout as a real one: the answers cannot
/// tell which exists.
#[sqlx::test(migrations = "../../migrations")]
async fn an_unknown_username_is_throttled_and_locked_like_a_real_one(db: PgPool) {
    let f = fixture(db, "dr.quinn", HashParams::default(), false).await;
    for username in ["dr.quinn", "nobody.here"] {
        let mut answers = Vec::new();
        for _ in 0..5 {
            answers.push(attempt(&f, username, "not the password").await.unwrap_err());
            // Past each delay, so every attempt is checked.
            f.clock.advance(Duration::seconds(61));
        }
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, LoginError::InvalidCredentials)),
            "{username}: {answers:?}"
        );
        // Now locked: even the right password is refused without a check, with the same
        // answer as a wrong one.
        let locked = attempt(&f, username, PASSWORD).await.unwrap_err();
        assert!(
            matches!(locked, LoginError::InvalidCredentials),
            "{username}"
        );
        f.clock.advance(Duration::minutes(16));
    }
    let count = |kind: &'static str, reason: &'static str| {
        let db = f.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM security_events WHERE kind = $1 AND detail->>'reason' = $2",
            )
            .bind(kind)
            .bind(reason)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        count("account_locked", "too_many_failures").await,
        2,
        "one lock each"
    );
    assert_eq!(
        count("login_refused", "locked").await,
        2,
        "refused unchecked, each"
    );
    assert_eq!(count("login_failed", "bad_password").await, 5);
    assert_eq!(count("login_failed", "unknown_user").await, 5);
}

#[sqlx::test(migrations = "../../migrations")]
async fn upkeep_forgets_only_counters_long_over(db: PgPool) {
    // (key, last failure, lock until): yesterday's and older failures with no lock left.
    for (key, last_failed, locked_until) in [
        ("old", "now() - interval '3 days'", "NULL"),
        (
            "old-lock",
            "now() - interval '3 days'",
            "now() - interval '2 days'",
        ),
        ("recent", "now() - interval '2 hours'", "NULL"),
        (
            "still-locked",
            "now() - interval '3 days'",
            "now() + interval '5 minutes'",
        ),
        (
            "lock-just-over",
            "now() - interval '3 days'",
            "now() - interval '1 hour'",
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO login_attempts (username_key, failed_attempts, first_failed_at, last_failed_at, locked_until) \
             VALUES (convert_to($1, 'UTF8'), 5, {last_failed}, {last_failed}, {locked_until})"
        )))
        .bind(key)
        .execute(&db)
        .await
        .unwrap();
    }
    let forgotten = clinicd_identity::login::forget_stale_attempts(&db)
        .await
        .unwrap();
    assert_eq!(forgotten, 2);
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT convert_from(username_key, 'UTF8') FROM login_attempts ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(left, ["lock-just-over", "recent", "still-locked"]);
}

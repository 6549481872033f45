//! Sessions: rotation, reuse detection, expiry, limits and revocation.

use chrono::Duration;
use clinicd_identity::password::HashParams;
use clinicd_identity::sessions::SessionError;
use clinicd_identity::users;
use futures_util::future::join_all;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use crate::support::{client, fixture, fixture_user};

#[sqlx::test(migrations = "../../migrations")]
async fn a_session_authenticates_and_refresh_rotates_the_token(db: PgPool) {
    let f = fixture(db, "nurse.joy", HashParams::default(), false).await;
    let first = f
        .identity
        .sessions
        .start(f.user, false, &client())
        .await
        .unwrap();
    let principal = f
        .identity
        .sessions
        .authenticate(&first.access_token)
        .await
        .unwrap();
    assert_eq!(
        (principal.user_id, principal.session_id),
        (f.user, first.session_id)
    );

    f.clock.advance(Duration::minutes(10));
    let second = f
        .identity
        .sessions
        .refresh(&first.refresh_token, &client())
        .await
        .unwrap();
    assert_eq!(second.session_id, first.session_id, "same session");
    assert_ne!(
        second.refresh_token.expose_secret(),
        first.refresh_token.expose_secret(),
        "rotated"
    );
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_all(&f.db)
        .await
        .unwrap();
    assert!(
        stored.iter().all(|h| h.len() == 32),
        "only hashes are stored"
    );
    assert!(
        !stored
            .iter()
            .any(|h| h == second.refresh_token.expose_secret().as_bytes())
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn reusing_a_refresh_token_revokes_the_session_and_records_it(db: PgPool) {
    let f = fixture(db, "nurse.joy", HashParams::default(), false).await;
    let first = f
        .identity
        .sessions
        .start(f.user, false, &client())
        .await
        .unwrap();
    let second = f
        .identity
        .sessions
        .refresh(&first.refresh_token, &client())
        .await
        .unwrap();

    assert_eq!(
        f.identity
            .sessions
            .refresh(&first.refresh_token, &client())
            .await
            .unwrap_err(),
        SessionError::Reused
    );
    // The thief's copy and the legitimate holder's newer token both stop working.
    assert_eq!(
        f.identity
            .sessions
            .refresh(&second.refresh_token, &client())
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    assert_eq!(
        f.identity
            .sessions
            .authenticate(&second.access_token)
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    let events: Vec<(String, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT kind, session_id FROM security_events")
            .fetch_all(&f.db)
            .await
            .unwrap();
    assert_eq!(
        events,
        [("refresh_token_reuse".to_owned(), Some(first.session_id))]
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_idle_session_cannot_refresh(db: PgPool) {
    let f = fixture(db, "nurse.joy", HashParams::default(), false).await;
    let session = f
        .identity
        .sessions
        .start(f.user, false, &client())
        .await
        .unwrap();
    f.clock
        .advance(Duration::minutes(15) + Duration::seconds(1));
    assert_eq!(
        f.identity
            .sessions
            .refresh(&session.refresh_token, &client())
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn no_session_outlives_its_absolute_lifetime(db: PgPool) {
    let f = fixture(db, "nurse.joy", HashParams::default(), false).await;
    let mut tokens = f
        .identity
        .sessions
        .start(f.user, false, &client())
        .await
        .unwrap();
    // Refreshing every 10 minutes keeps it alive for 12 hours, and no longer.
    for _ in 0..71 {
        f.clock.advance(Duration::minutes(10));
        tokens = f
            .identity
            .sessions
            .refresh(&tokens.refresh_token, &client())
            .await
            .unwrap();
    }
    f.clock.advance(Duration::minutes(10));
    assert_eq!(
        f.identity
            .sessions
            .refresh(&tokens.refresh_token, &client())
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_fourth_login_revokes_the_oldest_session(db: PgPool) {
    let f = fixture(db, "nurse.joy", HashParams::default(), false).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        // Same instant: ordering falls back to the time-ordered session id.
        sessions.push(
            f.identity
                .sessions
                .start(f.user, false, &client())
                .await
                .unwrap(),
        );
    }
    let ids: std::collections::HashSet<_> = sessions.iter().map(|s| s.session_id).collect();
    assert_eq!(ids.len(), 4, "a new session id on every login");
    assert_eq!(
        f.identity
            .sessions
            .authenticate(&sessions[0].access_token)
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    for live in &sessions[1..] {
        assert!(
            f.identity
                .sessions
                .authenticate(&live.access_token)
                .await
                .is_ok()
        );
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_revoked_sessions_access_token_stops_working_at_once(db: PgPool) {
    let f = fixture(db, "nurse.joy", HashParams::default(), false).await;
    let kept = f
        .identity
        .sessions
        .start(f.user, false, &client())
        .await
        .unwrap();
    let ended = f
        .identity
        .sessions
        .start(f.user, false, &client())
        .await
        .unwrap();
    assert!(
        in_tx!(f.db, |tx| f.identity.sessions.revoke_in(
            tx,
            f.user,
            ended.session_id,
            "logout"
        ))
        .unwrap()
    );
    assert_eq!(
        f.identity
            .sessions
            .authenticate(&ended.access_token)
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    assert_eq!(
        f.identity
            .sessions
            .refresh(&ended.refresh_token, &client())
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    assert!(
        f.identity
            .sessions
            .authenticate(&kept.access_token)
            .await
            .is_ok()
    );

    assert_eq!(
        f.identity
            .sessions
            .revoke_all(f.user, None, "password_change")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        f.identity
            .sessions
            .authenticate(&kept.access_token)
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    let unknown = SecretString::from("00".repeat(32));
    assert_eq!(
        f.identity
            .sessions
            .refresh(&unknown, &client())
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
}

/// Checks of many sessions at once are gathered into shared queries; each answer must still be
/// its own token's: a live session authenticates as its user, a revoked one or a disabled
/// user's is refused, whatever else was checked in the same query.
#[sqlx::test(migrations = "../../migrations")]
async fn concurrent_checks_of_many_sessions_each_get_their_own_answer(db: PgPool) {
    let f = fixture(db, "nurse.joy", HashParams::default(), false).await;
    let mut users = vec![f.user];
    for name in ["dr.ada", "dr.bea", "clerk.cy"] {
        users.push(fixture_user(&f, name).await);
    }
    // Per user: two live sessions and one revoked; every session of the last user is ended by
    // disabling the account.
    let mut expected = Vec::new();
    for user in &users {
        for _ in 0..3 {
            let started = f
                .identity
                .sessions
                .start(*user, false, &client())
                .await
                .unwrap();
            expected.push((*user, started, true));
        }
        let (_, revoked, live) = expected.last_mut().unwrap();
        assert!(
            in_tx!(f.db, |tx| f.identity.sessions.revoke_in(
                tx,
                *user,
                revoked.session_id,
                "logout"
            ))
            .unwrap()
        );
        *live = false;
    }
    let disabled = users[3];
    users::set_status(&f.db, disabled, "disabled")
        .await
        .unwrap();
    for (user, _, live) in &mut expected {
        if *user == disabled {
            *live = false;
        }
    }

    // Every token thirty times over, interleaved, all in flight together: more than one
    // query's worth (256), so the second query runs on the connection the first kept.
    let checks = (0..30).flat_map(|_| expected.iter());
    let answers = join_all(
        checks
            .clone()
            .map(|(_, session, _)| f.identity.sessions.authenticate(&session.access_token)),
    )
    .await;
    assert_eq!(answers.len(), expected.len() * 30);
    for ((user, session, live), answer) in checks.zip(answers) {
        match answer {
            Ok(principal) => {
                assert!(live, "a revoked or disabled session authenticated");
                assert_eq!(
                    (principal.user_id, principal.session_id),
                    (*user, session.session_id)
                );
            }
            Err(error) => {
                assert!(!live, "a live session was refused: {error:?}");
                assert_eq!(error, SessionError::Invalid);
            }
        }
    }
}

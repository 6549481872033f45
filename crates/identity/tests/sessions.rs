//! Sessions against real Postgres, with a manual clock: no test sleeps.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{Duration, Utc};
use clinicd_identity::clock::ManualClock;
use clinicd_identity::sessions::{ClientInfo, SessionError, SessionPolicy, SessionService};
use clinicd_identity::tokens::TokenService;
use clinicd_identity::users::{self, DisplayName, Email, NewUser, UserId, Username};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sqlx::PgPool;

struct Fixture {
    service: SessionService,
    clock: Arc<ManualClock>,
    user: UserId,
    db: PgPool,
}

async fn fixture(db: PgPool) -> Fixture {
    let user = users::create(
        &db,
        NewUser {
            username: Username::parse("nurse.joy").unwrap(),
            email: Email::parse("joy@clinic.example").unwrap(),
            display_name: DisplayName::parse("Nurse Joy").unwrap(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            must_change_password: false,
        },
    )
    .await
    .unwrap();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let tokens = Arc::new(TokenService::new(
        &SecretSlice::from(vec![7u8; 32]),
        "https://clinicd.test",
        "clinicd-api",
        clock.clone(),
    ));
    let service = SessionService::new(db.clone(), tokens, clock.clone(), SessionPolicy::default());
    Fixture {
        service,
        clock,
        user,
        db,
    }
}

fn client() -> ClientInfo {
    ClientInfo {
        ip: Some("192.0.2.10".parse().unwrap()),
        user_agent: Some("tests".into()),
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_session_authenticates_and_refresh_rotates_the_token(db: PgPool) {
    let f = fixture(db).await;
    let first = f.service.start(f.user, false, &client()).await.unwrap();
    let principal = f.service.authenticate(&first.access_token).await.unwrap();
    assert_eq!(
        (principal.user_id, principal.session_id),
        (f.user, first.session_id)
    );

    f.clock.advance(Duration::minutes(10));
    let second = f
        .service
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
    let f = fixture(db).await;
    let first = f.service.start(f.user, false, &client()).await.unwrap();
    let second = f
        .service
        .refresh(&first.refresh_token, &client())
        .await
        .unwrap();

    assert_eq!(
        f.service
            .refresh(&first.refresh_token, &client())
            .await
            .unwrap_err(),
        SessionError::Reused
    );
    // The thief's copy and the legitimate holder's newer token both stop working.
    assert_eq!(
        f.service
            .refresh(&second.refresh_token, &client())
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    assert_eq!(
        f.service
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
    let f = fixture(db).await;
    let session = f.service.start(f.user, false, &client()).await.unwrap();
    f.clock
        .advance(Duration::minutes(15) + Duration::seconds(1));
    assert_eq!(
        f.service
            .refresh(&session.refresh_token, &client())
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn no_session_outlives_its_absolute_lifetime(db: PgPool) {
    let f = fixture(db).await;
    let mut tokens = f.service.start(f.user, false, &client()).await.unwrap();
    // Refreshing every 10 minutes keeps it alive for 12 hours, and no longer.
    for _ in 0..71 {
        f.clock.advance(Duration::minutes(10));
        tokens = f
            .service
            .refresh(&tokens.refresh_token, &client())
            .await
            .unwrap();
    }
    f.clock.advance(Duration::minutes(10));
    assert_eq!(
        f.service
            .refresh(&tokens.refresh_token, &client())
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_fourth_login_revokes_the_oldest_session(db: PgPool) {
    let f = fixture(db).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        // Same instant: ordering falls back to the time-ordered session id.
        sessions.push(f.service.start(f.user, false, &client()).await.unwrap());
    }
    let ids: std::collections::HashSet<_> = sessions.iter().map(|s| s.session_id).collect();
    assert_eq!(ids.len(), 4, "a new session id on every login");
    assert_eq!(
        f.service
            .authenticate(&sessions[0].access_token)
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    for live in &sessions[1..] {
        assert!(f.service.authenticate(&live.access_token).await.is_ok());
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_revoked_sessions_access_token_stops_working_at_once(db: PgPool) {
    let f = fixture(db).await;
    let kept = f.service.start(f.user, false, &client()).await.unwrap();
    let ended = f.service.start(f.user, false, &client()).await.unwrap();
    assert!(
        f.service
            .revoke(f.user, ended.session_id, "logout")
            .await
            .unwrap()
    );
    assert_eq!(
        f.service
            .authenticate(&ended.access_token)
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    assert_eq!(
        f.service
            .refresh(&ended.refresh_token, &client())
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    assert!(f.service.authenticate(&kept.access_token).await.is_ok());

    assert_eq!(
        f.service
            .revoke_all(f.user, None, "password_change")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        f.service
            .authenticate(&kept.access_token)
            .await
            .unwrap_err(),
        SessionError::Invalid
    );
    let unknown = SecretString::from("00".repeat(32));
    assert_eq!(
        f.service.refresh(&unknown, &client()).await.unwrap_err(),
        SessionError::Invalid
    );
}

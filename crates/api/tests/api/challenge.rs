//! The login challenge (CAPTCHA step) after repeated failures, against a fake siteverify
//! endpoint: required, checked, and failing closed.

use std::sync::Arc;

use actix_web::test::TestRequest;
use clinicd_identity::challenge::SiteVerifyChallenge;
use clinicd_test_support::fake_http::FakeHttpServer;
use clinicd_test_support::{TestApp, settings};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;

const PASSWORD: &str = "correct horse battery staple";

async fn app(pool: PgPool, verify_url: &str) -> TestApp {
    clinicd_test_support::create_user(&pool, "dr.guarded", PASSWORD, false).await;
    let verifier = SiteVerifyChallenge::new(
        verify_url.parse().unwrap(),
        SecretString::from("site-secret".to_owned()),
    )
    .unwrap();
    let identity = clinicd_test_support::identity_with(pool.clone(), |identity| {
        identity.with_challenge_verifier(Arc::new(verifier))
    });
    TestApp::with_identity(settings(), pool, identity)
}

/// Three recent failures, the last one long enough ago that the progressive delay is over.
async fn after_three_failures(app: &TestApp, pool: &PgPool) {
    for _ in 0..3 {
        app.call(clinicd_test_support::post(
            "/api/auth/login",
            &json!({ "username": "dr.guarded", "password": "not the password" }),
        ))
        .await
        .assert_problem(401, "invalid_credentials");
    }
    sqlx::query(
        "UPDATE login_attempts SET first_failed_at = now() - interval '2 minutes', \
         last_failed_at = now() - interval '1 minute' \
         WHERE user_id = (SELECT id FROM users WHERE username = 'dr.guarded')",
    )
    .execute(pool)
    .await
    .unwrap();
}

fn login(extra: Value) -> TestRequest {
    let mut body = json!({ "username": "dr.guarded", "password": PASSWORD });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    clinicd_test_support::post("/api/auth/login", &body)
}

#[sqlx::test(migrations = "../../migrations")]
async fn no_challenge_before_repeated_failures(pool: PgPool) {
    let verifier = FakeHttpServer::start(200, r#"{"success":false}"#).await;
    let app = app(pool, &verifier.url).await;
    assert_eq!(app.call(login(json!({}))).await.status, 200);
    assert!(verifier.requests().is_empty());
}

#[sqlx::test(migrations = "../../migrations")]
async fn after_repeated_failures_a_solved_challenge_is_required(pool: PgPool) {
    let verifier = FakeHttpServer::start(200, r#"{"success":true}"#).await;
    let app = app(pool.clone(), &verifier.url).await;
    after_three_failures(&app, &pool).await;

    app.call(login(json!({})))
        .await
        .assert_problem(401, "challenge_required");
    let ok = app
        .call(login(json!({ "challenge_response": "widget token/+=" })))
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.json());
    let asked = verifier.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        String::from_utf8(asked[0].body.clone()).unwrap(),
        "secret=site-secret&response=widget+token%2F%2B%3D&remoteip=192.0.2.60"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_refused_challenge_is_refused_and_does_not_reach_the_password(pool: PgPool) {
    let verifier = FakeHttpServer::start(200, r#"{"success":false}"#).await;
    let app = app(pool.clone(), &verifier.url).await;
    after_three_failures(&app, &pool).await;
    app.call(login(json!({ "challenge_response": "bot" })))
        .await
        .assert_problem(401, "challenge_required");
    let failures: i32 =
        sqlx::query_scalar("SELECT failed_attempts FROM login_attempts WHERE user_id = (SELECT id FROM users WHERE username = 'dr.guarded')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failures, 3, "not counted as a password failure");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM security_events WHERE kind = 'login_refused' AND detail->>'reason' = 'challenge_failed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(events, 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_unreachable_verifier_fails_closed(pool: PgPool) {
    let app = app(pool.clone(), "http://127.0.0.1:1/siteverify").await;
    after_three_failures(&app, &pool).await;
    app.call(login(json!({ "challenge_response": "anything" })))
        .await
        .assert_problem(503, "service_unavailable");
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_unknown_username_is_challenged_like_a_known_one(pool: PgPool) {
    let verifier = FakeHttpServer::start(200, r#"{"success":false}"#).await;
    let app = app(pool.clone(), &verifier.url).await;
    let attempt = || {
        clinicd_test_support::post(
            "/api/auth/login",
            &json!({ "username": "nobody.here", "password": PASSWORD }),
        )
    };
    for _ in 0..3 {
        app.call(attempt())
            .await
            .assert_problem(401, "invalid_credentials");
    }
    sqlx::query(
        "UPDATE login_attempts SET first_failed_at = now() - interval '2 minutes', \
         last_failed_at = now() - interval '1 minute' WHERE user_id IS NULL",
    )
    .execute(&pool)
    .await
    .unwrap();
    app.call(attempt())
        .await
        .assert_problem(401, "challenge_required");
}

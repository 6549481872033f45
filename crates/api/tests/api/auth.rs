use actix_web::test::TestRequest;
use clinicd_api::HttpSettings;
use clinicd_api::rate_limit::RateLimitSettings;
use clinicd_test_support::{TestApp, TestResponse, settings};
use serde_json::{Value, json};
use sqlx::PgPool;

const PASSWORD: &str = "correct horse battery staple";

async fn with_user(pool: PgPool, settings: HttpSettings) -> TestApp {
    with_account(pool, settings, "dr.quinn", false).await
}

async fn with_account(
    pool: PgPool,
    settings: HttpSettings,
    username: &str,
    must_change_password: bool,
) -> TestApp {
    clinicd_test_support::create_user(&pool, username, PASSWORD, must_change_password).await;
    TestApp::with_pool(settings, pool)
}

fn post(path: &str, body: Value) -> TestRequest {
    clinicd_test_support::post(path, &body)
}

fn bearer(path: &str, token: &str) -> TestRequest {
    TestRequest::get()
        .uri(path)
        .insert_header(("Authorization", format!("Bearer {token}")))
}

async fn login(app: &TestApp, username: &str, password: &str) -> TestResponse {
    app.call(post(
        "/api/auth/login",
        json!({ "username": username, "password": password }),
    ))
    .await
}

#[sqlx::test(migrations = "../../migrations")]
async fn login_me_refresh_and_logout(pool: PgPool) {
    let app = with_user(pool, settings()).await;
    let response = login(&app, "Dr.Quinn", PASSWORD).await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    let tokens = response.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(
        (890..=900).contains(&tokens["expires_in"].as_i64().unwrap()),
        "{tokens}"
    );
    assert_eq!(tokens["must_change_password"], false);
    let access = tokens["access_token"].as_str().unwrap();

    let me = app.call(bearer("/api/auth/me", access)).await;
    assert_eq!(me.status, 200);
    let me = me.json();
    assert_eq!(
        (me["username"].as_str(), me["session_id"].as_str()),
        (Some("dr.quinn"), tokens["session_id"].as_str())
    );
    assert!(me.get("password_hash").is_none() && !me.to_string().contains("argon2"));

    let refreshed = app
        .call(post(
            "/api/auth/refresh",
            json!({ "refresh_token": tokens["refresh_token"] }),
        ))
        .await;
    assert_eq!(refreshed.status, 200);
    let refreshed = refreshed.json();
    assert_ne!(refreshed["refresh_token"], tokens["refresh_token"]);

    let logout = app
        .call(
            bearer(
                "/api/auth/logout",
                refreshed["access_token"].as_str().unwrap(),
            )
            .method(actix_web::http::Method::POST),
        )
        .await;
    assert_eq!(logout.status, 204);
    app.call(bearer(
        "/api/auth/me",
        refreshed["access_token"].as_str().unwrap(),
    ))
    .await
    .assert_problem(401, "unauthenticated");
    app.call(bearer("/api/auth/me", access))
        .await
        .assert_problem(401, "unauthenticated");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_wrong_password_and_an_unknown_user_are_indistinguishable(pool: PgPool) {
    let app = with_user(pool, settings()).await;
    let wrong = login(&app, "dr.quinn", "not the right password").await;
    let unknown = login(&app, "nobody.at.all", PASSWORD).await;
    let (mut a, mut b) = (
        wrong.assert_problem(401, "invalid_credentials"),
        unknown.assert_problem(401, "invalid_credentials"),
    );
    a["request_id"] = Value::Null;
    b["request_id"] = Value::Null;
    assert_eq!(a, b);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_reused_refresh_token_revokes_the_session(pool: PgPool) {
    let app = with_user(pool, settings()).await;
    let tokens = login(&app, "dr.quinn", PASSWORD).await.json();
    let first = json!({ "refresh_token": tokens["refresh_token"] });
    assert_eq!(
        app.call(post("/api/auth/refresh", first.clone()))
            .await
            .status,
        200
    );
    app.call(post("/api/auth/refresh", first))
        .await
        .assert_problem(401, "session_revoked");
    app.call(bearer(
        "/api/auth/me",
        tokens["access_token"].as_str().unwrap(),
    ))
    .await
    .assert_problem(401, "unauthenticated");
    app.call(post(
        "/api/auth/refresh",
        json!({ "refresh_token": "ff".repeat(32) }),
    ))
    .await
    .assert_problem(401, "session_invalid");
}

#[sqlx::test(migrations = "../../migrations")]
async fn repeated_failures_throttle_the_account_with_retry_after(pool: PgPool) {
    let app = with_user(pool, settings()).await;
    for _ in 0..3 {
        login(&app, "dr.quinn", "wrong wrong wrong")
            .await
            .assert_problem(401, "invalid_credentials");
    }
    let throttled = login(&app, "dr.quinn", PASSWORD).await;
    throttled.assert_problem(429, "login_throttled");
    assert_eq!(throttled.header("retry-after"), Some("1"));
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_login_limit_is_per_address_and_username(pool: PgPool) {
    let limited = HttpSettings {
        rate_limits: RateLimitSettings {
            login: "2/15m".parse().unwrap(),
            ..RateLimitSettings::default()
        },
        ..settings()
    };
    let app = with_user(pool, limited).await;
    for _ in 0..2 {
        login(&app, "someone.else", "wrong wrong wrong")
            .await
            .assert_problem(401, "invalid_credentials");
    }
    login(&app, "Someone.Else", "wrong wrong wrong")
        .await
        .assert_problem(429, "rate_limited");
    // A colleague behind the same address is not locked out.
    assert_eq!(login(&app, "dr.quinn", PASSWORD).await.status, 200);
}

#[sqlx::test(migrations = "../../migrations")]
async fn login_bodies_are_validated(pool: PgPool) {
    let app = with_user(pool, settings()).await;
    app.call(post(
        "/api/auth/login",
        json!({ "username": "dr.quinn", "password": PASSWORD, "role": "admin" }),
    ))
    .await
    .assert_problem(400, "unknown_field");
    app.call(post("/api/auth/login", json!({ "username": "dr.quinn" })))
        .await
        .assert_problem(400, "invalid_body");
    let not_json = TestRequest::post()
        .uri("/api/auth/login")
        .set_payload("username=dr.quinn");
    app.call(not_json)
        .await
        .assert_problem(415, "unsupported_media_type");
}

fn with_token(request: TestRequest, token: &Value) -> TestRequest {
    request.insert_header((
        "Authorization",
        format!("Bearer {}", token["access_token"].as_str().unwrap()),
    ))
}

fn change(current: &str, new: &str) -> TestRequest {
    post(
        "/api/auth/password",
        json!({ "current_password": current, "new_password": new }),
    )
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_forced_password_change_blocks_everything_else_until_done(pool: PgPool) {
    let app = with_account(pool, settings(), "dr.quinn", true).await;
    let tokens = login(&app, "dr.quinn", PASSWORD).await.json();
    assert_eq!(tokens["must_change_password"], true);
    let refreshed = app
        .call(post(
            "/api/auth/refresh",
            json!({ "refresh_token": tokens["refresh_token"] }),
        ))
        .await
        .json();
    assert_eq!(
        refreshed["must_change_password"], true,
        "a refresh does not clear the forced change"
    );
    let tokens = refreshed;
    app.call(with_token(
        TestRequest::get().uri("/api/auth/sessions"),
        &tokens,
    ))
    .await
    .assert_problem(403, "password_change_required");
    let me = app
        .call(with_token(TestRequest::get().uri("/api/auth/me"), &tokens))
        .await;
    assert_eq!(me.json()["must_change_password"], true);

    for (current, new, status, code) in [
        (
            "wrong current password",
            "a brand new passphrase",
            403,
            "current_password_incorrect",
        ),
        (PASSWORD, "short one", 422, "password_too_short"),
        (PASSWORD, "qwerty123456", 422, "password_too_common"),
        (
            PASSWORD,
            "hello dr.quinn how are you",
            422,
            "password_contains_username",
        ),
        (PASSWORD, PASSWORD, 422, "password_unchanged"),
    ] {
        app.call(with_token(change(current, new), &tokens))
            .await
            .assert_problem(status, code);
    }
    let changed = app
        .call(with_token(
            change(PASSWORD, "a brand new passphrase"),
            &tokens,
        ))
        .await;
    assert_eq!(changed.status, 204);
    assert_eq!(
        app.call(with_token(
            TestRequest::get().uri("/api/auth/sessions"),
            &tokens
        ))
        .await
        .status,
        200
    );
    login(&app, "dr.quinn", PASSWORD)
        .await
        .assert_problem(401, "invalid_credentials");
    assert_eq!(
        login(&app, "dr.quinn", "a brand new passphrase")
            .await
            .status,
        200
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn changing_the_password_revokes_every_other_session(pool: PgPool) {
    let app = with_user(pool, settings()).await;
    let here = login(&app, "dr.quinn", PASSWORD).await.json();
    let elsewhere = login(&app, "dr.quinn", PASSWORD).await.json();
    assert_eq!(
        app.call(with_token(
            change(PASSWORD, "a brand new passphrase"),
            &here
        ))
        .await
        .status,
        204
    );
    app.call(with_token(
        TestRequest::get().uri("/api/auth/me"),
        &elsewhere,
    ))
    .await
    .assert_problem(401, "unauthenticated");
    assert_eq!(
        app.call(with_token(TestRequest::get().uri("/api/auth/me"), &here))
            .await
            .status,
        200
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn callers_list_and_revoke_only_their_own_sessions(pool: PgPool) {
    let app = with_user(pool.clone(), settings()).await;
    let _other_app = with_account(pool, settings(), "nurse.joy", false).await;
    let first = login(&app, "dr.quinn", PASSWORD).await.json();
    let second = login(&app, "dr.quinn", PASSWORD).await.json();
    let someone_else = login(&app, "nurse.joy", PASSWORD).await.json();

    let listed = app
        .call(with_token(
            TestRequest::get().uri("/api/auth/sessions"),
            &second,
        ))
        .await
        .json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], second["session_id"]);
    assert_eq!(
        (
            listed[0]["current"].as_bool(),
            listed[1]["current"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_eq!(listed[0]["client_ip"], "192.0.2.60");

    let delete = |id: &Value| {
        TestRequest::delete().uri(&format!("/api/auth/sessions/{}", id.as_str().unwrap()))
    };
    app.call(with_token(delete(&someone_else["session_id"]), &second))
        .await
        .assert_problem(404, "not_found");
    app.call(with_token(
        delete(&json!(uuid::Uuid::now_v7().to_string())),
        &second,
    ))
    .await
    .assert_problem(404, "not_found");
    app.call(with_token(
        TestRequest::delete().uri("/api/auth/sessions/not-a-uuid"),
        &second,
    ))
    .await
    .assert_problem(400, "invalid_parameters");
    assert_eq!(
        app.call(with_token(delete(&first["session_id"]), &second))
            .await
            .status,
        204
    );
    app.call(with_token(TestRequest::get().uri("/api/auth/me"), &first))
        .await
        .assert_problem(401, "unauthenticated");
    assert_eq!(
        app.call(with_token(
            TestRequest::get().uri("/api/auth/me"),
            &someone_else
        ))
        .await
        .status,
        200
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn disabling_a_user_ends_their_sessions(pool: PgPool) {
    let app = with_user(pool.clone(), settings()).await;
    let tokens = login(&app, "dr.quinn", PASSWORD).await.json();
    sqlx::query("UPDATE users SET status = 'disabled'")
        .execute(&pool)
        .await
        .unwrap();
    app.call(with_token(TestRequest::get().uri("/api/auth/me"), &tokens))
        .await
        .assert_problem(401, "unauthenticated");
    // Even a session that was not revoked cannot refresh for a disabled account.
    app.call(post(
        "/api/auth/refresh",
        json!({ "refresh_token": tokens["refresh_token"] }),
    ))
    .await
    .assert_problem(401, "session_invalid");
}

//! Browser clients: tokens in `__Host-` cookies, and the CSRF token on unsafe methods.

use std::collections::HashMap;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::test::TestRequest;
use clinicd_test_support::{TestApp, TestResponse, settings};
use serde_json::{Value, json};
use sqlx::PgPool;

const PASSWORD: &str = "correct horse battery staple";
const ACCESS: &str = "__Host-clinicd-access";
const REFRESH: &str = "__Host-clinicd-refresh";
const CSRF: &str = "__Host-clinicd-csrf";

async fn app(pool: PgPool) -> TestApp {
    clinicd_test_support::create_user(&pool, "dr.quinn", PASSWORD, false).await;
    TestApp::with_pool(settings(), pool)
}

fn post(path: &str, body: Value) -> TestRequest {
    clinicd_test_support::post(path, &body)
}

/// The cookies a response sets, by name.
fn set_cookies(response: &TestResponse) -> HashMap<String, Cookie<'static>> {
    response
        .headers
        .get_all("set-cookie")
        .map(|v| {
            let cookie = Cookie::parse(v.to_str().unwrap().to_owned()).unwrap();
            (cookie.name().to_owned(), cookie)
        })
        .collect()
}

/// A browser's session: the cookie jar and the CSRF token its page script keeps.
struct Browser {
    jar: HashMap<String, Cookie<'static>>,
    csrf: String,
    session_id: String,
}

impl Browser {
    fn send(&self, mut request: TestRequest) -> TestRequest {
        for cookie in self.jar.values() {
            request = request.cookie(Cookie::new(
                cookie.name().to_owned(),
                cookie.value().to_owned(),
            ));
        }
        request
    }

    fn with_csrf(&self, request: TestRequest) -> TestRequest {
        self.send(request)
            .insert_header(("X-CSRF-Token", self.csrf.clone()))
    }
}

async fn cookie_login(app: &TestApp) -> Browser {
    let response = app
        .call(post(
            "/api/auth/login",
            json!({ "username": "dr.quinn", "password": PASSWORD, "cookies": true }),
        ))
        .await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    let body = response.json();
    Browser {
        jar: set_cookies(&response),
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        session_id: body["session_id"].as_str().unwrap().to_owned(),
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_cookie_login_sets_host_cookies_and_keeps_tokens_out_of_the_body(pool: PgPool) {
    let app = app(pool).await;
    let response = app
        .call(post(
            "/api/auth/login",
            json!({ "username": "dr.quinn", "password": PASSWORD, "cookies": true }),
        ))
        .await;
    assert_eq!(response.status, 200);
    let body = response.json();
    assert!(
        body.get("access_token").is_none() && body.get("refresh_token").is_none(),
        "script-readable tokens: {body}"
    );
    assert_eq!(body["token_type"], "Cookie");
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    for (name, cookie) in &cookies {
        assert!(name.starts_with("__Host-"), "{name}");
        assert_eq!(cookie.secure(), Some(true), "{name}");
        assert_eq!(cookie.path(), Some("/"), "{name}");
        assert_eq!(cookie.domain(), None, "{name}: __Host- forbids Domain");
        assert_eq!(cookie.same_site(), Some(SameSite::Strict), "{name}");
        assert!(cookie.max_age().unwrap().whole_seconds() > 0, "{name}");
    }
    assert_eq!(cookies[ACCESS].http_only(), Some(true));
    assert_eq!(cookies[REFRESH].http_only(), Some(true));
    assert_eq!(
        cookies[CSRF].http_only(),
        None,
        "the page's script reads the CSRF token after a reload"
    );
    assert_eq!(cookies[CSRF].value(), body["csrf_token"]);
    // The access cookie is a working credential for safe methods.
    let browser = Browser {
        jar: cookies,
        csrf: String::new(),
        session_id: body["session_id"].as_str().unwrap().to_owned(),
    };
    let me = app
        .call(browser.send(TestRequest::get().uri("/api/auth/me")))
        .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["session_id"], browser.session_id.as_str());
}

#[sqlx::test(migrations = "../../migrations")]
async fn unsafe_cookie_requests_without_the_sessions_csrf_token_are_refused(pool: PgPool) {
    let app = app(pool).await;
    let browser = cookie_login(&app).await;
    let other = cookie_login(&app).await;

    let none = app
        .call(browser.send(TestRequest::post().uri("/api/auth/logout")))
        .await;
    none.assert_problem(403, "csrf_token_invalid");
    let forged = app
        .call(
            browser
                .send(TestRequest::post().uri("/api/auth/logout"))
                .insert_header((
                    "X-CSRF-Token",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                )),
        )
        .await;
    forged.assert_problem(403, "csrf_token_invalid");
    // Another session's token (say, an attacker's own) does not fit this session.
    let borrowed = app
        .call(
            browser
                .send(TestRequest::post().uri("/api/auth/logout"))
                .insert_header(("X-CSRF-Token", other.csrf.clone())),
        )
        .await;
    borrowed.assert_problem(403, "csrf_token_invalid");
    let still = app
        .call(browser.send(TestRequest::get().uri("/api/auth/me")))
        .await;
    assert_eq!(still.status, 200, "refused requests changed nothing");

    let logout = app
        .call(browser.with_csrf(TestRequest::post().uri("/api/auth/logout")))
        .await;
    assert_eq!(logout.status, 204);
    let cleared = set_cookies(&logout);
    for name in [ACCESS, REFRESH, CSRF] {
        assert_eq!(cleared[name].value(), "", "{name}");
        assert_eq!(
            cleared[name].max_age().unwrap().whole_seconds(),
            0,
            "{name}"
        );
    }
    let after = app
        .call(browser.send(TestRequest::get().uri("/api/auth/me")))
        .await;
    after.assert_problem(401, "unauthenticated");
}

#[sqlx::test(migrations = "../../migrations")]
async fn bearer_clients_need_no_csrf_token_and_a_header_wins_over_a_cookie(pool: PgPool) {
    let app = app(pool).await;
    let browser = cookie_login(&app).await;
    let api = app
        .call(post(
            "/api/auth/login",
            json!({ "username": "dr.quinn", "password": PASSWORD }),
        ))
        .await
        .json();
    let token = api["access_token"].as_str().unwrap();
    // A request carrying both is judged by its Authorization header (the API session).
    let logout = app
        .call(
            browser
                .send(TestRequest::post().uri("/api/auth/logout"))
                .insert_header(("Authorization", format!("Bearer {token}"))),
        )
        .await;
    assert_eq!(logout.status, 204);
    let me = app
        .call(browser.send(TestRequest::get().uri("/api/auth/me")))
        .await;
    assert_eq!(me.status, 200, "the cookie session is untouched");
    let gone = app
        .call(
            TestRequest::get()
                .uri("/api/auth/me")
                .insert_header(("Authorization", format!("Bearer {token}"))),
        )
        .await;
    gone.assert_problem(401, "unauthenticated");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_cookie_refresh_needs_the_csrf_token_and_rotates_the_cookies(pool: PgPool) {
    let app = app(pool).await;
    let browser = cookie_login(&app).await;

    let refused = app
        .call(browser.send(post("/api/auth/refresh", json!({}))))
        .await;
    refused.assert_problem(403, "csrf_token_invalid");

    let refreshed = app
        .call(browser.with_csrf(post("/api/auth/refresh", json!({}))))
        .await;
    assert_eq!(
        refreshed.status,
        200,
        "the refused attempt used nothing up: {:?}",
        refreshed.json()
    );
    let body = refreshed.json();
    assert_eq!(body["session_id"], browser.session_id.as_str());
    assert_eq!(
        body["csrf_token"],
        browser.csrf.as_str(),
        "bound to the session"
    );
    let rotated = set_cookies(&refreshed);
    assert_ne!(rotated[REFRESH].value(), browser.jar[REFRESH].value());
    assert_ne!(rotated[ACCESS].value(), browser.jar[ACCESS].value());

    // The old refresh cookie again: reuse, the whole session is revoked.
    let replay = app
        .call(browser.with_csrf(post("/api/auth/refresh", json!({}))))
        .await;
    replay.assert_problem(401, "session_revoked");
    let fresh = Browser {
        jar: rotated,
        csrf: browser.csrf.clone(),
        session_id: browser.session_id.clone(),
    };
    let me = app
        .call(fresh.send(TestRequest::get().uri("/api/auth/me")))
        .await;
    me.assert_problem(401, "unauthenticated");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_refresh_with_neither_token_nor_cookie_is_unauthenticated(pool: PgPool) {
    let app = app(pool).await;
    let response = app.call(post("/api/auth/refresh", json!({}))).await;
    response.assert_problem(401, "session_invalid");
}

/// A cookie search of a session this instance remembers (the patient search checks the
/// session in its own statement) still needs the session's CSRF token.
#[sqlx::test(migrations = "../../migrations")]
async fn a_remembered_sessions_cookie_search_needs_its_csrf_token(pool: PgPool) {
    let app = app(pool.clone()).await;
    app.state.identity.keyring.bootstrap().await.unwrap();
    let user: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE username = 'dr.quinn'")
        .fetch_one(&pool)
        .await
        .unwrap();
    clinicd_identity::users::assign_role(
        &pool,
        clinicd_identity::users::UserId(user),
        "Staff",
        None,
    )
    .await
    .unwrap();
    let browser = cookie_login(&app).await;
    // Two reads: the first checks the session in full, the second is admitted on memory.
    let path = format!("/api/patients/{}", uuid::Uuid::new_v4());
    for _ in 0..2 {
        let read = app.call(browser.send(TestRequest::get().uri(&path))).await;
        read.assert_problem(404, "not_found");
    }
    let confirmed = clinicd_api::metrics::SessionCheckKind::InStatement;
    assert_eq!(app.state.metrics.session_checks(confirmed), 1, "remembered");
    let criteria = json!({"family_name": "Lovelace", "date_of_birth": "1985-12-10"}).to_string();
    let search = || {
        browser
            .send(TestRequest::post().uri("/api/patients/search"))
            .insert_header(("Content-Type", "application/json"))
            .set_payload(criteria.clone())
    };
    app.call(search())
        .await
        .assert_problem(403, "csrf_token_invalid");
    let with_token = app
        .call(search().insert_header(("X-CSRF-Token", browser.csrf.clone())))
        .await;
    assert_eq!(with_token.status, 200);
}

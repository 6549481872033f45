//! Every step of logging in is rate limited, and no failure tells whether an account exists:
//! a known and an unknown username meet the same statuses, bodies and headers.

use std::collections::BTreeSet;

use actix_web::test::TestRequest;
use clinicd_api::rate_limit::{QuotaSpec, RateClass};
use clinicd_api::routes::ROUTES;
use clinicd_test_support::{TestApp, TestResponse, settings};
use serde_json::{Value, json};
use sqlx::PgPool;

const PASSWORD: &str = "correct horse battery staple";

fn from(ip: &str, path: &str, body: &Value) -> TestRequest {
    TestRequest::post()
        .uri(path)
        .peer_addr(format!("{ip}:4000").parse().unwrap())
        .insert_header(("Content-Type", "application/json"))
        .set_payload(body.to_string())
}

fn quota(count: u32) -> QuotaSpec {
    QuotaSpec {
        count: std::num::NonZeroU32::new(count).unwrap(),
        window: std::time::Duration::from_secs(900),
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn every_login_class_route_is_counted(pool: PgPool) {
    let mut settings = settings();
    settings.rate_limits.login = quota(2);
    let app = TestApp::with_pool(settings, pool);
    let bodies = [
        (
            "/api/auth/login",
            json!({"username": "someone", "password": "guess"}),
        ),
        (
            "/api/auth/mfa",
            json!({"challenge_token": "not.a.token", "code": "123456"}),
        ),
        (
            "/api/auth/mfa/send",
            json!({"challenge_token": "not.a.token"}),
        ),
    ];
    let login_class: BTreeSet<&str> = ROUTES
        .iter()
        .filter(|r| r.rate_class == Some(RateClass::Login))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        login_class,
        bodies.iter().map(|(path, _)| *path).collect(),
        "every login-class route is tried"
    );
    for (i, (path, body)) in bodies.iter().enumerate() {
        let ip = format!("198.51.100.{}", 10 + i);
        for attempt in 0..2 {
            let response = app.call(from(&ip, path, body)).await;
            assert_ne!(response.status, 429, "{path} attempt {attempt}");
        }
        app.call(from(&ip, path, body))
            .await
            .assert_problem(429, "rate_limited");
    }
}

/// What a client can compare between two answers: status, problem code, the shape of the body
/// and the headers (values too, but the request id and the clock's).
fn observed(response: &TestResponse) -> (u16, Value, BTreeSet<String>, Vec<(String, String)>) {
    let body = response.json_or_null();
    let keys = body
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let mut headers: Vec<(String, String)> = response
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "x-request-id" | "date"))
        .map(|(name, value)| {
            let value = value.to_str().unwrap();
            // Whole seconds of a delay, and the state of a per-address quota that refills
            // with time, counted a few milliseconds apart.
            let value = match name.as_str() {
                "retry-after" | "ratelimit" => "n".to_owned(),
                _ => value.to_owned(),
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    headers.sort();
    (
        response.status.as_u16(),
        body.get("code").cloned().unwrap_or(Value::Null),
        keys,
        headers,
    )
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_known_and_an_unknown_username_answer_alike_on_every_failure(pool: PgPool) {
    let mut settings = settings();
    settings.rate_limits.login = quota(1000);
    clinicd_test_support::create_user(&pool, "dr.quinn", PASSWORD, false).await;
    let app = TestApp::with_pool(settings, pool.clone());

    let mut seen: Vec<Vec<(u16, Value, BTreeSet<String>, Vec<(String, String)>)>> = Vec::new();
    for (ip, username) in [
        ("198.51.100.20", "dr.quinn"),
        ("198.51.100.21", "nobody.here"),
    ] {
        let login = |password: &str| {
            from(
                ip,
                "/api/auth/login",
                &json!({"username": username, "password": password}),
            )
        };
        let mut steps = Vec::new();
        // Three wrong passwords, then one too soon.
        for _ in 0..3 {
            steps.push(observed(&app.call(login("not the password")).await));
        }
        steps.push(observed(&app.call(login("not the password")).await));
        // The delay over, a fifth failure locks the username...
        sqlx::query(
            "UPDATE login_attempts SET failed_attempts = 4, first_failed_at = now() - interval '2 minutes', \
             last_failed_at = now() - interval '70 seconds'",
        )
        .execute(&pool)
        .await
        .unwrap();
        steps.push(observed(&app.call(login("not the password")).await));
        // ...and then even the right password is refused, alike.
        steps.push(observed(&app.call(login(PASSWORD)).await));
        sqlx::query("DELETE FROM login_attempts")
            .execute(&pool)
            .await
            .unwrap();
        seen.push(steps);
    }
    let codes: Vec<Value> = seen[0].iter().map(|s| s.1.clone()).collect();
    assert_eq!(
        codes,
        [
            "invalid_credentials",
            "invalid_credentials",
            "invalid_credentials",
            "login_throttled",
            "invalid_credentials",
            "invalid_credentials"
        ]
        .map(Value::from),
        "the paths this test walks"
    );
    for (step, (known, unknown)) in seen[0].iter().zip(&seen[1]).enumerate() {
        assert_eq!(known, unknown, "step {step}");
    }
}

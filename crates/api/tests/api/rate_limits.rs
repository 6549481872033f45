use std::net::SocketAddr;

use actix_web::test::TestRequest;
use clinicd_api::HttpSettings;
use clinicd_api::client_ip::TrustedProxies;
use clinicd_api::rate_limit::RateLimitSettings;
use clinicd_test_support::{TestApp, member, roomy_settings, send};
use serde_json::json;

fn app_with_ip_limit(limit: &str, proxies: &str) -> TestApp {
    let proxies = proxies
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap())
        .collect();
    TestApp::new(HttpSettings {
        rate_limits: RateLimitSettings {
            per_ip: limit.parse().unwrap(),
            ..RateLimitSettings::default()
        },
        trusted_proxies: TrustedProxies::new(proxies),
        ..HttpSettings::default()
    })
}

fn from(peer: &str) -> TestRequest {
    TestRequest::get()
        .uri("/health")
        .peer_addr(peer.parse::<SocketAddr>().unwrap())
}

#[actix_web::test]
async fn responses_carry_ietf_ratelimit_headers() {
    let app = app_with_ip_limit("3/1m", "");
    let response = app.call(from("192.0.2.1:5000")).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("ratelimit-policy"),
        Some(r#""ip";q=3;w=60"#)
    );
    assert_eq!(response.header("ratelimit"), Some(r#""ip";r=2;t=20"#));
}

#[actix_web::test]
async fn over_the_limit_is_429_with_retry_after_and_is_counted() {
    let app = app_with_ip_limit("2/1h", "");
    for _ in 0..2 {
        assert_eq!(app.call(from("192.0.2.1:5000")).await.status, 200);
    }
    let refused = app.call(from("192.0.2.1:5001")).await;
    refused.assert_problem(429, "rate_limited");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1700..=1800).contains(&retry_after),
        "one request refills every 30 minutes: {retry_after}"
    );
    assert!(
        refused
            .header("ratelimit")
            .unwrap()
            .starts_with(r#""ip";r=0;t="#)
    );
    assert_eq!(app.state.metrics.rate_limited("ip"), 1);

    // Another client is unaffected.
    assert_eq!(app.call(from("192.0.2.2:5000")).await.status, 200);
}

#[actix_web::test]
async fn an_untrusted_peer_cannot_dodge_the_limit_with_x_forwarded_for() {
    let app = app_with_ip_limit("1/1h", "10.0.0.0/8");
    assert_eq!(
        app.call(from("192.0.2.1:5000").insert_header(("X-Forwarded-For", "198.51.100.1")))
            .await
            .status,
        200
    );
    let spoofed = app
        .call(from("192.0.2.1:5000").insert_header(("X-Forwarded-For", "198.51.100.2")))
        .await;
    spoofed.assert_problem(429, "rate_limited");
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_bucket() {
    let app = app_with_ip_limit("1/1h", "10.0.0.0/8");
    let via_proxy =
        |client: &'static str| from("10.0.0.5:443").insert_header(("X-Forwarded-For", client));
    assert_eq!(app.call(via_proxy("198.51.100.1")).await.status, 200);
    assert_eq!(app.call(via_proxy("198.51.100.2")).await.status, 200);
    app.call(via_proxy("198.51.100.1"))
        .await
        .assert_problem(429, "rate_limited");
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_api_route_also_counts_against_its_class_limit(pool: sqlx::PgPool) {
    // A live database: the refused request is audited too (a dead store would make it 503).
    let app = TestApp::with_pool(
        HttpSettings {
            rate_limits: RateLimitSettings {
                api: "1/1h".parse().unwrap(),
                ..RateLimitSettings::default()
            },
            ..HttpSettings::default()
        },
        pool,
    );
    let me = || {
        TestRequest::get()
            .uri("/api/auth/me")
            .peer_addr("192.0.2.9:5000".parse::<SocketAddr>().unwrap())
    };
    let first = app.call(me()).await;
    first.assert_problem(401, "unauthenticated");
    assert_eq!(
        first.header("ratelimit-policy"),
        Some(r#""ip";q=600;w=60, "api";q=1;w=3600"#)
    );
    let refused = app.call(me()).await;
    refused.assert_problem(429, "rate_limited");
    assert_eq!(app.state.metrics.rate_limited("api"), 1);
    // Routes outside the class (health probes) are not counted against it.
    assert_eq!(app.call(from("192.0.2.9:5000")).await.status, 200);
}

#[sqlx::test(migrations = "../../migrations")]
async fn on_routes_that_need_a_permission_the_api_class_is_counted_per_user(pool: sqlx::PgPool) {
    let mut settings = roomy_settings();
    settings.rate_limits.api = "2/1h".parse().unwrap();
    let app = TestApp::with_pool(settings, pool);
    let (_, grey) = member(&app, "dr.grey", &["Provider"]).await;
    let (_, house) = member(&app, "dr.house", &["Provider"]).await;
    let search = |token: &str| send("POST", "/api/patients/search", token, Some(json!({})));

    let first = app.call(search(&grey)).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some(r#""ip";q=1000000;w=60, "api";q=2;w=3600"#)
    );
    assert!(first.header("ratelimit").unwrap().contains(r#""api";r=1;"#));
    assert_eq!(app.call(search(&grey)).await.status, 200);
    let refused = app.call(search(&grey)).await;
    refused.assert_problem(429, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    assert!(
        refused
            .header("ratelimit")
            .unwrap()
            .contains(r#""api";r=0;"#)
    );
    assert_eq!(app.state.metrics.rate_limited("api"), 1);

    // A colleague behind the same address has a quota of their own.
    assert_eq!(app.call(search(&house)).await.status, 200);
    // Requests refused for a missing permission use none of it.
    for _ in 0..3 {
        app.call(send("GET", "/api/audit/verify", &house, None))
            .await
            .assert_problem(403, "permission_denied");
    }
    assert_eq!(app.call(search(&house)).await.status, 200);
    app.call(search(&house))
        .await
        .assert_problem(429, "rate_limited");

    // An unauthenticated caller is refused before any class limit: only the IP counts it.
    let anonymous = app
        .call(
            TestRequest::post()
                .uri("/api/patients/search")
                .set_json(json!({})),
        )
        .await;
    anonymous.assert_problem(401, "unauthenticated");
    assert_eq!(
        anonymous.header("ratelimit-policy"),
        Some(r#""ip";q=1000000;w=60"#)
    );
}

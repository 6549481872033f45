use actix_web::test::TestRequest;
use clinicd_api::HttpSettings;
use clinicd_api::settings::AllowedOrigins;
use clinicd_test_support::TestApp;

const ALLOWED: &str = "https://app.clinic.example";

fn app() -> TestApp {
    TestApp::new(HttpSettings {
        allowed_origins: AllowedOrigins::parse(ALLOWED, true).unwrap(),
        ..HttpSettings::default()
    })
}

fn preflight(origin: &str, method: &str) -> TestRequest {
    TestRequest::default()
        .method(actix_web::http::Method::OPTIONS)
        .uri("/health")
        .insert_header(("Origin", origin))
        .insert_header(("Access-Control-Request-Method", method))
}

#[actix_web::test]
async fn a_preflight_from_an_allowed_origin_is_answered() {
    let response = app()
        .call(preflight(ALLOWED, "POST").insert_header((
            "Access-Control-Request-Headers",
            "content-type, authorization",
        )))
        .await;
    assert_eq!(response.status, 204);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(ALLOWED)
    );
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(
        response
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(response.header("vary"), Some("Origin"));
    clinicd_test_support::assert_security_headers(&response.headers);
}

#[actix_web::test]
async fn a_request_from_an_allowed_origin_gets_cors_headers() {
    let response = app()
        .call(
            TestRequest::get()
                .uri("/health")
                .insert_header(("Origin", ALLOWED)),
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(ALLOWED)
    );
    assert!(
        response
            .header("access-control-expose-headers")
            .unwrap()
            .contains("X-Request-Id")
    );
}

#[actix_web::test]
async fn a_preflight_from_an_unlisted_origin_is_refused_and_counted() {
    let app = app();
    for origin in [
        "https://evil.example",
        "https://app.clinic.example.evil.example",
        "http://app.clinic.example",
        "null",
    ] {
        let response = app.call(preflight(origin, "GET")).await;
        response.assert_problem(403, "origin_not_allowed");
        assert!(response.header("access-control-allow-origin").is_none());
    }
    let metrics = app.state.metrics.render().unwrap();
    assert!(
        metrics.contains(r#"clinicd_cors_refused_total{kind="preflight"} 4"#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_request_from_an_unlisted_origin_is_refused_before_the_handler() {
    let app = app();
    let response = app
        .call(
            TestRequest::post()
                .uri("/test/echo")
                .insert_header(("Origin", "https://evil.example"))
                .set_payload("{"),
        )
        .await;
    // 403, not the 415/400 the handler would give: the request never reached it.
    response.assert_problem(403, "origin_not_allowed");
    let metrics = app.state.metrics.render().unwrap();
    assert!(
        metrics.contains(r#"clinicd_cors_refused_total{kind="request"} 1"#),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_preflight_asking_for_an_unlisted_header_or_method_is_refused() {
    let app = app();
    app.call(
        preflight(ALLOWED, "POST").insert_header(("Access-Control-Request-Headers", "x-evil")),
    )
    .await
    .assert_problem(403, "origin_not_allowed");
    app.call(preflight(ALLOWED, "TRACE"))
        .await
        .assert_problem(403, "origin_not_allowed");
}

#[actix_web::test]
async fn requests_without_origin_and_same_origin_requests_pass() {
    let app = app();
    assert_eq!(app.get("/health").await.status, 200);
    let same_origin = TestRequest::get()
        .uri("/health")
        .insert_header(("Host", "clinicd.example:8443"))
        .insert_header(("Origin", "https://clinicd.example:8443"));
    let response = app.call(same_origin).await;
    assert_eq!(response.status, 200);
    assert!(response.header("access-control-allow-origin").is_none());
}

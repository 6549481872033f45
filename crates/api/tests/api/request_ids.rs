use actix_web::test::TestRequest;
use clinicd_test_support::{TestApp, settings};

#[actix_web::test]
async fn a_well_formed_request_id_is_echoed() {
    let app = TestApp::new(settings());
    let response = app
        .call(
            TestRequest::get()
                .uri("/health")
                .insert_header(("X-Request-Id", "lb-7f3a.42")),
        )
        .await;
    assert_eq!(response.header("x-request-id"), Some("lb-7f3a.42"));

    let problem = app
        .call(
            TestRequest::get()
                .uri("/nowhere")
                .insert_header(("X-Request-Id", "lb-7f3a.43")),
        )
        .await
        .assert_problem(404, "not_found");
    assert_eq!(problem["request_id"], "lb-7f3a.43");
}

#[actix_web::test]
async fn a_malformed_request_id_is_replaced_not_echoed() {
    let app = TestApp::new(settings());
    for bad in ["has spaces", "<script>alert(1)</script>", &"x".repeat(65)] {
        let response = app
            .call(
                TestRequest::get()
                    .uri("/health")
                    .insert_header(("X-Request-Id", bad)),
            )
            .await;
        let id = response.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
}

#[actix_web::test]
async fn every_request_gets_a_distinct_id() {
    let app = TestApp::new(settings());
    let first = app.get("/health").await;
    let second = app.get("/health").await;
    let (a, b) = (
        first.header("x-request-id").unwrap(),
        second.header("x-request-id").unwrap(),
    );
    assert!(uuid::Uuid::parse_str(a).is_ok());
    assert_ne!(a, b);
}

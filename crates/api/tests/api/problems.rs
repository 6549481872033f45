use actix_web::http::header;
use actix_web::test::TestRequest;
use clinicd_api::settings::DEFAULT_JSON_LIMIT;
use clinicd_test_support::{TestApp, settings};

#[actix_web::test]
async fn a_valid_body_passes() {
    let response = TestApp::new(settings())
        .post_json(r#"{"name":"x","count":3}"#)
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["count"], 3);
}

/// JSON Schema counts `3.0` as an integer, and so does the server; `3.5` is not one.
#[actix_web::test]
async fn a_whole_number_written_as_a_float_is_an_integer() {
    let app = TestApp::new(settings());
    let response = app.post_json(r#"{"name":"x","count":3.0}"#).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["count"], 3);
    app.post_json(r#"{"name":"x","count":3.5}"#)
        .await
        .assert_problem(400, "invalid_body");
    app.post_json(r#"{"name":"x","count":1e300}"#)
        .await
        .assert_problem(400, "invalid_body");
}

#[actix_web::test]
async fn malformed_json_is_400() {
    let app = TestApp::new(settings());
    for body in ["{", r#"{"name": "x", "count": 3"#, "not json", ""] {
        app.post_json(body)
            .await
            .assert_problem(400, "malformed_json");
    }
}

#[actix_web::test]
async fn an_unknown_field_is_400_naming_the_field() {
    let problem = TestApp::new(settings())
        .post_json(r#"{"name":"x","count":3,"is_admin":true}"#)
        .await
        .assert_problem(400, "unknown_field");
    assert!(
        problem["detail"].as_str().unwrap().contains("is_admin"),
        "{problem}"
    );
}

#[actix_web::test]
async fn a_wrongly_typed_value_is_400_without_echoing_the_value() {
    let problem = TestApp::new(settings())
        .post_json(r#"{"name":"x","count":"123-45-6789"}"#)
        .await
        .assert_problem(400, "invalid_body");
    assert!(!problem.to_string().contains("123-45-6789"), "{problem}");
}

#[actix_web::test]
async fn a_body_over_the_limit_is_413() {
    let app = TestApp::new(settings());
    let big = format!(
        r#"{{"name":"{}","count":1}}"#,
        "a".repeat(DEFAULT_JSON_LIMIT)
    );
    let problem = app
        .post_json(big)
        .await
        .assert_problem(413, "payload_too_large");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&DEFAULT_JSON_LIMIT.to_string())
    );
    // Just under the limit is accepted.
    let fits = format!(
        r#"{{"name":"{}","count":1}}"#,
        "a".repeat(DEFAULT_JSON_LIMIT - 100)
    );
    assert_eq!(app.post_json(fits).await.status, 200);
}

#[actix_web::test]
async fn the_wrong_content_type_is_415() {
    let app = TestApp::new(settings());
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let request = TestRequest::post()
            .uri("/test/echo")
            .insert_header((header::CONTENT_TYPE, content_type))
            .set_payload(r#"{"name":"x","count":3}"#);
        app.call(request)
            .await
            .assert_problem(415, "unsupported_media_type");
    }
    let no_content_type = TestRequest::post()
        .uri("/test/echo")
        .set_payload(r#"{"name":"x","count":3}"#);
    app.call(no_content_type)
        .await
        .assert_problem(415, "unsupported_media_type");
}

#[actix_web::test]
async fn an_unknown_route_is_404() {
    TestApp::new(settings())
        .get("/api/nothing-here")
        .await
        .assert_problem(404, "not_found");
}

#[actix_web::test]
async fn a_wrong_method_is_405_with_allow() {
    let response = TestApp::new(settings())
        .call(TestRequest::post().uri("/health"))
        .await;
    response.assert_problem(405, "method_not_allowed");
    assert_eq!(response.header("allow"), Some("GET"));
}

#[actix_web::test]
async fn a_malformed_path_parameter_is_400() {
    let app = TestApp::new(settings());
    app.get("/test/items/not-a-uuid")
        .await
        .assert_problem(400, "invalid_parameters");
    assert_eq!(
        app.get("/test/items/0192b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b")
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn the_principal_extractor_refuses_missing_and_invalid_tokens() {
    let app = TestApp::new(settings());
    let anonymous = app.get("/test/private").await;
    anonymous.assert_problem(401, "unauthenticated");
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    for authorization in [
        "Bearer abc.def.ghi",
        "Bearer ",
        "Basic YWRtaW46YWRtaW4=",
        "bearer",
    ] {
        let response = app
            .call(
                TestRequest::get()
                    .uri("/test/private")
                    .insert_header(("Authorization", authorization)),
            )
            .await;
        response.assert_problem(401, "unauthenticated");
    }
}

#[actix_web::test]
async fn an_unexpected_error_is_a_generic_500_without_internals() {
    let problem = TestApp::new(settings())
        .get("/test/boom")
        .await
        .assert_problem(500, "internal_error");
    let text = problem.to_string();
    for internal in ["relation", "patients", "/srv", "db.rs"] {
        assert!(!text.contains(internal), "{internal} leaked: {text}");
    }
}

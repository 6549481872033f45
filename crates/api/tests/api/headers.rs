use actix_web::test::TestRequest;
use clinicd_test_support::{TestApp, assert_security_headers, settings};

#[actix_web::test]
async fn a_success_carries_every_security_header() {
    let response = TestApp::new(settings()).get("/health").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["status"], "ok");
    assert_security_headers(&response.headers);
    assert_eq!(
        response.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    );
}

#[actix_web::test]
async fn client_errors_carry_every_security_header() {
    let app = TestApp::new(settings());
    for response in [
        app.get("/no/such/route").await,
        app.call(TestRequest::delete().uri("/health")).await,
        app.post_json("{").await,
        app.get("/test/private").await,
    ] {
        assert!(response.status.is_client_error(), "{}", response.status);
        assert_security_headers(&response.headers);
    }
}

#[actix_web::test]
async fn server_errors_carry_every_security_header() {
    let app = TestApp::new(settings());
    for response in [app.get("/test/boom").await, app.get("/ready").await] {
        assert!(response.status.is_server_error(), "{}", response.status);
        assert_security_headers(&response.headers);
    }
}

#[actix_web::test]
async fn the_docs_page_gets_a_narrower_csp_and_api_responses_do_not() {
    let app = TestApp::new(settings());
    let docs = app.get("/api/docs/").await;
    assert_eq!(docs.status, 200);
    assert!(
        docs.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_security_headers(&docs.headers);
    let csp = docs.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        !csp.contains("script-src 'unsafe-inline'") && !csp.contains("http"),
        "{csp}"
    );

    let spec = app.get("/api/openapi.json").await;
    assert!(
        !spec
            .header("content-security-policy")
            .unwrap()
            .contains("script-src")
    );
}

#[actix_web::test]
async fn swagger_ui_assets_are_served_from_the_binary() {
    let app = TestApp::new(settings());
    let page = app.get("/api/docs/").await;
    let html = String::from_utf8_lossy(&page.body);
    // Nothing is loaded from another origin: the CSP would block it, and these machines are
    // offline.
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "{html}"
    );
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        let response = app.get(&format!("/api/docs/{asset}")).await;
        assert_eq!(response.status, 200, "{asset}");
        assert!(response.body.len() > 100, "{asset}");
    }
    let initializer = app.get("/api/docs/swagger-initializer.js").await;
    assert!(String::from_utf8_lossy(&initializer.body).contains("/api/openapi.json"));
    let redirect = app.get("/api/docs").await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.header("location"), Some("/api/docs/"));
}

#[actix_web::test]
async fn a_bare_error_from_a_lower_layer_becomes_problem_json() {
    // Swagger UI's service answers an unknown asset with an empty 404 of its own.
    let response = TestApp::new(settings())
        .get("/api/docs/no-such-asset.js")
        .await;
    response.assert_problem(404, "not_found");
}

use std::collections::BTreeSet;

use clinicd_api::routes::ROUTES;
use clinicd_test_support::{TestApp, settings};
use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec_operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

fn served_spec() -> Value {
    clinicd_api::docs::document()
}

#[actix_web::test]
async fn the_served_document_is_openapi_3_1() {
    let response = TestApp::new(settings()).get("/api/openapi.json").await;
    assert_eq!(response.status, 200);
    let spec = response.json();
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        spec["openapi"]
    );
    assert_eq!(spec, served_spec());
    assert_eq!(spec["info"]["title"], "clinicd");
}

#[test]
fn every_route_is_in_the_spec_and_every_spec_operation_is_a_route() {
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(routes.len(), ROUTES.len(), "a route is declared twice");
    let documented = spec_operations(&served_spec());
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented operations with no route: {unrouted:?}"
    );
}

#[actix_web::test]
async fn every_documented_operation_is_served() {
    let app = TestApp::new(settings());
    for (method, path) in spec_operations(&served_spec()) {
        let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .call(
                actix_web::test::TestRequest::default()
                    .method(method.clone())
                    .uri(&path),
            )
            .await;
        assert!(
            response.status != 404 && response.status != 405,
            "{method} {path} is documented but answered {}",
            response.status
        );
    }
}

#[test]
fn every_operation_documents_its_responses_and_errors_use_the_problem_schema() {
    let spec = served_spec();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("429"),
                "{method} {path} does not document 429"
            );
            for (status, response) in responses {
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status} has no description"
                );
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/problem+json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let schemes = spec["components"]["securitySchemes"].as_object().unwrap();
    assert!(
        schemes.contains_key("bearer") && schemes.contains_key("cookie"),
        "{schemes:?}"
    );
}

#[test]
fn the_schema_says_which_identifiers_are_masked() {
    let spec = served_spec();
    let patient = &spec["components"]["schemas"]["PatientView"]["properties"];
    let ssn = patient["ssn"]["description"].as_str().unwrap_or_default();
    assert!(
        ssn.contains("***-**-") && ssn.contains("patient:read_identifiers"),
        "{ssn}"
    );
    let insurance = &spec["components"]["schemas"]["InsuranceBody"]["properties"]["member_number"];
    let member = insurance["description"].as_str().unwrap_or_default();
    assert!(
        member.contains("****") && member.contains("last four"),
        "{member}"
    );
}

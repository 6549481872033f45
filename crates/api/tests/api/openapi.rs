use std::collections::BTreeSet;

use clinicd_api::routes::ROUTES;
use clinicd_test_support::{TestApp, settings};
use serde_json::{Value, json};

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

fn operation<'a>(spec: &'a Value, method: &str, path: &str) -> &'a Value {
    let operation = &spec["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    operation
}

#[test]
fn list_filters_are_optional_query_parameters_with_their_ranges() {
    let spec = served_spec();
    for (path, names) in [
        (
            "/api/appointments",
            &["provider_id", "date", "utc_offset_minutes", "patient_id"][..],
        ),
        ("/api/admin/users", &["after", "limit"][..]),
        ("/api/security/break-glass", &["pending", "limit"][..]),
    ] {
        let parameters = operation(&spec, "get", path)["parameters"]
            .as_array()
            .unwrap();
        for name in names {
            let parameter = parameters
                .iter()
                .find(|p| p["name"] == *name)
                .unwrap_or_else(|| panic!("GET {path} does not declare {name}"));
            assert_eq!(parameter["in"], "query", "GET {path} {name}");
            assert_ne!(parameter["required"], true, "GET {path} {name}");
        }
        assert!(
            parameters.iter().all(|p| p["in"] != "path"),
            "GET {path} declares a path parameter it does not have"
        );
    }
    let limit = &operation(&spec, "get", "/api/admin/users")["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"];
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&1.into(), &200.into())
    );
}

#[test]
fn json_body_operations_document_every_refusal_of_a_body() {
    let spec = served_spec();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            assert!(
                responses.get("400").is_some() && responses.get("503").is_some(),
                "{method} {path} does not document 400 and 503"
            );
            if operation["security"].is_array() {
                for status in ["401", "403"] {
                    assert!(responses.get(status).is_some(), "{method} {path} {status}");
                }
            }
            if operation
                .pointer("/requestBody/content/application~1json")
                .is_some()
            {
                checked += 1;
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        responses.get(status).is_some(),
                        "{method} {path} takes JSON but does not document {status}"
                    );
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} JSON-body operations found");
}

#[test]
fn the_audit_export_documents_both_of_its_content_types() {
    let spec = served_spec();
    let content =
        &operation(&spec, "get", "/api/audit/export/{format}")["responses"]["200"]["content"];
    assert!(content.get("application/x-ndjson").is_some(), "{content}");
    assert!(content.get("text/csv").is_some(), "{content}");
}

fn property<'a>(spec: &'a Value, schema: &str, name: &str) -> &'a Value {
    let property = &spec["components"]["schemas"][schema]["properties"][name];
    assert!(
        property.is_object(),
        "{schema}.{name} is not in the document"
    );
    property
}

fn pattern(spec: &Value, schema: &str, name: &str) -> regex::Regex {
    let pattern = property(spec, schema, name)["pattern"]
        .as_str()
        .unwrap_or_else(|| panic!("{schema}.{name} has no pattern"));
    regex::Regex::new(pattern).unwrap()
}

fn strings(values: &Value) -> BTreeSet<String> {
    values
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_schemas_state_the_rules_the_handlers_enforce() {
    let spec = served_spec();
    let permissions: BTreeSet<String> = clinicd_rbac::Permission::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    for schema in ["CreateRoleRequest", "RoleBody"] {
        for field in ["permissions", "delegable"] {
            let values = &property(&spec, schema, field)["items"]["enum"];
            assert_eq!(strings(values), permissions, "{schema}.{field}");
        }
    }
    let kinds = strings(&property(&spec, "BookingRequest", "kind")["enum"]);
    assert!(
        kinds.contains("telehealth") && kinds.len() == 6,
        "{kinds:?}"
    );
    let sexes = strings(&property(&spec, "PatientBody", "sex")["enum"]);
    assert_eq!(sexes.len(), 4, "{sexes:?}");
    assert_eq!(
        property(&spec, "PatientBody", "date_of_birth")["format"],
        "date"
    );
    assert_eq!(
        property(&spec, "NoteRequest", "encounter_date")["format"],
        "date"
    );
    let reason = property(&spec, "BreakGlassRequest", "reason");
    assert_eq!(
        (&reason["minLength"], &reason["maxLength"]),
        (&20.into(), &1000.into())
    );
    let role = pattern(&spec, "CreateRoleRequest", "name");
    assert!(role.is_match("FrontDesk_2") && !role.is_match("2Front") && !role.is_match("a b"));
    let mrn = pattern(&spec, "SearchRequest", "mrn");
    assert!(mrn.is_match("123456782") && !mrn.is_match(" 123456782"));
    // A patch may not clear a required field: null is outside its schema.
    assert_eq!(
        property(&spec, "PatientPatch", "given_name")["type"],
        "string"
    );
    assert_eq!(
        property(&spec, "PatientPatch", "ssn")["type"],
        json!(["string", "null"])
    );
    // Path and query strings are declared free of control characters.
    let after = operation(&spec, "get", "/api/admin/users")["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "after")
        .unwrap();
    let no_controls = regex::Regex::new(after["schema"]["pattern"].as_str().unwrap()).unwrap();
    assert!(no_controls.is_match("alice") && !no_controls.is_match("al\u{1}ice"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    /// The schema is the parser's rule or looser: whatever a parser accepts matches its
    /// pattern, so a client generated from the document never refuses a value the server
    /// takes (and a fuzzer's "invalid" value is refused by the server too).
    #[test]
    fn what_a_parser_accepts_matches_its_pattern(
        value in "[ a-zA-Z0-9@._+\\-\u{feff}\u{a0}]{0,20}|[0-9 +\\-]{0,16}|.{0,12}"
    ) {
        static SPEC: std::sync::LazyLock<Value> = std::sync::LazyLock::new(served_spec);
        let spec = &*SPEC;
        let accepted_by = |accepted: bool, schema: &str, field: &str| {
            if accepted {
                proptest::prop_assert!(
                    pattern(spec, schema, field).is_match(&value),
                    "{schema}.{field}: the parser accepts {value:?}, the pattern refuses it"
                );
            }
            Ok(())
        };
        use clinicd_domain::types::{EmailAddress, Phone, Ssn, member_number};
        use clinicd_identity::users::{Email, Username};
        accepted_by(Username::parse(&value).is_ok(), "CreateUserRequest", "username")?;
        accepted_by(Email::parse(&value).is_ok(), "CreateUserRequest", "email")?;
        accepted_by(EmailAddress::parse("email", &value).is_ok(), "PatientBody", "email")?;
        accepted_by(Ssn::parse("ssn", &value).is_ok(), "PatientBody", "ssn")?;
        accepted_by(Phone::parse("phone", &value).is_ok(), "PatientBody", "phone")?;
        accepted_by(member_number("m", &value).is_ok(), "InsuranceBody", "member_number")?;
    }
}

/// Every link leads to an operation the document has, whose path parameter it fills from a
/// field the creating operation's response schema declares; creating a patient leads on to
/// reading it, and a note to signing it (the stateful fuzzing of scripts/api-fuzz follows these).
#[test]
fn links_lead_from_what_is_created_to_operations_that_exist() {
    let spec = served_spec();
    let mut count = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                let Some(links) = response.get("links").and_then(Value::as_object) else {
                    continue;
                };
                for (name, link) in links {
                    let reference = link["operationRef"].as_str().unwrap();
                    let target = spec
                        .pointer(reference.trim_start_matches('#'))
                        .unwrap_or_else(|| {
                            panic!("{method} {path} {status}: {name} leads nowhere")
                        });
                    for (parameter, expression) in link["parameters"].as_object().unwrap() {
                        let declared = target["parameters"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|p| p["name"] == *parameter && p["in"] == "path");
                        assert!(declared, "{name}: {parameter} is not a path parameter");
                        assert!(
                            expression.as_str().unwrap().starts_with("$response.body#/"),
                            "{name}: {expression}"
                        );
                    }
                    count += 1;
                }
            }
        }
    }
    assert!(count >= 20, "only {count} links");
    let patient = &spec["paths"]["/api/patients"]["post"]["responses"]["201"]["links"];
    assert_eq!(
        patient["getPatientsId"]["operationRef"],
        "#/paths/~1api~1patients~1{id}/get"
    );
    let note = &spec["paths"]["/api/patients/{id}/notes"]["post"]["responses"]["201"]["links"];
    assert_eq!(
        note["postNotesIdSign"]["parameters"]["id"],
        "$response.body#/id"
    );
}

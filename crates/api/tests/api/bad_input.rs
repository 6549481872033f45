//! Bad input never becomes a 500, a panic or a dropped connection: what an outside tester found
//! (extreme dates, NUL bytes, arrays for objects, out-of-range paging, names that spoof, a
//! provider who is no clinician), then a property test over every route of the table.

use std::sync::OnceLock;

use actix_web::test::TestRequest;
use clinicd_api::routes::ROUTES;
use clinicd_test_support::{LogCapture, TestApp, member, roomy_settings, send};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Value, json};
use sqlx::PgPool;

async fn clinic(pool: &PgPool) -> (TestApp, String, String, uuid::Uuid, uuid::Uuid) {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (doctor, _) = member(&app, "dr.grey", &["Provider"]).await;
    let (reader, _) = member(&app, "read.only", &["ReadOnly"]).await;
    let (_, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let created = app
        .call(send(
            "POST",
            "/api/patients",
            &desk,
            Some(json!({"given_name": "Ada", "family_name": "Byron", "date_of_birth": "1980-12-10", "sex": "female"})),
        ))
        .await;
    assert_eq!(created.status, 201);
    let _ = (doctor, reader);
    let patient = uuid::Uuid::parse_str(created.json()["id"].as_str().unwrap()).unwrap();
    (app, desk, admin, patient, reader.0)
}

#[sqlx::test(migrations = "../../migrations")]
async fn extreme_dates_are_refused_with_a_problem_never_a_panic(pool: PgPool) {
    let (app, desk, admin, patient, _) = clinic(&pool).await;
    let doctor: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE username = 'dr.grey'")
        .fetch_one(&pool)
        .await
        .unwrap();
    for query in [
        "date=%2B262142-12-31&utc_offset_minutes=-840",
        "date=-262143-01-01&utc_offset_minutes=840",
        "date=0000-01-01",
        "date=10000-01-01",
        "date=2026-01-01&utc_offset_minutes=2147483647",
    ] {
        app.call(send(
            "GET",
            &format!("/api/appointments?provider_id={doctor}&{query}"),
            &desk,
            None,
        ))
        .await
        .assert_problem(400, "invalid_parameters");
    }
    for (starts, ends) in [
        ("0000-01-01T09:00:00Z", "0000-01-01T09:30:00Z"),
        ("9999-12-31T09:00:00Z", "9999-12-31T09:30:00Z"),
        ("-5000-01-01T09:00:00Z", "-5000-01-01T09:30:00Z"),
        ("+262142-12-31T09:00:00Z", "+262142-12-31T09:30:00Z"),
    ] {
        let response = app
            .call(send(
                "POST",
                "/api/appointments",
                &desk,
                Some(
                    json!({"patient_id": patient, "provider_id": doctor, "starts_at": starts,
                    "ends_at": ends, "kind": "annual"}),
                ),
            ))
            .await;
        assert!(
            response.status == 400 || response.status == 422,
            "{starts}: {}",
            response.status
        );
    }
    for query in [
        "from=-5000-01-01T00:00:00Z",
        "to=%2B262142-12-31T00:00:00Z",
        "limit=-1",
        "limit=0",
        "limit=501",
    ] {
        app.call(send(
            "GET",
            &format!("/api/audit/events?{query}"),
            &admin,
            None,
        ))
        .await
        .assert_problem(400, "invalid_parameters");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn nul_and_control_characters_are_refused_naming_the_field(pool: PgPool) {
    let (app, _, admin, _, _) = clinic(&pool).await;
    let problem = app
        .call(clinicd_test_support::post(
            "/api/auth/login",
            &json!({"username": "adm\u{0}in", "password": "x"}),
        ))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(problem["field"], "username");
    let problem = app
        .call(send(
            "POST",
            "/api/admin/roles",
            &admin,
            Some(json!({"name": "Billing", "description": "claims\u{0}", "permissions": []})),
        ))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(problem["field"], "description");
    let problem = app
        .call(send(
            "POST",
            "/api/admin/roles",
            &admin,
            Some(json!({"name": "Billing", "permissions": ["audit:read\u{1b}[0m"]})),
        ))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(problem["field"], "permissions[0]");
    // In a path or a query string, encoded or not.
    for path in [
        "/api/admin/roles/Bil%00ling",
        "/api/admin/users?after=dr%00",
        "/api/admin/users?after=%0A",
    ] {
        app.call(send(
            if path.contains('?') { "GET" } else { "DELETE" },
            path,
            &admin,
            None,
        ))
        .await
        .assert_problem(400, "invalid_parameters");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM roles WHERE name = 'Billing'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_body_is_an_object_never_an_array_or_a_bare_value(pool: PgPool) {
    let (app, desk, _, _, _) = clinic(&pool).await;
    for body in [
        json!(["Alan", "Turing", "1970-06-23", "male"]),
        json!("Alan Turing"),
        json!(42),
        Value::Null,
    ] {
        app.call(send("POST", "/api/patients", &desk, Some(body.clone())))
            .await
            .assert_problem(400, "invalid_body");
    }
    let patients: i64 = sqlx::query_scalar("SELECT count(*) FROM patients")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(patients, 1, "only the clinic's own patient");
}

#[sqlx::test(migrations = "../../migrations")]
async fn only_a_clinician_is_booked(pool: PgPool) {
    let (app, desk, _, patient, reader) = clinic(&pool).await;
    let problem = app
        .call(send(
            "POST",
            "/api/appointments",
            &desk,
            Some(json!({"patient_id": patient, "provider_id": reader,
                "starts_at": "2027-03-01T09:00:00Z", "ends_at": "2027-03-01T09:30:00Z", "kind": "annual"})),
        ))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(problem["field"], "provider_id");
}

#[sqlx::test(migrations = "../../migrations")]
async fn names_that_would_spoof_another_are_refused(pool: PgPool) {
    let (app, _, admin, _, reader) = clinic(&pool).await;
    for name in [
        "Dr \u{202E}esuoH",
        "Dr\u{2066} House",
        "Dr\u{200B}House",
        "Dr House\u{2028}Chief Admin",
    ] {
        let problem = app
            .call(send(
                "PATCH",
                &format!("/api/admin/users/{reader}"),
                &admin,
                Some(json!({"display_name": name})),
            ))
            .await
            .assert_problem(422, "invalid_field");
        assert_eq!(problem["field"], "display_name", "{name:?}");
    }
}

#[actix_web::test]
async fn a_panic_is_a_500_problem_and_its_message_stays_out_of_the_log() {
    let capture = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = TestApp::new(clinicd_test_support::settings());
    let response = app.get("/test/panic").await;
    response.assert_problem(500, "internal_error");
    assert!(!String::from_utf8_lossy(&response.body).contains("123-45-6789"));
    let logs = capture.contents();
    assert!(logs.contains("panicked"), "{logs}");
    assert!(!logs.contains("123-45-6789"), "{logs}");
}

/// Values an outside tester would try in any field, path segment or query parameter.
fn nasty() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        Just(json!(null)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(501)),
        Just(json!(1e308)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(true)),
        Just(json!("")),
        Just(json!("\u{0}")),
        Just(json!("a\u{0}b")),
        Just(json!("\u{202E}evil")),
        Just(json!("line\u{2028}break")),
        Just(json!("+262142-12-31")),
        Just(json!("-5000-01-01T00:00:00Z")),
        Just(json!("0000-01-01")),
        Just(json!("9999-12-31T23:59:59Z")),
        Just(json!("2026-13-45")),
        Just(json!("00000000-0000-0000-0000-000000000000")),
        Just(json!("not-a-uuid")),
        Just(json!("x".repeat(5000))),
        Just(json!("123-45-6789")),
        Just(json!([])),
        Just(json!({})),
        "[a-zA-Z0-9 _.:@-]{0,24}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
    ]
}

const FIELDS: &[&str] = &[
    "username",
    "password",
    "email",
    "display_name",
    "roles",
    "name",
    "description",
    "permissions",
    "delegable",
    "privileged",
    "given_name",
    "family_name",
    "date_of_birth",
    "sex",
    "ssn",
    "address",
    "phone",
    "insurance_primary",
    "emergency_contact",
    "status",
    "patient_id",
    "provider_id",
    "user_id",
    "starts_at",
    "ends_at",
    "kind",
    "encounter_date",
    "body",
    "reason",
    "code",
    "challenge_token",
    "refresh_token",
    "current_password",
    "new_password",
    "mrn",
    "cursor",
    "limit",
    "trust_device",
    "cookies",
    "remember_me",
];

const PARAMETERS: &[&str] = &[
    "limit",
    "after",
    "cursor",
    "from",
    "to",
    "date",
    "utc_offset_minutes",
    "provider_id",
    "patient_id",
    "pending",
    "actor",
    "outcome",
];

fn body() -> impl Strategy<Value = Value> {
    let leaf = nasty();
    let object = prop::collection::btree_map(prop::sample::select(FIELDS), leaf.clone(), 0..6)
        .prop_map(|fields| {
            Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| ((*k).to_owned(), v))
                    .collect(),
            )
        });
    prop_oneof![
        4 => object.clone(),
        1 => prop::collection::vec(leaf.clone(), 0..4).prop_map(Value::Array),
        1 => leaf,
        1 => prop::collection::btree_map(prop::sample::select(FIELDS), object, 1..3).prop_map(
            |fields| Value::Object(fields.into_iter().map(|(k, v)| ((*k).to_owned(), v)).collect())
        ),
    ]
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn encoded(value: &Value) -> String {
    percent_encoding::utf8_percent_encode(&text_of(value), percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

/// One request to a route of the table, shaped by the strategy's choices.
#[derive(Debug, Clone)]
struct Probe {
    route: usize,
    segments: Vec<Value>,
    query: Vec<(&'static str, Value)>,
    body: Value,
    authenticated: bool,
}

fn probe() -> impl Strategy<Value = Probe> {
    (
        0..ROUTES.len(),
        prop::collection::vec(nasty(), 2),
        prop::collection::vec((prop::sample::select(PARAMETERS), nasty()), 0..4),
        body(),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(route, segments, query, body, authenticated)| Probe {
            route,
            segments,
            query,
            body,
            authenticated,
        })
}

fn request(probe: &Probe, token: &str, patient: uuid::Uuid) -> TestRequest {
    let spec = &ROUTES[probe.route];
    let mut segments = probe.segments.iter();
    let path: Vec<String> = spec
        .path
        .split('/')
        .map(|part| {
            if part.starts_with('{') {
                // Half the time a real patient's id, so deeper code runs too.
                match segments.next() {
                    Some(Value::Null) | None => patient.to_string(),
                    Some(value) => encoded(value),
                }
            } else {
                part.to_owned()
            }
        })
        .collect();
    let query: Vec<String> = probe
        .query
        .iter()
        .map(|(name, value)| format!("{name}={}", encoded(value)))
        .collect();
    let uri = if query.is_empty() {
        path.join("/")
    } else {
        format!("{}?{}", path.join("/"), query.join("&"))
    };
    let request = TestRequest::default()
        .method(spec.method.clone())
        .uri(&uri)
        .insert_header(("Content-Type", "application/json"))
        .set_payload(probe.body.to_string());
    if probe.authenticated {
        clinicd_test_support::bearer(request, token)
    } else {
        request
    }
}

/// Every route of the table, probed with hostile paths, queries and bodies by a user who holds
/// every role: no answer is a 5xx.
#[sqlx::test(migrations = "../../migrations")]
async fn no_input_of_any_shape_gets_a_5xx(pool: PgPool) {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    let (_, token) = member(
        &app,
        "everyone",
        &["Admin", "Provider", "Staff", "PrivacyOfficer"],
    )
    .await;
    let created = app
        .call(send(
            "POST",
            "/api/patients",
            &token,
            Some(json!({"given_name": "Ada", "family_name": "Byron", "date_of_birth": "1980-12-10", "sex": "female"})),
        ))
        .await;
    let patient = uuid::Uuid::parse_str(created.json()["id"].as_str().unwrap()).unwrap();

    static CASES: OnceLock<Vec<Probe>> = OnceLock::new();
    let cases = CASES.get_or_init(|| {
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(
            proptest::test_runner::Config::default(),
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        );
        (0..400)
            .map(|_| probe().new_tree(&mut runner).unwrap().current())
            .collect()
    });
    for case in cases {
        let response = app.call(request(case, &token, patient)).await;
        assert!(
            response.status.as_u16() < 500,
            "{} {} answered {}: {case:?}\n{}",
            ROUTES[case.route].method,
            ROUTES[case.route].path,
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
}

//! The audit layer over HTTP: coverage by construction, one event per request with the right
//! fields, and fail-closed when the trail cannot take an event.

use actix_web::test::TestRequest;
use clinicd_api::routes::ROUTES;

use clinicd_audit::{AuditWriter, WriterSettings};
use clinicd_test_support::{TestApp, settings};
use serde_json::json;
use sqlx::PgPool;

const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, sqlx::FromRow)]
struct Row {
    seq: i64,
    action: String,
    outcome: String,
    actor_user_id: Option<uuid::Uuid>,
    session_id: Option<uuid::Uuid>,
    http_method: Option<String>,
    route: Option<String>,
    status_code: Option<i32>,
    client_ip: Option<String>,
    request_id: Option<String>,
    reason: Option<String>,
    resource_type: Option<String>,
}

async fn rows(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT seq, action, outcome, actor_user_id, session_id, http_method, route, status_code, \
         client_ip, request_id, reason, resource_type FROM audit_events ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn login(password: &str) -> TestRequest {
    clinicd_test_support::post(
        "/api/auth/login",
        &json!({ "username": "dr.audit", "password": password }),
    )
}

#[test]
fn every_api_route_declares_what_it_audits() {
    for route in ROUTES {
        if route.path.starts_with("/api/") {
            assert!(
                route.audit.is_some(),
                "{} {} touches PHI or security state and has no audit declaration",
                route.method,
                route.path
            );
        } else {
            assert!(
                matches!(route.path, "/health" | "/ready"),
                "{} is neither an API route nor a known probe",
                route.path
            );
        }
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn each_request_writes_exactly_one_event_with_its_fields(pool: PgPool) {
    let user = clinicd_test_support::create_user(&pool, "dr.audit", PASSWORD, false).await;
    let app = TestApp::with_pool(settings(), pool.clone());

    let ok = app.call(login(PASSWORD)).await;
    assert_eq!(ok.status, 200);
    let tokens = ok.json();
    let session: uuid::Uuid = tokens["session_id"].as_str().unwrap().parse().unwrap();
    let events = rows(&pool).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let login_event = &events[0];
    assert_eq!(
        (login_event.action.as_str(), login_event.outcome.as_str()),
        ("login", "success")
    );
    assert_eq!(login_event.actor_user_id, Some(user.0));
    assert_eq!(login_event.session_id, Some(session));
    assert_eq!(login_event.http_method.as_deref(), Some("POST"));
    assert_eq!(login_event.route.as_deref(), Some("/api/auth/login"));
    assert_eq!(login_event.status_code, Some(200));
    assert_eq!(login_event.client_ip.as_deref(), Some("192.0.2.60"));
    assert_eq!(
        login_event.request_id.as_deref(),
        ok.header("x-request-id"),
        "the event names the request"
    );

    let me = app
        .call(TestRequest::get().uri("/api/auth/me").insert_header((
            "Authorization",
            format!("Bearer {}", tokens["access_token"].as_str().unwrap()),
        )))
        .await;
    assert_eq!(me.status, 200);
    let failed = app.call(login("not the right password")).await;
    failed.assert_problem(401, "invalid_credentials");
    let revoke = app
        .call(
            TestRequest::delete()
                .uri(&format!("/api/auth/sessions/{}", uuid::Uuid::now_v7()))
                .insert_header((
                    "Authorization",
                    format!("Bearer {}", tokens["access_token"].as_str().unwrap()),
                )),
        )
        .await;
    revoke.assert_problem(404, "not_found");

    let events = rows(&pool).await;
    assert_eq!(events.len(), 4, "one event per request: {events:?}");
    let view = &events[1];
    assert_eq!(
        (view.action.as_str(), view.outcome.as_str()),
        ("view", "success")
    );
    assert_eq!(view.resource_type.as_deref(), Some("user"));
    assert_eq!(
        (view.actor_user_id, view.session_id),
        (Some(user.0), Some(session))
    );
    let refused = &events[2];
    assert_eq!(
        (refused.action.as_str(), refused.outcome.as_str()),
        ("login_failed", "denied")
    );
    assert_eq!(refused.reason.as_deref(), Some("invalid_credentials"));
    assert_eq!(
        refused.actor_user_id, None,
        "nothing taken from what the caller typed"
    );
    let revoke = &events[3];
    assert_eq!(
        revoke.route.as_deref(),
        Some("/api/auth/sessions/{id}"),
        "the template, never the path"
    );
    assert_eq!(
        (revoke.outcome.as_str(), revoke.reason.as_deref()),
        ("failure", Some("not_found"))
    );
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );

    let keyring = clinicd_test_support::keyring(pool.clone());
    let report = clinicd_audit::verify(&pool, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn when_the_trail_cannot_take_the_event_the_response_is_withheld(pool: PgPool) {
    clinicd_test_support::create_user(&pool, "dr.audit", PASSWORD, false).await;
    let healthy = TestApp::with_pool(settings(), pool.clone());
    let token = healthy.call(login(PASSWORD)).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Same database for everything else; the audit writer's store and its keys are gone (a
    // change appends its event in its own transaction, and needs the chain key to do it).
    let broken_audit = AuditWriter::start(
        clinicd_test_support::dead_pool(),
        clinicd_test_support::keyring(clinicd_test_support::dead_pool()),
        WriterSettings::default(),
    );
    let app = TestApp {
        state: clinicd_test_support::compose(
            pool.clone(),
            settings(),
            clinicd_test_support::identity(pool.clone()),
            broken_audit,
            clinicd_test_support::file_store(),
        ),
    };
    let me = app
        .call(
            TestRequest::get()
                .uri("/api/auth/me")
                .insert_header(("Authorization", format!("Bearer {token}"))),
        )
        .await;
    let body = me.assert_problem(503, "service_unavailable");
    let text = String::from_utf8_lossy(&me.body);
    assert!(
        !text.contains("dr.audit") && !text.contains("clinic.example"),
        "{body}"
    );
    clinicd_test_support::assert_security_headers(&me.headers);

    let login = app.call(login(PASSWORD)).await;
    login.assert_problem(503, "service_unavailable");
    assert!(!String::from_utf8_lossy(&login.body).contains("access_token"));
    let set_cookie: Vec<_> = login.headers.get_all("set-cookie").collect();
    assert!(
        set_cookie.is_empty(),
        "no session handed out: {set_cookie:?}"
    );
    assert!(
        app.state
            .metrics
            .render()
            .unwrap()
            .contains("audit_failures_total 2"),
        "counted for the operators"
    );
}

async fn token(app: &TestApp, username: &str) -> String {
    let response = app
        .call(clinicd_test_support::post(
            "/api/auth/login",
            &json!({ "username": username, "password": PASSWORD }),
        ))
        .await;
    assert_eq!(response.status, 200);
    response.json()["access_token"].as_str().unwrap().to_owned()
}

fn verify_request(token: &str) -> TestRequest {
    admin_get("/api/audit/verify", token)
}

/// An administrator and a member of staff, both logged in.
struct Office {
    app: TestApp,
    admin: clinicd_identity::users::UserId,
    admin_token: String,
    staff_token: String,
}

async fn office(pool: &PgPool) -> Office {
    clinicd_test_support::create_user(pool, "dr.audit", PASSWORD, false).await;
    let app = TestApp::with_pool(settings(), pool.clone());
    let (admin, admin_token) = clinicd_test_support::member(&app, "chief.admin", &["Admin"]).await;
    let staff_token = token(&app, "dr.audit").await;
    Office {
        app,
        admin,
        admin_token,
        staff_token,
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn administrators_verify_the_trail_and_others_are_refused(pool: PgPool) {
    let Office {
        app,
        admin: _,
        admin_token,
        staff_token,
    } = office(&pool).await;

    let intact = app.call(verify_request(&admin_token)).await;
    assert_eq!(intact.status, 200);
    let report = intact.json();
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["events_checked"], 1, "the staff login: {report}");

    app.call(verify_request(&staff_token))
        .await
        .assert_problem(403, "permission_denied");
    app.call(TestRequest::get().uri("/api/audit/verify"))
        .await
        .assert_problem(401, "unauthenticated");

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET outcome = 'success', status_code = 200 WHERE seq = 3")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let broken = app.call(verify_request(&admin_token)).await.json();
    assert_eq!(broken["intact"], false, "{broken}");
    assert_eq!(
        broken["first_broken_seq"], 3,
        "the refused verify, made to look allowed"
    );

    let events = rows(&pool).await;
    let refused = events.iter().find(|e| e.seq == 3).unwrap();
    assert_eq!(
        refused.action, "permission_denied",
        "a refused read of the trail is itself audited, as a refusal (its outcome was forged above)"
    );
    assert_eq!(events.last().unwrap().action, "audit_verify");
}

fn admin_get(path: &str, token: &str) -> TestRequest {
    TestRequest::get()
        .uri(path)
        .insert_header(("Authorization", format!("Bearer {token}")))
}

#[sqlx::test(migrations = "../../migrations")]
async fn administrators_page_filter_count_and_account_for_a_patient(pool: PgPool) {
    let Office {
        app,
        admin,
        admin_token,
        staff_token,
    } = office(&pool).await;
    app.call(login("wrong password, twice")).await;
    app.call(login("wrong password, twice")).await;
    // A patient's record read twice (the clinical routes arrive later; written directly here).
    let patient = uuid::Uuid::now_v7();
    for _ in 0..2 {
        let mut event = clinicd_audit::NewEvent::new(
            clinicd_audit::Action::View,
            clinicd_audit::Outcome::Success,
        );
        event.patient_id = Some(patient);
        event.actor_user_id = Some(admin.0);
        event.resource_type = Some("patient".into());
        event.reason = Some("treatment".into());
        app.state.audit.record(event).await.unwrap();
    }

    // Newest first, two at a time, following the cursor.
    let first = app
        .call(admin_get("/api/audit/events?limit=2", &admin_token))
        .await;
    assert_eq!(first.status, 200);
    let first = first.json();
    let seqs: Vec<i64> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![5, 4]);
    let cursor = first["next_cursor"].as_i64().unwrap();
    let second = app
        .call(admin_get(
            &format!("/api/audit/events?limit=2&cursor={cursor}"),
            &admin_token,
        ))
        .await
        .json();
    assert_eq!(second["events"][0]["seq"], 3);

    let failed = app
        .call(admin_get(
            "/api/audit/events?action=login_failed&outcome=denied",
            &admin_token,
        ))
        .await
        .json();
    assert_eq!(failed["events"].as_array().unwrap().len(), 2, "{failed}");
    assert!(failed["next_cursor"].is_null());
    assert!(failed["events"][0].get("hash").is_none());

    let stats = app
        .call(admin_get("/api/audit/stats", &admin_token))
        .await
        .json();
    assert_eq!(
        (stats["logins"].as_i64(), stats["failed_logins"].as_i64()),
        (Some(1), Some(2)),
        "{stats}"
    );
    assert_eq!(stats["views"], 2);

    let accounting = app
        .call(admin_get(
            &format!("/api/audit/patients/{patient}/disclosures"),
            &admin_token,
        ))
        .await;
    assert_eq!(accounting.status, 200);
    let accounting = accounting.json();
    assert_eq!(accounting.as_array().unwrap().len(), 2, "{accounting}");
    assert_eq!(accounting[0]["reason"], "treatment");
    assert_eq!(accounting[0]["actor_user_id"], admin.0.to_string());

    for bad in [
        "/api/audit/events?limit=ten",
        "/api/audit/events?actor=not-a-uuid",
        "/api/audit/events?from=yesterday",
        "/api/audit/events?colour=blue",
        "/api/audit/patients/not-a-uuid/disclosures",
    ] {
        app.call(admin_get(bad, &admin_token))
            .await
            .assert_problem(400, "invalid_parameters");
    }
    for path in [
        "/api/audit/events",
        "/api/audit/stats",
        &format!("/api/audit/patients/{patient}/disclosures"),
    ] {
        app.call(admin_get(path, &staff_token))
            .await
            .assert_problem(403, "permission_denied");
    }

    // Each read of the trail is in the trail, with how many events it returned.
    let reads: Vec<(Option<String>, serde_json::Value, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT route, metadata, patient_id FROM audit_events WHERE action = 'audit_read' AND outcome = 'success' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(reads.len(), 5, "{reads:?}");
    assert_eq!(reads[0].0.as_deref(), Some("/api/audit/events"));
    assert_eq!(reads[0].1["returned"], 2);
    assert_eq!(
        reads[4].2,
        Some(patient),
        "an accounting read names its patient"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_trail_exports_as_ndjson_and_csv(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, admin_token) = clinicd_test_support::member(&app, "chief.admin", &["Admin"]).await;
    let mut sneaky = clinicd_audit::NewEvent::new(
        clinicd_audit::Action::BreakGlass,
        clinicd_audit::Outcome::Success,
    );
    sneaky.reason = Some("=HYPERLINK(\"http://evil\")".into());
    app.state.audit.record(sneaky).await.unwrap();

    let ndjson = app
        .call(admin_get("/api/audit/export/ndjson", &admin_token))
        .await;
    assert_eq!(ndjson.status, 200);
    assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
    assert!(
        ndjson
            .header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(ndjson.body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The export's own event is committed before the first byte, so it is in the export.
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["export", "break_glass"]);

    let csv = app
        .call(admin_get(
            "/api/audit/export/csv?action=break_glass",
            &admin_token,
        ))
        .await;
    assert_eq!(csv.status, 200);
    let text = String::from_utf8(csv.body.to_vec()).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0].starts_with("seq,occurred_at,"));
    assert!(
        rows[1].ends_with("\"'=HYPERLINK(\"\"http://evil\"\")\""),
        "quoted and defused: {}",
        rows[1]
    );

    app.call(admin_get("/api/audit/export/xlsx", &admin_token))
        .await
        .assert_problem(400, "invalid_parameters");
    let exports: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'export' AND route = '/api/audit/export/{format}'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(exports, 3, "each export is audited, the refused one too");
}

#[sqlx::test(migrations = "../../migrations")]
async fn no_value_a_client_sends_reaches_an_audit_row(pool: PgPool) {
    const SSN: &str = "123-45-6789";
    clinicd_test_support::create_user(&pool, "dr.audit", PASSWORD, false).await;
    let app = TestApp::with_pool(settings(), pool.clone());
    let access = token(&app, "dr.audit").await;
    let requests = [
        admin_get(&format!("/api/auth/me?ssn={SSN}"), &access),
        TestRequest::delete()
            .uri(&format!("/api/auth/sessions/{SSN}"))
            .insert_header(("Authorization", format!("Bearer {access}"))),
        clinicd_test_support::post(
            "/api/auth/login",
            &json!({ "username": SSN, "password": SSN }),
        ),
        admin_get(&format!("/api/audit/events?resource_id={SSN}"), &access),
    ];
    for request in requests {
        app.call(request).await;
    }
    let rows: Vec<String> = sqlx::query_scalar("SELECT row_to_json(e)::text FROM audit_events e")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 5, "one login and four requests");
    for row in rows {
        assert!(!row.contains(SSN), "{row}");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn every_declared_route_writes_exactly_one_event_naming_its_template(pool: PgPool) {
    clinicd_test_support::create_user(&pool, "dr.audit", PASSWORD, false).await;
    let app = TestApp::with_pool(settings(), pool.clone());
    let access = token(&app, "dr.audit").await;
    for route in ROUTES.iter().filter(|r| r.audit.is_some()) {
        let path = route
            .path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{format}", "ndjson");
        let before: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(&pool)
            .await
            .unwrap();
        let request = TestRequest::default()
            .method(route.method.clone())
            .uri(&path)
            .peer_addr("192.0.2.61:4000".parse().unwrap())
            .insert_header(("Authorization", format!("Bearer {access}")))
            .insert_header(("Content-Type", "application/json"))
            .set_payload("{}");
        let response = app.call(request).await;
        let events: Vec<(String, String, Option<String>, Option<i32>)> = sqlx::query_as(
            "SELECT action, route, http_method, status_code FROM audit_events WHERE seq > $1 ORDER BY seq",
        )
        .bind(before)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            events.len(),
            1,
            "{} {}: {events:?}",
            route.method,
            route.path
        );
        let (action, template, method, status) = &events[0];
        let declared = route.audit.unwrap().action.as_str();
        assert!(
            action == declared || (declared == "login" && action == "login_failed"),
            "{}: {action} vs {declared}",
            route.path
        );
        assert_eq!(template, route.path);
        assert_eq!(method.as_deref(), Some(route.method.as_str()));
        assert_eq!(*status, Some(i32::from(response.status.as_u16())));
    }
}

#[actix_web::test]
async fn with_postgres_down_every_api_route_answers_503_and_nothing_else() {
    let app = TestApp::new(settings());
    for request in [
        login(PASSWORD),
        TestRequest::get()
            .uri("/api/auth/me")
            .insert_header(("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln")),
        TestRequest::get().uri("/api/audit/events"),
    ] {
        let response = app.call(request).await;
        let problem = response.assert_problem(503, "service_unavailable");
        assert_eq!(
            problem.as_object().unwrap().len(),
            6,
            "the problem fields only: {problem}"
        );
    }
}

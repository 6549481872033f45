//! Scope by construction, held for the whole route table: every route that names a patient, a
//! note, a booking or a file by `{id}` answers 404 to a caller who holds every clinical
//! permission but is not on the patient's care team, and changes nothing, while the same
//! request from the team succeeds. A new route of that shape must be added here (the test
//! fails naming it), so a handler that forgot its `Reachable*` extractor cannot land unseen.
//! The deliberate exceptions are named: the privacy office's export (`ExportablePatient`, its
//! own test below) and care-team administration, which manages the team itself.

use actix_web::http::Method;
use actix_web::test::TestRequest;
use clinicd_api::routes::ROUTES;
use clinicd_test_support::{TestApp, bearer, member, roomy_settings, send};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const BOUNDARY: &str = "scope-boundary";

/// Routes that name a row by `{id}` but are not held to the care-team rule, and why.
const NOT_SCOPED: &[(&str, &str)] = &[
    (
        "/api/patients/{id}/export",
        "the privacy office's export: ExportablePatient",
    ),
    (
        "/api/patients/{id}/consents",
        "the privacy office records the consents its disclosures rely on: ExportablePatient",
    ),
    (
        "/api/patients/{id}/care-team",
        "care-team administration (care_team:manage) manages the team itself",
    ),
    (
        "/api/patients/{id}/care-team/{user_id}",
        "care-team administration",
    ),
    (
        "/api/patients/{id}/break-glass",
        "the emergency grant is how a user outside the team asks for access",
    ),
];

struct Rows {
    patient: String,
    note: String,
    appointment: String,
    file: String,
}

fn upload(patient: &str, token: &str) -> TestRequest {
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"category\"\r\n\r\nlab_result\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n\
         plain text result\r\n--{BOUNDARY}--\r\n"
    );
    bearer(
        TestRequest::post()
            .uri(&format!("/api/patients/{patient}/files"))
            .insert_header((
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            ))
            .set_payload(body),
        token,
    )
}

fn id_of(response: &clinicd_test_support::TestResponse) -> String {
    assert!(
        response.status.is_success(),
        "{}: {:?}",
        response.status,
        response.body
    );
    response.json()["id"].as_str().unwrap().to_owned()
}

fn tomorrow_at(hour: u32) -> (String, String) {
    let start = chrono::Utc::now()
        .date_naive()
        .succ_opt()
        .unwrap()
        .and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc();
    (
        start.to_rfc3339(),
        (start + chrono::Duration::minutes(30)).to_rfc3339(),
    )
}

/// A valid request for `path` (a route template) as `token`, or `None` if the route is unknown
/// here: then the test fails and names it.
fn request(
    method: &Method,
    path: &str,
    rows: &Rows,
    token: &str,
    version: u32,
) -> Option<TestRequest> {
    let (p, n, a, f) = (&rows.patient, &rows.note, &rows.appointment, &rows.file);
    let json_request = |m: &str, uri: String, body: Option<Value>| Some(send(m, &uri, token, body));
    let versioned = |request: Option<TestRequest>| {
        request.map(|r| r.insert_header(("If-Match", format!("\"{version}\""))))
    };
    match (method.as_str(), path) {
        ("GET", "/api/patients/{id}") => json_request("GET", format!("/api/patients/{p}"), None),
        ("GET", "/api/patients/{id}/label") => {
            json_request("GET", format!("/api/patients/{p}/label"), None)
        }
        ("PUT", "/api/patients/{id}/label") => json_request(
            "PUT",
            format!("/api/patients/{p}/label"),
            Some(json!({"confidentiality": "R", "reason": "the patient asked for privacy"})),
        ),
        ("PATCH", "/api/patients/{id}") => versioned(json_request(
            "PATCH",
            format!("/api/patients/{p}"),
            Some(json!({"phone": "+15555550100"})),
        )),
        ("GET", "/api/patients/{id}/notes") => {
            json_request("GET", format!("/api/patients/{p}/notes"), None)
        }
        ("POST", "/api/patients/{id}/notes") => json_request(
            "POST",
            format!("/api/patients/{p}/notes"),
            Some(json!({"encounter_date": "2026-01-15", "body": "Seen again."})),
        ),
        ("GET", "/api/patients/{id}/files") => {
            json_request("GET", format!("/api/patients/{p}/files"), None)
        }
        ("POST", "/api/patients/{id}/files") => Some(upload(p, token)),
        ("GET", "/api/notes/{id}") => json_request("GET", format!("/api/notes/{n}"), None),
        ("GET", "/api/notes/{id}/history") => {
            json_request("GET", format!("/api/notes/{n}/history"), None)
        }
        ("PATCH", "/api/notes/{id}") => versioned(json_request(
            "PATCH",
            format!("/api/notes/{n}"),
            Some(json!({"body": "Seen, and edited."})),
        )),
        ("POST", "/api/notes/{id}/sign") => {
            versioned(json_request("POST", format!("/api/notes/{n}/sign"), None))
        }
        ("PUT", "/api/notes/{id}/label") => json_request(
            "PUT",
            format!("/api/notes/{n}/label"),
            Some(json!({"confidentiality": "R", "reason": "the patient asked for privacy"})),
        ),
        ("POST", "/api/notes/{id}/amendments") => json_request(
            "POST",
            format!("/api/notes/{n}/amendments"),
            Some(json!({"body": "An amendment."})),
        ),
        ("GET", "/api/appointments/{id}") => {
            json_request("GET", format!("/api/appointments/{a}"), None)
        }
        ("PATCH", "/api/appointments/{id}") => versioned(json_request(
            "PATCH",
            format!("/api/appointments/{a}"),
            Some(json!({"kind": "follow_up"})),
        )),
        ("GET", "/api/files/{id}") => json_request("GET", format!("/api/files/{f}"), None),
        ("DELETE", "/api/files/{id}") => json_request("DELETE", format!("/api/files/{f}"), None),
        ("PUT", "/api/files/{id}/label") => json_request(
            "PUT",
            format!("/api/files/{f}/label"),
            Some(json!({"confidentiality": "R", "reason": "the patient asked for privacy"})),
        ),
        _ => None,
    }
}

fn scoped(path: &str) -> bool {
    [
        "/api/patients/{id}",
        "/api/notes/{id}",
        "/api/appointments/{id}",
        "/api/files/{id}",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
        && !NOT_SCOPED.iter().any(|(route, _)| *route == path)
}

#[sqlx::test(migrations = "../../migrations")]
async fn every_scoped_route_answers_404_outside_the_care_team(pool: PgPool) {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (grey, grey_token) = member(&app, "dr.grey", &["Provider"]).await;
    // Every clinical permission there is, and no care team.
    let (_, stranger) = member(&app, "dr.stranger", &["Provider", "Staff"]).await;

    let patient = id_of(
        &app.call(send(
            "POST",
            "/api/patients",
            &desk,
            Some(json!({"given_name": "Pat", "family_name": "Smith", "date_of_birth": "1970-05-06", "sex": "unknown"})),
        ))
        .await,
    );
    let assigned = app
        .call(send(
            "POST",
            &format!("/api/patients/{patient}/care-team"),
            &desk,
            Some(json!({"user_id": grey.0, "reason": "covering this patient's care"})),
        ))
        .await;
    assert_eq!(assigned.status, 201);
    let note = id_of(
        &app.call(send(
            "POST",
            &format!("/api/patients/{patient}/notes"),
            &grey_token,
            Some(json!({"encounter_date": "2026-01-15", "body": "Seen."})),
        ))
        .await,
    );
    let (start, end) = tomorrow_at(9);
    let appointment = id_of(
        &app.call(send(
            "POST",
            "/api/appointments",
            &desk,
            Some(json!({"patient_id": patient, "provider_id": grey.0, "starts_at": start, "ends_at": end, "kind": "annual"})),
        ))
        .await,
    );
    let file = id_of(&app.call(upload(&patient, &desk)).await);
    let rows = Rows {
        patient,
        note,
        appointment,
        file,
    };

    let mut checked = 0;
    for route in ROUTES.iter().filter(|r| scoped(r.path)) {
        let named = format!("{} {}", route.method, route.path);
        let refused = request(&route.method, route.path, &rows, &stranger, 1)
            .unwrap_or_else(|| panic!("{named}: give the scope test a request for this route"));
        let before =
            clinicd_test_support::table_digests(&pool, &["audit_disclosures", "audit_archives"])
                .await;
        app.call(refused).await.assert_problem(404, "not_found");
        assert_eq!(
            clinicd_test_support::table_digests(&pool, &["audit_disclosures", "audit_archives"])
                .await,
            before,
            "{named} changed something"
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} scoped routes found");

    // The same requests from the team succeed (so the 404s above were the rule, not a bad
    // request), in an order the rows allow: the draft is edited, then signed (at its second
    // version), then amended; the file is deleted last.
    let rank = |method: &Method, path: &str| match (method.as_str(), path) {
        ("POST", "/api/notes/{id}/sign") => 1,
        ("POST", "/api/notes/{id}/amendments") => 2,
        ("DELETE", _) => 3,
        _ => 0,
    };
    let mut routes: Vec<_> = ROUTES.iter().filter(|r| scoped(r.path)).collect();
    routes.sort_by_key(|r| rank(&r.method, r.path));
    for route in routes {
        let clinical = route.path.starts_with("/api/notes/") || route.path.ends_with("/notes");
        let token = if clinical { &grey_token } else { &desk };
        let version = if route.path == "/api/notes/{id}/sign" {
            2
        } else {
            1
        };
        let allowed = request(&route.method, route.path, &rows, token, version).unwrap();
        let response = app.call(allowed).await;
        assert!(
            response.status.is_success(),
            "{} {} from the team: {} {:?}",
            route.method,
            route.path,
            response.status,
            response.body
        );
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_export_is_the_one_way_across_care_teams(pool: PgPool) {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let (_, stranger) = member(&app, "dr.stranger", &["Provider"]).await;
    let patient = id_of(
        &app.call(send(
            "POST",
            "/api/patients",
            &desk,
            Some(json!({"given_name": "Pat", "family_name": "Smith", "date_of_birth": "1970-05-06", "sex": "unknown"})),
        ))
        .await,
    );
    let export =
        format!("/api/patients/{patient}/export?recipient=the%20patient&purpose=individual");
    // The officer is on no care team and reads no record, yet exports the whole one.
    app.call(send(
        "GET",
        &format!("/api/patients/{patient}"),
        &officer,
        None,
    ))
    .await
    .assert_problem(403, "permission_denied");
    let exported = app.call(send("GET", &export, &officer, None)).await;
    assert_eq!(exported.status, 200);
    assert_eq!(exported.json()["patient"]["family_name"], "Smith");
    // A clinician outside the team is refused by permission, not let through by the export.
    app.call(send("GET", &export, &stranger, None))
        .await
        .assert_problem(403, "permission_denied");
    // No such patient: 404, and a malformed id: 400.
    app.call(send(
        "GET",
        &format!(
            "/api/patients/{}/export?recipient=x&purpose=individual",
            Uuid::now_v7()
        ),
        &officer,
        None,
    ))
    .await
    .assert_problem(404, "not_found");
    app.call(send(
        "GET",
        "/api/patients/not-a-uuid/export?recipient=x&purpose=individual",
        &officer,
        None,
    ))
    .await
    .assert_problem(400, "invalid_parameters");
}

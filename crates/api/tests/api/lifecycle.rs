//! The data lifecycle through the HTTP layer: an approved erasure leaves a 410, no search hit,
//! no object, no readable audit value, an intact chain and a certificate; a legal hold stops
//! every destructive path (file delete, purge, erasure request and approval, audit archiving);
//! a restore of an older database is brought back into line by the erasure ledger; and every
//! refusal (second person, retention, bad input, roles).

use std::path::Path;
use std::sync::Arc;

use actix_web::test::TestRequest;
use clinicd_files::{Files, LocalStore};
use clinicd_lifecycle::LocalLedger;
use clinicd_test_support::{TestApp, bearer, member, roomy_settings, send};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::search_ids;

const BOUNDARY: &str = "lifecycle-boundary";

/// An app whose files and erasure ledger live under `dir`.
fn lifecycle_app(pool: &PgPool, dir: &Path) -> TestApp {
    let mut settings = roomy_settings();
    settings.rate_limits.upload = settings.rate_limits.api;
    let mut app = TestApp::with_pool(settings.clone(), pool.clone());
    let files = Files::new(
        pool.clone(),
        app.state.identity.keyring.clone(),
        Arc::new(LocalStore::new(dir.join("files"))),
        settings.files,
    );
    app.state.files = files.clone();
    app.state.lifecycle.files = files;
    app.state.lifecycle.ledger = Arc::new(LocalLedger::new(dir.join("ledger")));
    app
}

fn upload_request(patient: &str, token: &str, bytes: &[u8]) -> TestRequest {
    let mut body = Vec::new();
    body.extend(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"category\"\r\n\r\nlab_result\r\n").bytes());
    body.extend(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"lab.txt\"\r\nContent-Type: text/plain\r\n\r\n").bytes());
    body.extend_from_slice(bytes);
    body.extend(format!("\r\n--{BOUNDARY}--\r\n").bytes());
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

async fn upload(app: &TestApp, patient: &str, token: &str) -> String {
    let response = app
        .call(upload_request(
            patient,
            token,
            b"potassium 4.1 mmol/L, lab result text",
        ))
        .await;
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()["id"].as_str().unwrap().to_owned()
}

async fn new_patient(app: &TestApp, token: &str, family: &str) -> String {
    let response = app
        .call(send(
            "POST",
            "/api/patients",
            token,
            Some(
                json!({"given_name": "Ada", "family_name": family, "date_of_birth": "1985-12-10",
                "sex": "female", "ssn": "123-45-6789"}),
            ),
        ))
        .await;
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()["id"].as_str().unwrap().to_owned()
}

/// Objects in a local file store (complete and partial).
fn objects(dir: &Path) -> usize {
    walk(&dir.join("files"))
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

/// The ids a family name + birth date search answers with.
async fn find(app: &TestApp, token: &str, family: &str) -> Vec<String> {
    let criteria = json!({"family_name": family, "date_of_birth": "1985-12-10"});
    search_ids(app, token, &criteria).await
}

async fn request_erasure(app: &TestApp, token: &str, patient: &str, basis: &str) -> (u16, Value) {
    let response = app
        .call(send(
            "POST",
            "/api/lifecycle/erasures",
            token,
            Some(json!({"patient_id": patient, "basis": basis, "reason": "ordered by the court, docket 24-118"})),
        ))
        .await;
    let status = response.status.as_u16();
    (status, response.json())
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_approved_erasure_leaves_nothing_readable_and_a_certificate(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = lifecycle_app(&pool, dir.path());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (_, first) = member(&app, "records.one", &["RecordsManager"]).await;
    let (_, second) = member(&app, "records.two", &["RecordsManager"]).await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let patient = new_patient(&app, &desk, "Lovelace").await;
    let kept = new_patient(&app, &desk, "Lovelace").await;
    let change = app
        .call(
            send(
                "PATCH",
                &format!("/api/patients/{patient}"),
                &desk,
                Some(json!({"phone": "+15551230100"})),
            )
            .insert_header(("If-Match", "\"1\"")),
        )
        .await;
    assert_eq!(
        change.status,
        200,
        "{}",
        String::from_utf8_lossy(&change.body)
    );
    upload(&app, &patient, &desk).await;
    assert_eq!(objects(dir.path()), 1);
    // A signed clinical note, which nothing else may ever delete.
    let (doctor, provider) = member(&app, "dr.grey", &["Provider"]).await;
    let assigned = app
        .call(send(
            "POST",
            &format!("/api/patients/{patient}/care-team"),
            &desk,
            Some(json!({"user_id": doctor.0, "reason": "primary care physician"})),
        ))
        .await;
    assert_eq!(
        assigned.status,
        201,
        "{}",
        String::from_utf8_lossy(&assigned.body)
    );
    let note = app
        .call(send(
            "POST",
            &format!("/api/patients/{patient}/notes"),
            &provider,
            Some(
                json!({"encounter_date": "2026-11-30", "body": "Lovelace: follow-up in two weeks"}),
            ),
        ))
        .await;
    assert_eq!(note.status, 201, "{}", String::from_utf8_lossy(&note.body));
    let note = note.json()["id"].as_str().unwrap().to_owned();
    let signed = app
        .call(
            send("POST", &format!("/api/notes/{note}/sign"), &provider, None)
                .insert_header(("If-Match", "\"1\"")),
        )
        .await;
    assert_eq!(
        signed.status,
        200,
        "{}",
        String::from_utf8_lossy(&signed.body)
    );
    // The change's before/after values are sealed, and readable before the erasure.
    let sealed: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM audit_events WHERE patient_id = $1 AND sealed_values IS NOT NULL ORDER BY seq",
    )
    .bind(Uuid::parse_str(&patient).unwrap())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!sealed.is_empty());
    let values = format!("/api/audit/events/{}/values", sealed[0]);
    assert_eq!(
        app.call(send("GET", &values, &officer, None)).await.status,
        200
    );

    let (status, filed) = request_erasure(&app, &first, &patient, "court_order").await;
    assert_eq!(status, 201, "{filed}");
    assert_eq!(filed["state"], "pending");
    let approve = format!(
        "/api/lifecycle/erasures/{}/approve",
        filed["id"].as_str().unwrap()
    );
    // The requester cannot approve their own request.
    app.call(send("POST", &approve, &first, None))
        .await
        .assert_problem(403, "own_erasure");
    let done = app.call(send("POST", &approve, &second, None)).await;
    assert_eq!(done.status, 200, "{}", String::from_utf8_lossy(&done.body));
    let done = done.json();
    assert_eq!(done["state"], "completed");
    let certificate = &done["certificate"];
    assert_eq!(certificate["patient_id"], patient.as_str());
    assert_eq!(certificate["basis"], "court_order");
    assert!(
        !certificate["destroyed"]["subject_keys"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(certificate["destroyed"]["files"], 1);
    assert_eq!(certificate["destroyed"]["clinical_notes"], 1);
    assert_eq!(certificate["ledger_seq"], 1);
    assert!(!done.to_string().contains("Lovelace"));

    // Gone: 410 on read and change, no search hit, no object, no readable value, no token.
    app.call(send(
        "GET",
        &format!("/api/patients/{patient}"),
        &desk,
        None,
    ))
    .await
    .assert_problem(410, "data_destroyed");
    assert_eq!(find(&app, &desk, "Lovelace").await, vec![kept.clone()]);
    assert_eq!(objects(dir.path()), 0);
    app.call(send("GET", &values, &officer, None))
        .await
        .assert_problem(410, "data_destroyed");
    app.call(send("GET", &format!("/api/notes/{note}"), &provider, None))
        .await
        .assert_problem(404, "not_found");
    let id = Uuid::parse_str(&patient).unwrap();
    let (names, files, live_keys, tombstone): (i64, i64, i64, Vec<u8>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM patient_name_tokens WHERE patient_id = $1), \
                (SELECT count(*) FROM files WHERE patient_id = $1), \
                (SELECT count(*) FROM subject_keys WHERE subject_id = $1 AND wrapped IS NOT NULL), \
                (SELECT given_name FROM patients WHERE id = $1)",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((names, files, live_keys, tombstone.len()), (0, 0, 0, 0));
    // The chain still verifies; the certificate is stored; the ledger has its entry outside.
    let report = app.state.audit.verify().await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{:?}", report.problem);
    let stored = app
        .call(send(
            "GET",
            &format!("/api/lifecycle/erasures/{}", filed["id"].as_str().unwrap()),
            &second,
            None,
        ))
        .await;
    assert_eq!(stored.json()["certificate"], *certificate);
    assert_eq!(walk(&dir.path().join("ledger")), 1);
    // Nothing new is recorded for the patient: a booking or a note answers 410.
    let booking = app
        .call(send(
            "POST",
            "/api/appointments",
            &desk,
            Some(json!({"patient_id": patient, "provider_id": doctor.0,
                "starts_at": (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339(),
                "ends_at": (chrono::Utc::now() + chrono::Duration::days(3) + chrono::Duration::minutes(30)).to_rfc3339(),
                "kind": "follow_up"})),
        ))
        .await;
    assert_eq!(
        booking.status,
        410,
        "{}",
        String::from_utf8_lossy(&booking.body)
    );
    let note = app
        .call(send(
            "POST",
            &format!("/api/patients/{patient}/notes"),
            &provider,
            Some(json!({"encounter_date": "2026-12-01", "body": "late entry"})),
        ))
        .await;
    assert_eq!(note.status, 410, "{}", String::from_utf8_lossy(&note.body));
    // A second request for the erased patient: 410.
    let (status, _) = request_erasure(&app, &first, &patient, "court_order").await;
    assert_eq!(status, 410);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_legal_hold_stops_every_destructive_path_until_released(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = lifecycle_app(&pool, dir.path());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (_, first) = member(&app, "records.one", &["RecordsManager"]).await;
    let (_, second) = member(&app, "records.two", &["RecordsManager"]).await;
    let patient = new_patient(&app, &desk, "Hopper").await;
    let other = new_patient(&app, &desk, "Turing").await;
    let file = upload(&app, &patient, &desk).await;
    let deleted = upload(&app, &patient, &desk).await;
    assert_eq!(
        app.call(send(
            "DELETE",
            &format!("/api/files/{deleted}"),
            &desk,
            None
        ))
        .await
        .status,
        204
    );
    let (status, filed) = request_erasure(&app, &first, &patient, "court_order").await;
    assert_eq!(status, 201);

    let placed = app
        .call(send(
            "POST",
            "/api/lifecycle/holds",
            &first,
            Some(
                json!({"scope": "patients", "patient_ids": [patient], "reason": "litigation hold",
                "case_reference": "CV-2026-0042"}),
            ),
        ))
        .await;
    assert_eq!(
        placed.status,
        201,
        "{}",
        String::from_utf8_lossy(&placed.body)
    );
    let hold = placed.json()["id"].as_str().unwrap().to_owned();

    // File delete: 409 naming the hold.
    let refused = app
        .call(send("DELETE", &format!("/api/files/{file}"), &desk, None))
        .await;
    let problem = refused.assert_problem(409, "legal_hold");
    assert!(problem["detail"].as_str().unwrap().contains(&hold));
    // Purge of the file deleted before the hold: skipped, object kept.
    let later = chrono::Utc::now() + chrono::Duration::days(3650);
    let audit = |_file: Uuid, _patient: Uuid| unreachable!("nothing is purged under a hold");
    assert_eq!(app.state.files.purge(later, &audit).await.unwrap(), 0);
    assert_eq!(objects(dir.path()), 2);
    // Erasure: a new request and the approval of the one filed before are refused.
    let (status, body) = request_erasure(&app, &second, &patient, "court_order").await;
    assert_eq!((status, body["code"].as_str()), (409, Some("legal_hold")));
    let approve = format!(
        "/api/lifecycle/erasures/{}/approve",
        filed["id"].as_str().unwrap()
    );
    app.call(send("POST", &approve, &second, None))
        .await
        .assert_problem(409, "legal_hold");
    // Audit archiving stops while any hold lasts.
    let archives = clinicd_audit::retention::LocalArchives::new(dir.path().join("archive"));
    let archived = clinicd_audit::retention::archive_expired(
        &pool,
        &app.state.identity.keyring,
        &app.state.audit,
        &archives,
        7,
        later,
    )
    .await;
    assert!(matches!(archived, Err(clinicd_audit::AuditError::Held(h)) if h.to_string() == hold));
    // The other patient is not held.
    assert_eq!(
        app.call(send("GET", &format!("/api/patients/{other}"), &desk, None))
            .await
            .status,
        200
    );

    // A hold on everything holds the other patient too.
    let all = app
        .call(send(
            "POST",
            "/api/lifecycle/holds",
            &second,
            Some(json!({"scope": "all", "reason": "regulator's inquiry", "case_reference": "OCR-77"})),
        ))
        .await;
    assert_eq!(all.status, 201);
    let all = all.json()["id"].as_str().unwrap().to_owned();
    let (status, _) = request_erasure(&app, &first, &other, "court_order").await;
    assert_eq!(status, 409);

    // Released (both): the destructive paths work again.
    for id in [&hold, &all] {
        let released = app
            .call(send(
                "POST",
                &format!("/api/lifecycle/holds/{id}/release"),
                &first,
                Some(json!({"reason": "case settled"})),
            ))
            .await;
        assert_eq!(released.status, 200);
        assert!(released.json()["released_at"].is_string());
    }
    app.call(send(
        "POST",
        &format!("/api/lifecycle/holds/{hold}/release"),
        &first,
        Some(json!({"reason": "again"})),
    ))
    .await
    .assert_problem(409, "conflict");
    let listed = app
        .call(send("GET", "/api/lifecycle/holds", &first, None))
        .await;
    assert_eq!(listed.json().as_array().unwrap().len(), 0);
    assert_eq!(
        app.call(send("DELETE", &format!("/api/files/{file}"), &desk, None))
            .await
            .status,
        204
    );
    assert_eq!(
        app.call(send("POST", &approve, &second, None)).await.status,
        200
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn refusals_name_their_reason(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = lifecycle_app(&pool, dir.path());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (_, provider) = member(&app, "dr.who", &["Provider"]).await;
    let (_, first) = member(&app, "records.one", &["RecordsManager"]).await;
    let (_, second) = member(&app, "records.two", &["RecordsManager"]).await;
    let patient = new_patient(&app, &desk, "Noether").await;

    // Retention keeps a new record from a patient's own request and from "retention expired".
    for basis in ["patient_request", "retention_expired"] {
        let (status, body) = request_erasure(&app, &first, &patient, basis).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("retention_applies")),
            "{basis}"
        );
        assert!(!body.to_string().contains("Noether"));
    }
    // Bad input.
    for (body, field) in [
        (
            json!({"patient_id": patient, "basis": "because", "reason": "x"}),
            "basis",
        ),
        (
            json!({"patient_id": patient, "basis": "court_order", "reason": "   "}),
            "reason",
        ),
    ] {
        let response = app
            .call(send("POST", "/api/lifecycle/erasures", &first, Some(body)))
            .await;
        let problem = response.assert_problem(422, "invalid_field");
        assert_eq!(problem["field"], field);
    }
    let (status, _) =
        request_erasure(&app, &first, &Uuid::now_v7().to_string(), "court_order").await;
    assert_eq!(status, 404);
    for (body, field) in [
        (
            json!({"scope": "some", "reason": "r", "case_reference": "c"}),
            "scope",
        ),
        (
            json!({"scope": "patients", "reason": "r", "case_reference": "c"}),
            "patient_ids",
        ),
        (
            json!({"scope": "all", "patient_ids": [patient], "reason": "r", "case_reference": "c"}),
            "patient_ids",
        ),
        (
            json!({"scope": "patients", "patient_ids": [Uuid::now_v7()], "reason": "r", "case_reference": "c"}),
            "patient_ids",
        ),
        (
            json!({"scope": "patients", "patient_ids": [patient], "reason": "", "case_reference": "c"}),
            "reason",
        ),
        (
            json!({"scope": "patients", "patient_ids": [patient], "reason": "r", "case_reference": "c".repeat(101)}),
            "case_reference",
        ),
    ] {
        let response = app
            .call(send(
                "POST",
                "/api/lifecycle/holds",
                &first,
                Some(body.clone()),
            ))
            .await;
        let problem = response.assert_problem(422, "invalid_field");
        assert_eq!(problem["field"], field, "{body}");
    }
    app.call(send(
        "POST",
        "/api/lifecycle/holds",
        &first,
        Some(json!({"scope": "all"})),
    ))
    .await
    .assert_problem(400, "invalid_body");
    app.call(send(
        "POST",
        &format!("/api/lifecycle/holds/{}/release", Uuid::now_v7()),
        &first,
        Some(json!({"reason": "done"})),
    ))
    .await
    .assert_problem(404, "not_found");

    // Reject, then approval is refused as decided.
    let (_, filed) = request_erasure(&app, &first, &patient, "created_in_error").await;
    let id = filed["id"].as_str().unwrap();
    let rejected = app
        .call(send(
            "POST",
            &format!("/api/lifecycle/erasures/{id}/reject"),
            &second,
            Some(json!({"reason": "not a duplicate"})),
        ))
        .await;
    assert_eq!(rejected.json()["state"], "rejected");
    app.call(send(
        "POST",
        &format!("/api/lifecycle/erasures/{id}/approve"),
        &second,
        None,
    ))
    .await
    .assert_problem(409, "conflict");

    // Roles without the lifecycle permissions are refused on every route.
    let erasure = format!("/api/lifecycle/erasures/{id}");
    for token in [&desk, &provider] {
        for (method, path) in [
            ("GET", "/api/lifecycle/holds"),
            ("POST", "/api/lifecycle/holds"),
            ("GET", "/api/lifecycle/erasures"),
            ("POST", "/api/lifecycle/erasures"),
            ("GET", erasure.as_str()),
            ("POST", &format!("{erasure}/approve")),
            ("POST", &format!("{erasure}/reject")),
        ] {
            app.call(send(method, path, token, Some(json!({}))))
                .await
                .assert_problem(403, "permission_denied");
        }
    }
}

/// A backup taken before an erasure, restored: the ledger outside the database erases the
/// patient again before anything is served.
#[sqlx::test(migrations = "../../migrations")]
async fn a_restore_never_brings_an_erased_patient_back(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let url = std::env::var("DATABASE_URL").unwrap();
    let server = url.rsplit_once('/').unwrap().0.to_owned();
    let (patient, desk) = {
        let app = lifecycle_app(&pool, dir.path());
        let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
        member(&app, "records.one", &["RecordsManager"]).await;
        member(&app, "records.two", &["RecordsManager"]).await;
        (new_patient(&app, &desk, "Franklin").await, desk)
    };
    // The "backup": a copy of the database as it is now.
    pool.close().await;
    let admin = PgPool::connect(&url).await.unwrap();
    // Short: Postgres cuts names at 63 bytes, and the test database's is near that already.
    let backup = format!("restored_{}", Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{backup}\" TEMPLATE \"{name}\""
    )))
    .execute(&admin)
    .await
    .unwrap();

    // The erasure, on the live database.
    let live = PgPool::connect(&format!("{server}/{name}")).await.unwrap();
    let app = lifecycle_app(&live, dir.path());
    let token = |user: &str| {
        let app = app.clone();
        let user = user.to_owned();
        async move {
            let id: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
                .bind(&user)
                .fetch_one(&app.state.db)
                .await
                .unwrap();
            clinicd_test_support::session_token(&app, clinicd_identity::users::UserId(id)).await
        }
    };
    let (first, second) = (token("records.one").await, token("records.two").await);
    let (_, filed) = request_erasure(&app, &first, &patient, "court_order").await;
    let approve = format!(
        "/api/lifecycle/erasures/{}/approve",
        filed["id"].as_str().unwrap()
    );
    assert_eq!(
        app.call(send("POST", &approve, &second, None)).await.status,
        200
    );
    live.close().await;

    // The "restore": the copy, with the same ledger outside. It still holds the patient...
    let restored = PgPool::connect(&format!("{server}/{backup}"))
        .await
        .unwrap();
    let app = lifecycle_app(&restored, dir.path());
    let read = format!("/api/patients/{patient}");
    assert_eq!(app.call(send("GET", &read, &desk, None)).await.status, 200);
    // ...until the replay that runs before the server reports ready.
    let replay = clinicd_lifecycle::ledger::replay(&app.state.lifecycle)
        .await
        .unwrap();
    assert_eq!(
        replay.erased_again,
        vec![Uuid::parse_str(&patient).unwrap()]
    );
    app.call(send("GET", &read, &desk, None))
        .await
        .assert_problem(410, "data_destroyed");
    assert!(find(&app, &desk, "Franklin").await.is_empty());
    let report = app.state.audit.verify().await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{:?}", report.problem);
    // A second replay finds nothing to do.
    let again = clinicd_lifecycle::ledger::replay(&app.state.lifecycle)
        .await
        .unwrap();
    assert!(again.erased_again.is_empty());
    assert_eq!(again.recorded, 0);
    restored.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{backup}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

/// The retention job: with the policy approving by itself, what is past retention and not held
/// is erased (and the job's own events are in the trail); without, requests wait for a person.
#[sqlx::test(migrations = "../../migrations")]
async fn the_retention_job_erases_only_what_retention_and_holds_allow(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let mut app = lifecycle_app(&pool, dir.path());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (_, records) = member(&app, "records.one", &["RecordsManager"]).await;
    let old = new_patient(&app, &desk, "Aged").await;
    let held = new_patient(&app, &desk, "Kept").await;
    let recent = new_patient(&app, &desk, "Fresh").await;
    sqlx::query("UPDATE patients SET created_at = now() - interval '9 years' WHERE id = ANY($1)")
        .bind(vec![
            Uuid::parse_str(&old).unwrap(),
            Uuid::parse_str(&held).unwrap(),
        ])
        .execute(&pool)
        .await
        .unwrap();
    let placed = app
        .call(send(
            "POST",
            "/api/lifecycle/holds",
            &records,
            Some(
                json!({"scope": "patients", "patient_ids": [held], "reason": "audit by the payer",
                "case_reference": "PAY-3"}),
            ),
        ))
        .await;
    assert_eq!(placed.status, 201);

    // Requests only, by default.
    let now = chrono::Utc::now();
    let run = clinicd_lifecycle::retention::run(&app.state.lifecycle, now)
        .await
        .unwrap();
    assert_eq!(
        (run.due, run.held, run.requests_filed, run.erased),
        (2, 1, 1, 0)
    );
    let pending = app
        .call(send(
            "GET",
            "/api/lifecycle/erasures?pending=true",
            &records,
            None,
        ))
        .await
        .json();
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["patient_id"], old.as_str());
    assert_eq!(pending[0]["basis"], "retention_expired");
    assert!(pending[0]["requested_by"].is_null());

    // With the policy approving: the pending request is carried out; the held one stays.
    app.state.lifecycle.policy.auto_erase = true;
    let run = clinicd_lifecycle::retention::run(&app.state.lifecycle, now)
        .await
        .unwrap();
    assert_eq!(
        (run.due, run.held, run.requests_filed, run.erased),
        (2, 1, 0, 1)
    );
    for (patient, status) in [(&old, 410), (&held, 200), (&recent, 200)] {
        let response = app
            .call(send(
                "GET",
                &format!("/api/patients/{patient}"),
                &desk,
                None,
            ))
            .await;
        assert_eq!(response.status, status, "{patient}");
    }
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action IN ('erasure_request', 'erasure') \
         AND user_agent LIKE '%lifecycle_retention'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(events, 2);
    let report = app.state.audit.verify().await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{:?}", report.problem);
}

/// Export controls: distinct patients per user per day, by role, one count for every instance;
/// over it, 429 with Retry-After and a high alert; the same patient again costs nothing.
#[sqlx::test(migrations = "../../migrations")]
async fn a_daily_export_limit_holds_across_instances_and_raises_an_alert(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let limited = |app: &mut TestApp| {
        let mut settings = clinicd_test_support::roomy_secops();
        settings.export.default = 1_000_000;
        settings.export.by_role.insert("Staff".into(), 2);
        app.state.secops =
            clinicd_secops::SecOps::new(pool.clone(), app.state.identity.keyring.clone(), settings);
    };
    let mut here = lifecycle_app(&pool, dir.path());
    limited(&mut here);
    let mut there = lifecycle_app(&pool, dir.path());
    limited(&mut there);
    let (desk_id, desk) = member(&here, "front.desk", &["Staff"]).await;
    let mut files = Vec::new();
    for family in ["One", "Two", "Three"] {
        let patient = new_patient(&here, &desk, family).await;
        files.push(upload(&here, &patient, &desk).await);
    }
    let download = |file: &str| send("GET", &format!("/api/files/{file}"), &desk, None);
    // Each copy carries who took it, when, a forensic id (in its audit event too) and a notice.
    let first = here.call(download(&files[0])).await;
    assert_eq!(first.status, 200);
    let header = |name: &str| {
        first
            .headers
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("clinicd-downloaded-by"), "front.desk");
    assert_eq!(header("clinicd-notice"), "confidential: contains PHI");
    assert!(chrono::DateTime::parse_from_rfc3339(&header("clinicd-downloaded-at")).is_ok());
    let stamped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'download' AND metadata->>'download_id' = $1",
    )
    .bind(header("clinicd-download-id"))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stamped, 1);
    assert_eq!(there.call(download(&files[0])).await.status, 200);
    assert_eq!(there.call(download(&files[1])).await.status, 200);
    // The third patient, on either instance: refused.
    for app in [&here, &there] {
        let refused = app.call(download(&files[2])).await;
        let retry: u64 = refused
            .headers
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=86_400).contains(&retry));
        refused.assert_problem(429, "export_limit");
    }
    // Patients already counted today stay open.
    assert_eq!(here.call(download(&files[1])).await.status, 200);
    let (alerts, subject): (i64, Option<Uuid>) = sqlx::query_as(
        "SELECT count(*), min(subject_user::text)::uuid FROM security_alerts WHERE rule = 'export_limit'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((alerts, subject), (1, Some(desk_id.0)));
    let refused_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE reason = 'export_limit' AND actor_user_id = $1",
    )
    .bind(desk_id.0)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(refused_events, 2);
}

/// Malformed ids, queries and bodies on the lifecycle routes: 400/415 problems, never a 500.
#[sqlx::test(migrations = "../../migrations")]
async fn malformed_requests_get_clear_problems(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = lifecycle_app(&pool, dir.path());
    let (_, records) = member(&app, "records.one", &["RecordsManager"]).await;
    for (method, path, body, status, code) in [
        (
            "GET",
            "/api/lifecycle/holds?active=perhaps",
            None,
            400,
            "invalid_parameters",
        ),
        (
            "GET",
            "/api/lifecycle/holds?colour=red",
            None,
            400,
            "invalid_parameters",
        ),
        (
            "GET",
            "/api/lifecycle/erasures?pending=2",
            None,
            400,
            "invalid_parameters",
        ),
        (
            "GET",
            "/api/lifecycle/erasures/not-a-uuid",
            None,
            400,
            "invalid_parameters",
        ),
        (
            "POST",
            "/api/lifecycle/erasures/not-a-uuid/approve",
            None,
            400,
            "invalid_parameters",
        ),
        (
            "POST",
            "/api/lifecycle/holds/not-a-uuid/release",
            Some(json!({"reason": "x"})),
            400,
            "invalid_parameters",
        ),
        (
            "POST",
            "/api/lifecycle/erasures",
            Some(json!({"patient_id": "nope", "basis": "court_order", "reason": "x"})),
            400,
            "invalid_body",
        ),
        (
            "POST",
            "/api/lifecycle/erasures",
            Some(
                json!({"patient_id": Uuid::now_v7(), "basis": "court_order", "reason": "x", "extra": 1}),
            ),
            400,
            "unknown_field",
        ),
        (
            "POST",
            "/api/lifecycle/holds",
            Some(
                json!({"scope": "all", "reason": "r", "case_reference": "c", "patient_ids": "all"}),
            ),
            400,
            "invalid_body",
        ),
        (
            "POST",
            "/api/lifecycle/holds",
            Some(json!([])),
            400,
            "invalid_body",
        ),
    ] {
        let response = app.call(send(method, path, &records, body)).await;
        let problem = response.assert_problem(status, code);
        assert!(!problem.to_string().contains("nope"), "{method} {path}");
    }
    let not_json = app
        .call(clinicd_test_support::bearer(
            TestRequest::post()
                .uri("/api/lifecycle/holds")
                .insert_header(("Content-Type", "text/plain"))
                .set_payload("scope=all"),
            &records,
        ))
        .await;
    not_json.assert_problem(415, "unsupported_media_type");
    let unknown = app
        .call(send(
            "GET",
            &format!("/api/lifecycle/erasures/{}", Uuid::now_v7()),
            &records,
            None,
        ))
        .await;
    unknown.assert_problem(404, "not_found");
}

/// The ledger outside the database is tamper-evident: an entry changed, or one taken out of the
/// middle, and the replay that a server runs before serving refuses (fail closed).
#[sqlx::test(migrations = "../../migrations")]
async fn a_tampered_or_cut_ledger_is_refused(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = lifecycle_app(&pool, dir.path());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (_, first) = member(&app, "records.one", &["RecordsManager"]).await;
    let (_, second) = member(&app, "records.two", &["RecordsManager"]).await;
    for family in ["Alpha", "Beta"] {
        let patient = new_patient(&app, &desk, family).await;
        let (_, filed) = request_erasure(&app, &first, &patient, "court_order").await;
        let approve = format!(
            "/api/lifecycle/erasures/{}/approve",
            filed["id"].as_str().unwrap()
        );
        assert_eq!(
            app.call(send("POST", &approve, &second, None)).await.status,
            200
        );
    }
    let replay = || clinicd_lifecycle::ledger::replay(&app.state.lifecycle);
    assert_eq!(replay().await.unwrap().entries, 2);
    let entry = dir
        .path()
        .join("ledger")
        .join(format!("erasure-{:020}.json", 1));
    let original = std::fs::read(&entry).unwrap();

    // Another patient's id in the first entry: its hash no longer matches.
    let mut changed: Value = serde_json::from_slice(&original).unwrap();
    changed["patient_id"] = json!(Uuid::now_v7());
    std::fs::write(&entry, serde_json::to_vec(&changed).unwrap()).unwrap();
    assert!(matches!(
        replay().await,
        Err(clinicd_lifecycle::LifecycleError::Ledger(_))
    ));
    // A new hash computed for it still needs the audit key's MAC.
    changed["hash"] = json!("0".repeat(64));
    std::fs::write(&entry, serde_json::to_vec(&changed).unwrap()).unwrap();
    assert!(matches!(
        replay().await,
        Err(clinicd_lifecycle::LifecycleError::Ledger(_))
    ));
    // The first entry taken out: the second no longer starts the chain.
    std::fs::remove_file(&entry).unwrap();
    assert!(matches!(
        replay().await,
        Err(clinicd_lifecycle::LifecycleError::Ledger(_))
    ));
    // Put back as it was, it verifies again.
    std::fs::write(&entry, &original).unwrap();
    assert_eq!(replay().await.unwrap().entries, 2);
}

/// If the export count cannot be kept, the download is refused (503), not let through.
#[sqlx::test(migrations = "../../migrations")]
async fn an_export_count_that_cannot_be_kept_refuses_the_download(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = lifecycle_app(&pool, dir.path());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let patient = new_patient(&app, &desk, "Counted").await;
    let file = upload(&app, &patient, &desk).await;
    sqlx::query("ALTER TABLE export_usage RENAME TO export_usage_gone")
        .execute(&pool)
        .await
        .unwrap();
    let refused = app
        .call(send("GET", &format!("/api/files/{file}"), &desk, None))
        .await;
    refused.assert_problem(503, "service_unavailable");
    assert!(!String::from_utf8_lossy(&refused.body).contains("potassium"));
}

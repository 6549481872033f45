//! Patients over HTTP, as a front desk and a provider use them: register, find again, change
//! with If-Match, identifiers masked by permission, nothing outside the care team, every
//! read audited, and no identifier in clear in the table.

use clinicd_test_support::{TestApp, member, roomy_settings as settings, send, unassigned_patient};

use crate::search_ids;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

fn jane() -> Value {
    json!({
        "given_name": "Zoë Anne",
        "family_name": "O'Brien-Núñez",
        "date_of_birth": "1984-03-09",
        "sex": "female",
        "ssn": "123-45-6789",
        "address": {"line1": "1 Main St", "city": "Springfield", "region": "IL", "postal_code": "62701", "country": "us"},
        "phone": "+15551234567",
        "email": "zoe@example.org",
        "insurance_primary": {"payer": "Acme Health", "member_number": "XKQ123456789"},
        "emergency_contact": {"name": "Sam O'Brien", "relationship": "spouse", "phone": "+15557654321"}
    })
}

async fn register(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app
        .call(send("POST", "/api/patients", token, Some(body)))
        .await;
    assert_eq!(
        response.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.header("ETag"), Some("\"1\""));
    response.json()
}

async fn assign(app: &TestApp, desk: &str, patient: &str, user: Uuid) {
    let response = app
        .call(send(
            "POST",
            &format!("/api/patients/{patient}/care-team"),
            desk,
            Some(json!({"user_id": user, "reason": "covering this patient's care"})),
        ))
        .await;
    assert!(response.status == 201 || response.status == 200);
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_front_desk_registers_a_patient_and_the_provider_sees_identifiers_masked(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (doctor, doctor_token) = member(&app, "dr.grey", &["Provider"]).await;

    let created = register(&app, &desk, jane()).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["ssn"], "123-45-6789", "staff see identifiers");
    assert_eq!(
        created["insurance_primary"]["member_number"],
        "XKQ123456789"
    );
    assert_eq!(created["address"]["country"], "US");
    assert_eq!(created["status"], "active");
    let mrn = created["mrn"].as_str().unwrap();
    assert!(clinicd_domain::patient::mrn_is_well_formed(mrn));

    // Outside the care team the provider gets what a missing patient gets.
    let path = format!("/api/patients/{id}");
    let outside = app.call(send("GET", &path, &doctor_token, None)).await;
    let missing = app
        .call(send(
            "GET",
            &format!("/api/patients/{}", Uuid::now_v7()),
            &doctor_token,
            None,
        ))
        .await;
    assert_eq!(
        (outside.status.as_u16(), missing.status.as_u16()),
        (404, 404)
    );
    assert_eq!(outside.json()["code"], missing.json()["code"]);
    assert_eq!(outside.json()["detail"], missing.json()["detail"]);

    assign(&app, &desk, &id, doctor.0).await;
    let seen = app.call(send("GET", &path, &doctor_token, None)).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("ETag"), Some("\"1\""));
    let seen = seen.json();
    assert_eq!(seen["ssn"], "***-**-6789");
    assert_eq!(seen["insurance_primary"]["member_number"], "****6789");
    assert_eq!(seen["given_name"], "Zoë Anne");
    assert_eq!(seen["date_of_birth"], "1984-03-09");

    // Each read is audited with the patient, how it was reached and whether identifiers showed.
    let (patient_id, metadata): (Option<Uuid>, Value) = sqlx::query_as(
        "SELECT patient_id, metadata FROM audit_events WHERE action = 'view' AND resource_type = 'patient' \
         AND outcome = 'success' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(patient_id.map(|p| p.to_string()), Some(id.clone()));
    assert_eq!(metadata["access"], "care_team");
    assert_eq!(metadata["identifiers"], "masked");
}

#[sqlx::test(migrations = "../../migrations")]
async fn each_invalid_field_is_refused_by_name_and_nothing_is_written(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("ssn", json!("000-12-3456"), "ssn"),
        ("ssn", json!("666-12-3456"), "ssn"),
        ("ssn", json!("912-12-3456"), "ssn"),
        ("ssn", json!("123-00-4567"), "ssn"),
        ("ssn", json!("123-45-0000"), "ssn"),
        ("ssn", json!("12345"), "ssn"),
        ("date_of_birth", json!(tomorrow), "date_of_birth"),
        ("date_of_birth", json!("1850-01-01"), "date_of_birth"),
        ("date_of_birth", json!("03/09/1984"), "date_of_birth"),
        ("phone", json!("555-1234"), "phone"),
        ("email", json!("zoe@"), "email"),
        ("given_name", json!("R2-D2"), "given_name"),
        ("family_name", json!(""), "family_name"),
        ("family_name", json!("x".repeat(101)), "family_name"),
        ("sex", json!("f"), "sex"),
        ("status", json!("gone"), "status"),
        (
            "address",
            json!({"line1": "1 Main", "city": "X", "region": "IL", "postal_code": "1", "country": "USA"}),
            "address.country",
        ),
        (
            "insurance_primary",
            json!({"payer": "Acme", "member_number": "has spaces"}),
            "insurance_primary.member_number",
        ),
        (
            "emergency_contact",
            json!({"name": "Sam", "relationship": "spouse", "phone": "12"}),
            "emergency_contact.phone",
        ),
    ];
    for (field, value, named) in cases {
        let mut body = jane();
        body[field] = value;
        let problem = app
            .call(send("POST", "/api/patients", &desk, Some(body)))
            .await
            .assert_problem(422, "invalid_field");
        assert_eq!(problem["field"], named, "{field}");
        assert!(
            !problem.to_string().contains("6789") && !problem.to_string().contains("Brien"),
            "a problem never echoes a value: {problem}"
        );
    }
    let mut body = jane();
    body["religion"] = json!("none");
    app.call(send("POST", "/api/patients", &desk, Some(body)))
        .await
        .assert_problem(400, "unknown_field");
    let mut body = jane();
    body.as_object_mut().unwrap().remove("family_name");
    app.call(send("POST", "/api/patients", &desk, Some(body)))
        .await
        .assert_problem(400, "invalid_body");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM patients")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[sqlx::test(migrations = "../../migrations")]
async fn patients_are_found_by_mrn_ssn_family_name_and_birth_date_and_name_words(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (doctor, doctor_token) = member(&app, "dr.grey", &["Provider"]).await;
    let zoe = register(&app, &desk, jane()).await;
    let mut twin = jane();
    twin["given_name"] = json!("Zoey");
    twin["ssn"] = json!("123-45-6780");
    twin["date_of_birth"] = json!("1984-03-10");
    let other = register(&app, &desk, twin).await;
    // Someone else's patient with the same name and birth date: never found by the front desk.
    let hidden = unassigned_patient(
        &app,
        ("O'Brien-Núñez", "Zoë"),
        "1984-03-09",
        Some("123-45-6789"),
    )
    .await;

    let find = |body: Value| send("POST", "/api/patients/search", &desk, Some(body));
    let ids = |page: &Value| -> Vec<String> {
        page["patients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let zoe_id = zoe["id"].as_str().unwrap().to_owned();
    let other_id = other["id"].as_str().unwrap().to_owned();

    let by_mrn = app.call(find(json!({"mrn": zoe["mrn"]}))).await.json();
    assert_eq!(ids(&by_mrn), vec![zoe_id.clone()]);
    let by_ssn = app.call(find(json!({"ssn": "123456789"}))).await.json();
    assert_eq!(ids(&by_ssn), vec![zoe_id.clone()]);
    // Case and accents do not matter.
    let by_birth = app
        .call(find(
            json!({"family_name": "o'brien-nunez", "date_of_birth": "1984-03-09"}),
        ))
        .await
        .json();
    assert_eq!(ids(&by_birth), vec![zoe_id.clone()]);
    let by_words = app.call(find(json!({"name": "NUNEZ zoe"}))).await.json();
    assert_eq!(ids(&by_words), vec![zoe_id.clone()]);
    let by_surname = app.call(find(json!({"name": "obrien"}))).await.json();
    assert_eq!(
        ids(&by_surname).len(),
        0,
        "words match whole tokens: o'brien is one"
    );
    let by_family = app.call(find(json!({"name": "núñez"}))).await.json();
    let mut both = vec![zoe_id.clone(), other_id.clone()];
    both.sort();
    assert_eq!(ids(&by_family), both);
    assert!(!ids(&by_family).contains(&hidden.to_string()));

    // Paging by cursor.
    let first = app
        .call(find(json!({"name": "nunez", "limit": 1})))
        .await
        .json();
    assert_eq!(ids(&first).len(), 1);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .call(find(json!({"name": "nunez", "limit": 1, "cursor": cursor})))
        .await
        .json();
    assert_eq!(ids(&second).len(), 1);
    assert_ne!(ids(&first), ids(&second));

    // A provider: SSN search needs the identifiers permission; others see only their team.
    app.call(send(
        "POST",
        "/api/patients/search",
        &doctor_token,
        Some(json!({"ssn": "123-45-6789"})),
    ))
    .await
    .assert_problem(403, "permission_denied");
    let none = app
        .call(send(
            "POST",
            "/api/patients/search",
            &doctor_token,
            Some(json!({"name": "zoe"})),
        ))
        .await
        .json();
    assert_eq!(ids(&none).len(), 0);
    assign(&app, &desk, &zoe_id, doctor.0).await;
    let mine = app
        .call(send(
            "POST",
            "/api/patients/search",
            &doctor_token,
            Some(json!({})),
        ))
        .await
        .json();
    assert_eq!(ids(&mine), vec![zoe_id.clone()]);
    assert_eq!(mine["patients"][0]["ssn"], "***-**-6789");

    // Bad criteria.
    for (body, field) in [
        (json!({"mrn": "123456789"}), "mrn"),
        (json!({"ssn": "000-00-0000"}), "ssn"),
        (json!({"family_name": "Smith"}), "date_of_birth"),
        (json!({"date_of_birth": "1984-03-09"}), "family_name"),
        (json!({"mrn": zoe["mrn"], "name": "zoe"}), "query"),
        (json!({"name": "a b c d"}), "name"),
        (json!({"limit": 0}), "limit"),
    ] {
        let problem = app
            .call(find(body))
            .await
            .assert_problem(422, "invalid_field");
        assert_eq!(problem["field"], field);
    }
    app.call(find(json!({"colour": "red"})))
        .await
        .assert_problem(400, "unknown_field");

    // The search's audit event names what it returned, never what was asked.
    let metadata: Vec<Value> = sqlx::query_scalar(
        "SELECT metadata FROM audit_events WHERE action = 'search' AND outcome = 'success' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(metadata[0]["mode"], "mrn");
    assert_eq!(metadata[0]["ids"], json!([zoe_id]));
    assert_eq!(metadata[1]["mode"], "ssn");
    let trail: String =
        sqlx::query_scalar("SELECT string_agg(row_to_json(a)::text, ' ') FROM audit_events a")
            .fetch_one(&pool)
            .await
            .unwrap();
    for value in [
        "123456789",
        "123-45-6789",
        "brien",
        "Brien",
        "1984-03-09",
        "nunez",
    ] {
        assert!(!trail.contains(value), "{value} reached the audit trail");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn changes_need_the_current_etag(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let created = register(&app, &desk, jane()).await;
    let path = format!("/api/patients/{}", created["id"].as_str().unwrap());
    let patch = |etag: Option<&str>, body: Value| {
        let request = send("PATCH", &path, &desk, Some(body));
        match etag {
            Some(etag) => request.insert_header(("If-Match", etag.to_owned())),
            None => request,
        }
    };

    app.call(patch(None, json!({"phone": "+15550000000"})))
        .await
        .assert_problem(428, "precondition_required");
    app.call(patch(Some("*"), json!({"phone": "+15550000000"})))
        .await
        .assert_problem(428, "precondition_required");
    let changed = app
        .call(patch(
            Some("\"1\""),
            json!({"phone": "+15550000000", "ssn": null}),
        ))
        .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.header("ETag"), Some("\"2\""));
    let changed = changed.json();
    assert_eq!(changed["phone"], "+15550000000");
    assert!(changed["ssn"].is_null(), "null clears an optional field");
    assert_eq!(changed["given_name"], "Zoë Anne", "fields left out stay");
    // The first writer won; a second with the old tag is refused and changes nothing.
    app.call(patch(Some("\"1\""), json!({"phone": "+15551111111"})))
        .await
        .assert_problem(412, "precondition_failed");
    app.call(patch(Some("W/\"2\""), json!({"phone": "+15551111111"})))
        .await
        .assert_problem(412, "precondition_failed");
    let problem = app
        .call(patch(Some("\"2\""), json!({"date_of_birth": "2999-01-01"})))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(problem["field"], "date_of_birth");
    // A malformed change is refused as such whatever version it names: the body is judged
    // before the version is compared.
    for stale in ["\"1\"", "", "W/\"2\"", "\"-3\""] {
        let problem = app
            .call(patch(Some(stale), json!({"status": null})))
            .await
            .assert_problem(422, "invalid_field");
        assert_eq!(problem["field"], "status", "If-Match {stale:?}");
    }
    app.call(patch(Some(""), json!({"phone": "+15551111111"})))
        .await
        .assert_problem(412, "precondition_failed");
    let problem = app
        .call(patch(Some("\"2\""), json!({"given_name": null})))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(
        problem["field"], "given_name",
        "a required field cannot be cleared"
    );
    app.call(patch(Some("\"2\""), json!({"roles": ["Admin"]})))
        .await
        .assert_problem(400, "unknown_field");
    let now = app.call(send("GET", &path, &desk, None)).await;
    assert_eq!(now.header("ETag"), Some("\"2\""));
    assert_eq!(now.json()["phone"], "+15550000000");

    // The change is audited with its before and after values sealed; the field names show.
    let metadata: Value = sqlx::query_scalar(
        "SELECT metadata FROM audit_events WHERE action = 'update' AND outcome = 'success'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(metadata["changed"], json!(["phone", "ssn"]));
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_tables_hold_no_identifier_in_clear(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    register(&app, &desk, jane()).await;
    // Timestamps left out: their microseconds are digits that can spell "1984" by chance.
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg((to_jsonb(p) - 'created_at' - 'updated_at')::text, ' ') FROM patients p",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let tokens: String = sqlx::query_scalar(
        "SELECT string_agg(row_to_json(t)::text, ' ') FROM patient_name_tokens t",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for value in [
        "123-45-6789",
        "123456789",
        "Zoë",
        "Anne",
        "Brien",
        "Núñez",
        "1984-03-09",
        "1984",
        "+15551234567",
        "zoe@example.org",
        "Main St",
        "Springfield",
        "XKQ123456789",
        "Acme",
        "Sam",
        "spouse",
    ] {
        for text in [&dump, &tokens] {
            assert!(!text.contains(value), "{value} in clear");
            assert!(!text.contains(&hex(value)), "{value} in clear as bytea");
        }
    }
}

/// Registration does its key work before it opens a transaction: with one held meanwhile,
/// concurrent registrations each pinned a connection while waiting for another and ran the
/// pool dry (found by the records benchmark).
#[sqlx::test(migrations = "../../migrations")]
async fn many_registrations_at_once_all_succeed(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let calls = (0..32).map(|i| {
        let app = app.clone();
        let desk = desk.clone();
        async move {
            let mut body = jane();
            body["ssn"] = json!(format!("{:03}-{:02}-{:04}", 100 + i, 1 + i, 1 + i));
            app.call(send("POST", "/api/patients", &desk, Some(body)))
                .await
                .status
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM subject_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 32, "one subject key per patient");
}

/// The truncated blind indexes let through patients who do not match. A search decrypts only
/// the fields it compares, and opens a record in full only once it matches: here a candidate
/// that collides with Zoë on every index has a damaged field that no search compares, and
/// every search for Zoë still answers, with Zoë alone.
#[sqlx::test(migrations = "../../migrations")]
async fn a_search_opens_only_the_candidates_that_match(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let zoe = register(&app, &desk, jane()).await;
    let mut alex = jane();
    alex["given_name"] = json!("Alex");
    alex["family_name"] = json!("Smith");
    alex["date_of_birth"] = json!("1990-01-01");
    alex["ssn"] = json!("212-55-1234");
    let alex = register(&app, &desk, alex).await;
    let (zoe_id, alex_id) = (
        Uuid::parse_str(zoe["id"].as_str().unwrap()).unwrap(),
        Uuid::parse_str(alex["id"].as_str().unwrap()).unwrap(),
    );
    // Alex's index values become Zoë's, as a collision of the truncated indexes would make them.
    sqlx::query(
        "UPDATE patients a SET family_name_bidx = z.family_name_bidx, \
         date_of_birth_bidx = z.date_of_birth_bidx, ssn_bidx = z.ssn_bidx \
         FROM patients z WHERE a.id = $1 AND z.id = $2",
    )
    .bind(alex_id)
    .bind(zoe_id)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO patient_name_tokens (patient_id, token, key_version) \
         SELECT $1, token, key_version FROM patient_name_tokens WHERE patient_id = $2 ON CONFLICT DO NOTHING",
    )
    .bind(alex_id)
    .bind(zoe_id)
    .execute(&pool)
    .await
    .unwrap();
    // One bit of Alex's address flipped: that field no longer decrypts.
    sqlx::query(
        "UPDATE patients SET address = set_byte(address, length(address) - 1, \
         get_byte(address, length(address) - 1) # 1) WHERE id = $1",
    )
    .bind(alex_id)
    .execute(&pool)
    .await
    .unwrap();
    let read = app
        .call(send(
            "GET",
            &format!("/api/patients/{alex_id}"),
            &desk,
            None,
        ))
        .await;
    assert_ne!(read.status, 200, "the damaged record must not open");

    for criteria in [
        json!({"ssn": "123-45-6789"}),
        json!({"family_name": "O'Brien-Núñez", "date_of_birth": "1984-03-09"}),
        json!({"name": "zoe nunez"}),
    ] {
        assert_eq!(
            search_ids(&app, &desk, &criteria).await,
            vec![zoe_id.to_string()],
            "{criteria}"
        );
    }
}

/// A search reuses the blind-index key versions its instance last read, and its candidate query
/// checks them. After another instance rotates the blind-index key and registers a patient under
/// the new version, the first instance's next search still finds both patients: the check fails
/// on the stale versions, and the search reads them again and reruns.
#[sqlx::test(migrations = "../../migrations")]
async fn a_search_after_a_rotation_on_another_instance_finds_rows_under_the_new_key(pool: PgPool) {
    let first = TestApp::with_pool(settings(), pool.clone());
    let second = TestApp::with_pool(settings(), pool.clone());
    let (_, desk) = member(&first, "front.desk", &["Staff"]).await;
    let before = register(&first, &desk, jane()).await;
    let searches = [
        json!({"family_name": "O'Brien-Núñez", "date_of_birth": "1984-03-09"}),
        json!({"name": "zoe nunez"}),
        json!({"ssn": "123-45-6789"}),
    ];
    for criteria in &searches {
        assert_eq!(
            search_ids(&first, &desk, criteria).await,
            vec![before["id"].as_str().unwrap().to_owned()]
        );
    }

    second
        .state
        .identity
        .keyring
        .rotate_branch(clinicd_crypto::Purpose::BlindIndex)
        .await
        .unwrap();
    let mut twin = jane();
    twin["given_name"] = json!("Zoë Beth");
    twin["ssn"] = json!("212-55-1234");
    let after = register(&second, &desk, twin).await;
    let version: i32 =
        sqlx::query_scalar("SELECT family_name_bidx_version FROM patients WHERE id = $1")
            .bind(Uuid::parse_str(after["id"].as_str().unwrap()).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(version, 2, "the second instance indexes under the new key");

    let mut both = vec![
        before["id"].as_str().unwrap().to_owned(),
        after["id"].as_str().unwrap().to_owned(),
    ];
    both.sort();
    for criteria in &searches[..2] {
        assert_eq!(
            search_ids(&first, &desk, criteria).await,
            both,
            "{criteria}"
        );
    }
    assert_eq!(
        search_ids(&first, &desk, &json!({"ssn": "212-55-1234"})).await,
        vec![after["id"].as_str().unwrap().to_owned()]
    );
}

/// The patient store of each app reads through the connections its worker made (`for_worker`):
/// with those unable to connect, a patient read is a database outage (503) while the session
/// check and `me`, on the shared pool, still answer.
#[sqlx::test(migrations = "../../migrations")]
async fn patient_records_are_read_through_the_workers_own_connections(pool: PgPool) {
    let mut app = TestApp::with_pool(settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let created = register(&app, &desk, jane()).await;
    let path = format!("/api/patients/{}", created["id"].as_str().unwrap());
    assert_eq!(app.call(send("GET", &path, &desk, None)).await.status, 200);

    app.state.worker_pools = clinicd_api::WorkerPools::new(|| {
        clinicd_domain::read_connections::ReadConnections::new(
            clinicd_test_support::dead_pool()
                .connect_options()
                .as_ref()
                .clone(),
            2,
        )
    });
    let read = app.call(send("GET", &path, &desk, None)).await;
    assert_eq!(read.status, 503, "{:?}", read.json());
    assert_eq!(
        read.header("Content-Type"),
        Some("application/problem+json")
    );
    let me = app.call(send("GET", "/api/auth/me", &desk, None)).await;
    assert_eq!(me.status, 200);
}

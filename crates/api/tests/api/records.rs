//! Appointments and notes over HTTP, and the care-team wall across every clinical route:
//! a provider of another team reaches a patient by no id at all (patient, note, appointment),
//! and a break-the-glass grant opens the wall until it lapses.

use std::sync::Arc;

use actix_web::test::TestRequest;
use clinicd_identity::clock::ManualClock;
use clinicd_test_support::{TestApp, identity_with, member, roomy_settings as settings, send};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

fn if_match(request: TestRequest, version: i64) -> TestRequest {
    request.insert_header(("If-Match", format!("\"{version}\"")))
}

/// A clinic: the front desk, two providers on two teams, each with one patient.
struct Clinic {
    app: TestApp,
    desk: String,
    grey: (Uuid, String),
    house: (Uuid, String),
    greys_patient: String,
    houses_patient: String,
}

async fn clinic(app: TestApp) -> Clinic {
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (grey, grey_token) = member(&app, "dr.grey", &["Provider"]).await;
    let (house, house_token) = member(&app, "dr.house", &["Provider"]).await;
    let mut ids = Vec::new();
    for (family, provider) in [("Smith", grey), ("Jones", house)] {
        let created = app
            .call(send(
                "POST",
                "/api/patients",
                &desk,
                Some(json!({"given_name": "Pat", "family_name": family, "date_of_birth": "1970-05-06", "sex": "unknown"})),
            ))
            .await
            .json();
        let id = created["id"].as_str().unwrap().to_owned();
        let assigned = app
            .call(send(
                "POST",
                &format!("/api/patients/{id}/care-team"),
                &desk,
                Some(json!({"user_id": provider.0, "reason": "covering this patient's care"})),
            ))
            .await;
        assert_eq!(assigned.status, 201);
        ids.push(id);
    }
    Clinic {
        app,
        desk,
        grey: (grey.0, grey_token),
        house: (house.0, house_token),
        greys_patient: ids[0].clone(),
        houses_patient: ids[1].clone(),
    }
}

fn slot(hour: u32, minutes: i64) -> (String, String) {
    let start = chrono::Utc::now()
        .date_naive()
        .succ_opt()
        .unwrap()
        .and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc();
    (
        start.to_rfc3339(),
        (start + chrono::Duration::minutes(minutes)).to_rfc3339(),
    )
}

#[sqlx::test(migrations = "../../migrations")]
async fn bookings_never_overlap_for_a_provider(pool: PgPool) {
    let c = clinic(TestApp::with_pool(settings(), pool.clone())).await;
    let app = &c.app;
    let book = |patient: &str, provider: Uuid, (start, end): (String, String)| {
        send(
            "POST",
            "/api/appointments",
            &c.desk,
            Some(
                json!({"patient_id": patient, "provider_id": provider, "starts_at": start, "ends_at": end, "kind": "follow_up"}),
            ),
        )
    };
    let first = app
        .call(book(&c.greys_patient, c.grey.0, slot(9, 30)))
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("ETag"), Some("\"1\""));
    let first = first.json();
    assert_eq!(first["status"], "booked");

    // Overlapping the same provider: refused by the database, whoever the patient.
    app.call(book(&c.houses_patient, c.grey.0, slot(9, 60)))
        .await
        .assert_problem(409, "appointment_overlap");
    // Another provider at the same time, and the next slot: fine.
    assert_eq!(
        app.call(book(&c.houses_patient, c.house.0, slot(9, 30)))
            .await
            .status,
        201
    );
    let (_, end) = slot(9, 30);
    let (next_end, _) = slot(10, 0);
    let back_to_back = app
        .call(book(&c.greys_patient, c.grey.0, (end, next_end)))
        .await;
    assert_eq!(
        back_to_back.status, 201,
        "a booking may start when the last ends"
    );

    // Cancelling frees the slot.
    let id = first["id"].as_str().unwrap();
    let path = format!("/api/appointments/{id}");
    let cancelled = app
        .call(if_match(
            send(
                "PATCH",
                &path,
                &c.desk,
                Some(json!({"status": "cancelled"})),
            ),
            1,
        ))
        .await;
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.header("ETag"), Some("\"2\""));
    assert_eq!(
        app.call(book(&c.houses_patient, c.grey.0, slot(9, 15)))
            .await
            .status,
        201
    );
    app.call(if_match(
        send("PATCH", &path, &c.desk, Some(json!({"status": "booked"}))),
        2,
    ))
    .await
    .assert_problem(409, "invalid_transition");
    app.call(send(
        "PATCH",
        &path,
        &c.desk,
        Some(json!({"kind": "annual"})),
    ))
    .await
    .assert_problem(428, "precondition_required");
    app.call(if_match(
        send("PATCH", &path, &c.desk, Some(json!({"kind": "annual"}))),
        1,
    ))
    .await
    .assert_problem(412, "precondition_failed");

    // Bad input, each named.
    let (start, end) = slot(14, 30);
    for (body, field) in [
        (
            json!({"patient_id": c.greys_patient, "provider_id": c.grey.0, "starts_at": end, "ends_at": start, "kind": "annual"}),
            "ends_at",
        ),
        (
            json!({"patient_id": c.greys_patient, "provider_id": c.grey.0, "starts_at": start, "ends_at": end, "kind": "checkup"}),
            "kind",
        ),
        (
            json!({"patient_id": c.greys_patient, "provider_id": Uuid::now_v7(), "starts_at": start, "ends_at": end, "kind": "annual"}),
            "provider_id",
        ),
        (
            json!({"patient_id": Uuid::now_v7(), "provider_id": c.grey.0, "starts_at": start, "ends_at": end, "kind": "annual"}),
            "patient_id",
        ),
    ] {
        let problem = app
            .call(send("POST", "/api/appointments", &c.desk, Some(body)))
            .await
            .assert_problem(422, "invalid_field");
        assert_eq!(problem["field"], field);
    }
    app.call(send(
        "POST",
        "/api/appointments",
        &c.desk,
        Some(json!({"patient_id": c.greys_patient, "provider_id": c.grey.0, "starts_at": "tomorrow", "ends_at": end, "kind": "annual"})),
    ))
    .await
    .assert_problem(400, "invalid_body");

    // Bookings are audited against their patient.
    let booked: Vec<(Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT patient_id, resource_id FROM audit_events WHERE resource_type = 'appointment' \
         AND action = 'create' AND outcome = 'success' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        booked[0],
        (
            Some(Uuid::parse_str(&c.greys_patient).unwrap()),
            Some(id.to_owned())
        )
    );

    // The provider's day, and the patient's bookings.
    let date = chrono::Utc::now().date_naive().succ_opt().unwrap();
    let day = app
        .call(send(
            "GET",
            &format!("/api/appointments?provider_id={}&date={date}", c.grey.0),
            &c.desk,
            None,
        ))
        .await;
    assert_eq!(day.status, 200);
    assert_eq!(
        day.json().as_array().unwrap().len(),
        3,
        "cancelled bookings are listed too"
    );
    let shifted = app
        .call(send(
            "GET",
            &format!(
                "/api/appointments?provider_id={}&date={date}&utc_offset_minutes=-600",
                c.grey.0
            ),
            &c.desk,
            None,
        ))
        .await
        .json();
    assert_eq!(
        shifted.as_array().unwrap().len(),
        0,
        "09:00 UTC is the evening before at UTC-10"
    );
    let patients = app
        .call(send(
            "GET",
            &format!("/api/appointments?patient_id={}", c.greys_patient),
            &c.desk,
            None,
        ))
        .await
        .json();
    assert_eq!(patients.as_array().unwrap().len(), 2);
    // Filters combine: the patient's bookings on that day, with that provider.
    let narrowed = |query: String| {
        let app = &c.app;
        let desk = &c.desk;
        async move {
            let response = app
                .call(send(
                    "GET",
                    &format!("/api/appointments?{query}"),
                    desk,
                    None,
                ))
                .await;
            assert_eq!(response.status, 200, "{query}");
            response.json().as_array().unwrap().len()
        }
    };
    let patient = &c.greys_patient;
    assert_eq!(
        narrowed(format!("patient_id={patient}&date={date}")).await,
        2
    );
    let other_day = date.succ_opt().unwrap();
    assert_eq!(
        narrowed(format!("patient_id={patient}&date={other_day}")).await,
        0
    );
    let stranger = Uuid::now_v7();
    assert_eq!(
        narrowed(format!("patient_id={patient}&provider_id={stranger}")).await,
        0
    );
    // No filter at all: the caller's own day, today (the front desk books no one).
    assert_eq!(narrowed(String::new()).await, 0);
    assert_eq!(narrowed(format!("date={date}")).await, 0);
    for bad in [
        "/api/appointments?patient_id=x",
        "/api/appointments?date=2026-13-01",
        "/api/appointments?utc_offset_minutes=841",
    ] {
        app.call(send("GET", bad, &c.desk, None))
            .await
            .assert_problem(400, "invalid_parameters");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn notes_are_drafted_signed_and_amended_never_overwritten(pool: PgPool) {
    let c = clinic(TestApp::with_pool(settings(), pool.clone())).await;
    let app = &c.app;
    let (_, grey) = &c.grey;
    let notes = format!("/api/patients/{}/notes", c.greys_patient);
    let created = app
        .call(send(
            "POST",
            &notes,
            grey,
            Some(json!({"encounter_date": "2026-01-15", "body": "Chest pain, ECG normal."})),
        ))
        .await;
    assert_eq!(created.status, 201);
    let note = created.json();
    let id = note["id"].as_str().unwrap().to_owned();
    assert_eq!(note["status"], "draft");
    let path = format!("/api/notes/{id}");

    let edited = app
        .call(if_match(
            send(
                "PATCH",
                &path,
                grey,
                Some(json!({"body": "Chest pain; ECG and troponin normal."})),
            ),
            1,
        ))
        .await;
    assert_eq!(edited.status, 200);
    let signed = app
        .call(if_match(
            send("POST", &format!("{path}/sign"), grey, None),
            2,
        ))
        .await;
    assert_eq!(signed.status, 200);
    let signed = signed.json();
    assert_eq!(signed["status"], "signed");
    assert!(signed["signed_at"].is_string());

    // Signed means final, through the API and in the database itself.
    app.call(if_match(
        send("PATCH", &path, grey, Some(json!({"body": "rewritten"}))),
        3,
    ))
    .await
    .assert_problem(409, "note_signed");
    app.call(if_match(
        send("POST", &format!("{path}/sign"), grey, None),
        3,
    ))
    .await
    .assert_problem(409, "note_signed");
    let overwrite =
        sqlx::query("UPDATE clinical_notes SET encounter_date = '2020-01-01' WHERE id = $1")
            .bind(Uuid::parse_str(&id).unwrap())
            .execute(&pool)
            .await;
    assert!(
        overwrite.is_err(),
        "the trigger refuses changes to a signed note"
    );
    let delete = sqlx::query("DELETE FROM clinical_notes WHERE id = $1")
        .bind(Uuid::parse_str(&id).unwrap())
        .execute(&pool)
        .await;
    assert!(delete.is_err());

    // Corrections are amendments.
    let amendment = app
        .call(send(
            "POST",
            &format!("{path}/amendments"),
            grey,
            Some(json!({"body": "Addendum: troponin repeat normal."})),
        ))
        .await;
    assert_eq!(amendment.status, 201);
    let amendment = amendment.json();
    assert_eq!(amendment["amends"], id.as_str());
    assert_eq!(amendment["encounter_date"], "2026-01-15");
    let amendment_id = amendment["id"].as_str().unwrap();
    app.call(send(
        "POST",
        &format!("/api/notes/{amendment_id}/amendments"),
        grey,
        Some(json!({"body": "x"})),
    ))
    .await
    .assert_problem(409, "note_not_signed");
    let history = app
        .call(send(
            "GET",
            &format!("/api/notes/{amendment_id}/history"),
            grey,
            None,
        ))
        .await
        .json();
    let bodies: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        vec![
            "Chest pain; ECG and troponin normal.",
            "Addendum: troponin repeat normal."
        ]
    );

    // Another author cannot touch the draft; the list shows both notes.
    let (_, other) = member(app, "dr.bailey", &["Provider"]).await;
    let bailey = sqlx::query_scalar::<_, Uuid>("SELECT id FROM users WHERE username = 'dr.bailey'")
        .fetch_one(&pool)
        .await
        .unwrap();
    app.call(send(
        "POST",
        &format!("/api/patients/{}/care-team", c.greys_patient),
        &c.desk,
        Some(json!({"user_id": bailey, "reason": "covering this patient's care"})),
    ))
    .await;
    app.call(if_match(
        send(
            "PATCH",
            &format!("/api/notes/{amendment_id}"),
            &other,
            Some(json!({"body": "mine now"})),
        ),
        1,
    ))
    .await
    .assert_problem(403, "not_author");
    let list = app.call(send("GET", &notes, &other, None)).await.json();
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Bad input.
    for (body, field) in [
        (
            json!({"encounter_date": "2999-01-01", "body": "x"}),
            "encounter_date",
        ),
        (
            json!({"encounter_date": "15/01/2026", "body": "x"}),
            "encounter_date",
        ),
        (
            json!({"encounter_date": "2026-01-15", "body": "  "}),
            "body",
        ),
        (
            json!({"encounter_date": "2026-01-15", "body": "x".repeat(50_001)}),
            "body",
        ),
    ] {
        let problem = app
            .call(send("POST", &notes, grey, Some(body)))
            .await
            .assert_problem(422, "invalid_field");
        assert_eq!(problem["field"], field);
    }

    // Each note action is audited against the patient, naming the note.
    let audited: Vec<(String, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT action, patient_id, resource_id FROM audit_events WHERE resource_type = 'note' \
         AND outcome = 'success' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let patient = Uuid::parse_str(&c.greys_patient).unwrap();
    assert!(
        audited.iter().all(|(_, p, _)| *p == Some(patient)),
        "{audited:?}"
    );
    assert_eq!(
        audited[0],
        ("create".to_owned(), Some(patient), Some(id.clone()))
    );
    assert!(
        audited
            .iter()
            .any(|(action, _, r)| action == "update" && r.as_deref() == Some(id.as_str()))
    );

    // Bodies are ciphertexts.
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(row_to_json(n)::text, ' ') FROM clinical_notes n")
            .fetch_one(&pool)
            .await
            .unwrap();
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for value in ["troponin", "Chest pain", "Addendum"] {
        assert!(
            !dump.contains(value) && !dump.contains(&hex(value)),
            "{value} in clear"
        );
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn another_team_reaches_the_patient_by_no_id(pool: PgPool) {
    let c = clinic(TestApp::with_pool(settings(), pool.clone())).await;
    let app = &c.app;
    let (_, grey) = &c.grey;
    let (_, house) = &c.house;
    let note = app
        .call(send(
            "POST",
            &format!("/api/patients/{}/notes", c.greys_patient),
            grey,
            Some(json!({"encounter_date": "2026-01-15", "body": "Private."})),
        ))
        .await
        .json();
    let note_id = note["id"].as_str().unwrap();
    let (start, end) = slot(11, 30);
    let booking = app
        .call(send(
            "POST",
            "/api/appointments",
            &c.desk,
            Some(json!({"patient_id": c.greys_patient, "provider_id": c.grey.0, "starts_at": start, "ends_at": end, "kind": "annual"})),
        ))
        .await
        .json();
    let booking_id = booking["id"].as_str().unwrap();

    let p = &c.greys_patient;
    let attempts: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/api/patients/{p}"), None),
        ("GET", format!("/api/patients/{p}/notes"), None),
        (
            "POST",
            format!("/api/patients/{p}/notes"),
            Some(json!({"encounter_date": "2026-01-15", "body": "x"})),
        ),
        ("GET", format!("/api/notes/{note_id}"), None),
        (
            "PATCH",
            format!("/api/notes/{note_id}"),
            Some(json!({"body": "x"})),
        ),
        ("POST", format!("/api/notes/{note_id}/sign"), None),
        (
            "POST",
            format!("/api/notes/{note_id}/amendments"),
            Some(json!({"body": "x"})),
        ),
        ("GET", format!("/api/notes/{note_id}/history"), None),
        ("GET", format!("/api/appointments/{booking_id}"), None),
        (
            "PATCH",
            format!("/api/appointments/{booking_id}"),
            Some(json!({"status": "cancelled"})),
        ),
        ("GET", format!("/api/appointments?patient_id={p}"), None),
    ];
    for (method, path, body) in &attempts {
        let response = app
            .call(if_match(send(method, path, house, body.clone()), 1))
            .await;
        let problem = response.assert_problem(404, "not_found");
        assert_eq!(
            problem["detail"], "no resource at this path",
            "{method} {path}"
        );
    }
    // Nor by search, nor on the provider's day list.
    for criteria in [
        json!({"mrn": null}),
        json!({"name": "smith"}),
        json!({"family_name": "Smith", "date_of_birth": "1970-05-06"}),
    ] {
        let criteria = if criteria["mrn"].is_null() && criteria.get("mrn").is_some() {
            let mrn = app
                .call(send("GET", &format!("/api/patients/{p}"), grey, None))
                .await
                .json()["mrn"]
                .clone();
            json!({"mrn": mrn})
        } else {
            criteria
        };
        let found = app
            .call(send("POST", "/api/patients/search", house, Some(criteria)))
            .await
            .json();
        assert_eq!(found["patients"].as_array().unwrap().len(), 0);
    }
    let date = chrono::Utc::now().date_naive().succ_opt().unwrap();
    let day = app
        .call(send(
            "GET",
            &format!("/api/appointments?provider_id={}&date={date}", c.grey.0),
            house,
            None,
        ))
        .await
        .json();
    assert_eq!(day.as_array().unwrap().len(), 0);
    // And nothing changed.
    let still = app
        .call(send("GET", &format!("/api/notes/{note_id}"), grey, None))
        .await
        .json();
    assert_eq!(
        (still["body"].as_str(), still["version"].as_i64()),
        (Some("Private."), Some(1))
    );
    // The team's own provider reaches all of it.
    assert_eq!(
        app.call(send(
            "GET",
            &format!("/api/notes/{note_id}/history"),
            grey,
            None
        ))
        .await
        .status,
        200
    );
    assert_eq!(
        app.call(send(
            "GET",
            &format!("/api/appointments/{booking_id}"),
            grey,
            None
        ))
        .await
        .status,
        200
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn breaking_the_glass_opens_the_record_until_the_grant_lapses(pool: PgPool) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let rbac_clock = clock.clone();
    let identity = identity_with(pool.clone(), move |mut identity| {
        identity.clock = rbac_clock;
        identity
    });
    let c = clinic(TestApp::with_identity(settings(), pool.clone(), identity)).await;
    let app = &c.app;
    let (_, house) = &c.house;
    let record = format!("/api/patients/{}", c.greys_patient);
    app.call(send("GET", &record, house, None))
        .await
        .assert_problem(404, "not_found");
    let granted = app
        .call(send(
            "POST",
            &format!("{record}/break-glass"),
            house,
            Some(json!({"reason": "Patient collapsed in the waiting room; Dr Grey is in surgery"})),
        ))
        .await;
    assert_eq!(granted.status, 201);
    let seen = app.call(send("GET", &record, house, None)).await;
    assert_eq!(seen.status, 200);
    let notes = app
        .call(send("GET", &format!("{record}/notes"), house, None))
        .await;
    assert_eq!(notes.status, 200);
    let access: Value = sqlx::query_scalar(
        "SELECT metadata->'access' FROM audit_events WHERE action = 'view' AND resource_type = 'patient' \
         AND outcome = 'success' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        access, "break_glass",
        "the read is audited as an emergency access"
    );

    clock.advance(chrono::Duration::minutes(61));
    app.call(send("GET", &record, house, None))
        .await
        .assert_problem(404, "not_found");
    app.call(send("GET", &format!("{record}/notes"), house, None))
        .await
        .assert_problem(404, "not_found");
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_privacy_office_exports_a_whole_record(pool: PgPool) {
    let c = clinic(TestApp::with_pool(settings(), pool.clone())).await;
    let app = &c.app;
    let (_, grey) = &c.grey;
    let (_, officer) = member(app, "privacy.officer", &["PrivacyOfficer"]).await;
    let p = &c.greys_patient;
    app.call(if_match(
        send(
            "PATCH",
            &format!("/api/patients/{p}"),
            &c.desk,
            Some(json!({"ssn": "123-45-6789"})),
        ),
        1,
    ))
    .await;
    let note = app
        .call(send(
            "POST",
            &format!("/api/patients/{p}/notes"),
            grey,
            Some(json!({"encounter_date": "2026-01-15", "body": "Seen."})),
        ))
        .await;
    assert_eq!(note.status, 201);
    let (start, end) = slot(8, 30);
    app.call(send(
        "POST",
        "/api/appointments",
        &c.desk,
        Some(json!({"patient_id": p, "provider_id": c.grey.0, "starts_at": start, "ends_at": end, "kind": "annual"})),
    ))
    .await;

    let export = app
        .call(send(
            "GET",
            &format!("/api/patients/{p}/export?recipient=the%20patient&purpose=individual"),
            &officer,
            None,
        ))
        .await;
    assert_eq!(export.status, 200);
    assert!(
        export
            .header("Content-Disposition")
            .unwrap()
            .starts_with("attachment")
    );
    let export = export.json();
    assert_eq!(export["patient"]["family_name"], "Smith");
    assert_eq!(
        export["patient"]["ssn"], "123-45-6789",
        "the patient's own record, unmasked"
    );
    assert_eq!(export["notes"][0]["body"], "Seen.");
    assert_eq!(export["appointments"].as_array().unwrap().len(), 1);

    // Providers do not export; a missing patient is 404.
    app.call(send(
        "GET",
        &format!("/api/patients/{p}/export?recipient=the%20patient&purpose=individual"),
        grey,
        None,
    ))
    .await
    .assert_problem(403, "permission_denied");
    app.call(send(
        "GET",
        &format!(
            "/api/patients/{}/export?recipient=the%20patient&purpose=individual",
            Uuid::now_v7()
        ),
        &officer,
        None,
    ))
    .await
    .assert_problem(404, "not_found");
    let (action, patient): (String, Option<Uuid>) = sqlx::query_as(
        "SELECT action, patient_id FROM audit_events WHERE route = '/api/patients/{id}/export' \
         AND outcome = 'success'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (action.as_str(), patient.map(|p| p.to_string())),
        ("export", Some(p.clone()))
    );
}

//! Part 2 consents: the privacy office records, lists and revokes them; an export to an outside
//! recipient carries the patient's substance-use notes (coded `ETH`) only while a consent names
//! that recipient and purpose, with the §2.32 notice; the patient's own access needs none;
//! psychotherapy notes never leave. The terms are sealed (nothing readable in the row or in the
//! trail's clear metadata). Bad input answers 400/404/409/415/422; roles without `export` 403.

use clinicd_test_support::{TestApp, member, roomy_settings, send};
use serde_json::{Value, json};

use crate::json_of;
use sqlx::PgPool;

const SUD: &str = "Opioid use disorder, on buprenorphine since March";

struct Clinic {
    app: TestApp,
    officer: String,
    patient: String,
}

/// A patient with an ordinary note, a substance-use note and a psychotherapy note.
async fn clinic(pool: &PgPool) -> Clinic {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    sqlx::query(
        "INSERT INTO roles (name, description, built_in, privileged, permissions) \
         VALUES ('Addiction', 'a role of this test', false, true, \
         ARRAY['patient:read', 'note:read', 'note:write', 'restricted:substance_use', \
               'restricted:psychotherapy'])",
    )
    .execute(pool)
    .await
    .unwrap();
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (doctor_id, doctor) = member(&app, "dr.addiction", &["Addiction"]).await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let (_, patient) = json_of(
        &app,
        "POST",
        "/api/patients",
        &desk,
        Some(json!({"given_name": "Bill", "family_name": "W", "date_of_birth": "1965-11-26", "sex": "male"})),
    )
    .await;
    let patient = patient["id"].as_str().unwrap().to_owned();
    let (status, _) = json_of(
        &app,
        "POST",
        &format!("/api/patients/{patient}/care-team"),
        &desk,
        Some(json!({"user_id": doctor_id.0, "reason": "treating clinician"})),
    )
    .await;
    assert_eq!(status, 201);
    for (body, label) in [
        ("Annual physical, all normal", json!({})),
        (SUD, json!({"confidentiality": "R", "sensitivity": ["ETH"]})),
        (
            "Session 3 process notes",
            json!({"confidentiality": "R", "sensitivity": ["PSYTHPN"]}),
        ),
    ] {
        let mut note = json!({"encounter_date": "2026-11-30", "body": body});
        note.as_object_mut()
            .unwrap()
            .extend(label.as_object().unwrap().clone());
        let (status, created) = json_of(
            &app,
            "POST",
            &format!("/api/patients/{patient}/notes"),
            &doctor,
            Some(note),
        )
        .await;
        assert_eq!(status, 201, "{created}");
    }
    Clinic {
        app,
        officer,
        patient,
    }
}

/// A year from today: consents may run at most ten years.
pub fn next_year() -> String {
    (chrono::Utc::now().date_naive() + chrono::Days::new(365)).to_string()
}

fn consent(recipient: &str, purpose: &str) -> Value {
    json!({"kind": "part2_disclosure", "recipient": recipient, "purpose": purpose,
        "signed_on": "2026-01-05", "expires_on": next_year()})
}

/// The bodies of the notes an export to `recipient` for `purpose` carries, and its notice.
async fn exported(clinic: &Clinic, recipient: &str, purpose: &str) -> (Vec<String>, Value) {
    let (status, export) = json_of(
        &clinic.app,
        "GET",
        &format!(
            "/api/patients/{}/export?recipient={}&purpose={purpose}",
            clinic.patient,
            recipient.replace(' ', "%20")
        ),
        &clinic.officer,
        None,
    )
    .await;
    assert_eq!(status, 200, "{export}");
    let bodies = export["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["body"].as_str().unwrap().to_owned())
        .collect();
    (bodies, export["part2_notice"].clone())
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_consent_lets_substance_use_notes_go_to_the_recipient_it_names(pool: PgPool) {
    let clinic = clinic(&pool).await;
    let consents = format!("/api/patients/{}/consents", clinic.patient);

    // Without a consent: the ordinary note only, no notice.
    let (bodies, notice) = exported(&clinic, "Riverside Recovery", "treatment").await;
    assert_eq!(bodies, vec!["Annual physical, all normal"]);
    assert!(notice.is_null());
    // The patient's own access needs no consent (§2.23); psychotherapy notes still stay out.
    let (bodies, notice) = exported(&clinic, "the patient", "individual").await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(bodies.contains(&SUD.to_owned()));
    assert!(notice.as_str().unwrap().contains("42 CFR part 2"));

    // Recorded by the privacy office.
    let (status, recorded) = json_of(
        &clinic.app,
        "POST",
        &consents,
        &clinic.officer,
        Some(consent("Riverside Recovery", "treatment")),
    )
    .await;
    assert_eq!(status, 201, "{recorded}");
    assert_eq!(recorded["in_force"], true);
    assert_eq!(recorded["kind"], "part2_disclosure");
    let id = recorded["id"].as_str().unwrap().to_owned();
    let (status, listed) = json_of(&clinic.app, "GET", &consents, &clinic.officer, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["recipient"], "Riverside Recovery");

    // The named recipient and purpose (whatever the case) get the substance-use note and the
    // notice; another recipient or purpose does not.
    let (bodies, notice) = exported(&clinic, "riverside recovery", "treatment").await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(bodies.contains(&SUD.to_owned()));
    assert!(notice.as_str().unwrap().contains("42 CFR part 2"));
    let event: Value = sqlx::query_scalar(
        "SELECT metadata FROM audit_events WHERE action = 'export' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(event["part2_consent"], id.as_str());
    assert_eq!(
        exported(&clinic, "Another Clinic", "treatment")
            .await
            .0
            .len(),
        1
    );
    assert_eq!(
        exported(&clinic, "Riverside Recovery", "payment")
            .await
            .0
            .len(),
        1
    );

    // Revoked: from now on, nothing under it; a second revocation is a conflict.
    let revoke = format!("/api/consents/{id}/revoke");
    let (status, revoked) = json_of(
        &clinic.app,
        "POST",
        &revoke,
        &clinic.officer,
        Some(json!({"reason": "revoked by the patient in writing"})),
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["in_force"], false);
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(
        exported(&clinic, "Riverside Recovery", "treatment")
            .await
            .0
            .len(),
        1
    );
    clinic
        .app
        .call(send(
            "POST",
            &revoke,
            &clinic.officer,
            Some(json!({"reason": "revoked by the patient in writing"})),
        ))
        .await
        .assert_problem(409, "conflict");

    // Nothing of the terms is readable at rest or in the trail's clear columns.
    let row: Vec<u8> = sqlx::query_scalar(
        "SELECT convert_to(c::text, 'UTF8') FROM patient_consents c WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let row = String::from_utf8_lossy(&row).to_lowercase();
    for secret in ["riverside", "part2", "treatment"] {
        assert!(!row.contains(secret), "{secret} in clear in the row");
    }
    let trail: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(metadata::text, '') FROM audit_events WHERE resource_type = 'consent'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        trail.len(),
        4,
        "record, list, revoke and the refused second revocation are audited: {trail:?}"
    );
    for metadata in trail {
        assert!(!metadata.to_lowercase().contains("riverside"), "{metadata}");
        assert!(!metadata.contains("part2"), "{metadata}");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn bad_consents_are_refused_with_the_field_named(pool: PgPool) {
    let clinic = clinic(&pool).await;
    let consents = format!("/api/patients/{}/consents", clinic.patient);
    let with = |field: &str, value: Value| {
        let mut body = consent("Riverside Recovery", "treatment");
        body[field] = value;
        body
    };
    for (body, field) in [
        (with("kind", json!("hipaa_authorization")), "kind"),
        (with("recipient", json!("   ")), "recipient"),
        (with("recipient", json!("x".repeat(201))), "recipient"),
        (
            with("recipient", json!("Riverside\u{202e}Recovery")),
            "recipient",
        ),
        (with("purpose", json!("individual")), "purpose"),
        (with("purpose", json!("marketing")), "purpose"),
        (with("signed_on", json!("2999-01-01")), "signed_on"),
        (with("signed_on", json!("05/01/2026")), "signed_on"),
        (with("expires_on", json!("2025-01-01")), "expires_on"),
        (with("expires_on", json!("2200-01-01")), "expires_on"),
    ] {
        let problem = clinic
            .app
            .call(send("POST", &consents, &clinic.officer, Some(body.clone())))
            .await
            .assert_problem(422, "invalid_field");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{body}: {problem}"
        );
    }
    // Malformed bodies, ids and paths.
    clinic
        .app
        .call(send(
            "POST",
            &consents,
            &clinic.officer,
            Some(json!({"kind": "part2_disclosure"})),
        ))
        .await
        .assert_problem(400, "invalid_body");
    let mut extra = consent("Riverside Recovery", "treatment");
    extra["scope"] = json!("all");
    clinic
        .app
        .call(send("POST", &consents, &clinic.officer, Some(extra)))
        .await
        .assert_problem(400, "unknown_field");
    let plain = clinic
        .app
        .call(
            send("POST", &consents, &clinic.officer, None)
                .insert_header(("content-type", "text/plain"))
                .set_payload("kind=part2"),
        )
        .await;
    assert_eq!(plain.status, 415);
    for path in [
        "/api/patients/not-a-uuid/consents".to_owned(),
        "/api/consents/not-a-uuid/revoke".to_owned(),
    ] {
        let response = clinic
            .app
            .call(send(
                "POST",
                &path,
                &clinic.officer,
                Some(json!({"reason": "revoked by the patient"})),
            ))
            .await;
        assert_eq!(response.status, 400, "{path}");
    }
    let nobody = uuid::Uuid::now_v7();
    clinic
        .app
        .call(send(
            "POST",
            &format!("/api/patients/{nobody}/consents"),
            &clinic.officer,
            Some(consent("Riverside Recovery", "treatment")),
        ))
        .await
        .assert_problem(404, "not_found");
    clinic
        .app
        .call(send(
            "POST",
            &format!("/api/consents/{nobody}/revoke"),
            &clinic.officer,
            Some(json!({"reason": "revoked by the patient"})),
        ))
        .await
        .assert_problem(404, "not_found");
    let (_, recorded) = json_of(
        &clinic.app,
        "POST",
        &consents,
        &clinic.officer,
        Some(consent("Riverside Recovery", "treatment")),
    )
    .await;
    clinic
        .app
        .call(send(
            "POST",
            &format!("/api/consents/{}/revoke", recorded["id"].as_str().unwrap()),
            &clinic.officer,
            Some(json!({"reason": "no"})),
        ))
        .await
        .assert_problem(422, "invalid_field");
    // Nothing but the one good consent was stored.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM patient_consents")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn only_holders_of_export_touch_consents(pool: PgPool) {
    let clinic = clinic(&pool).await;
    let consents = format!("/api/patients/{}/consents", clinic.patient);
    let (_, recorded) = json_of(
        &clinic.app,
        "POST",
        &consents,
        &clinic.officer,
        Some(consent("Riverside Recovery", "treatment")),
    )
    .await;
    let revoke = format!("/api/consents/{}/revoke", recorded["id"].as_str().unwrap());
    for role in [
        "Provider",
        "Staff",
        "ReadOnly",
        "RecordsManager",
        "Admin",
        "Addiction",
    ] {
        let (_, token) = member(
            &clinic.app,
            &format!("user.{}", role.to_lowercase()),
            &[role],
        )
        .await;
        for (method, path, body) in [
            ("GET", &consents, None),
            ("POST", &consents, Some(consent("Elsewhere", "payment"))),
            (
                "POST",
                &revoke,
                Some(json!({"reason": "revoked by the patient"})),
            ),
        ] {
            clinic
                .app
                .call(send(method, path, &token, body))
                .await
                .assert_problem(403, "permission_denied");
        }
    }
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM patient_consents WHERE revoked_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 1);
}

//! Sensitivity labels on clinical notes: a restricted psychotherapy note shows its content only
//! to a holder of `restricted:psychotherapy` on the care team; others (a provider on the team,
//! an emergency physician through break-the-glass) see its id and label and get
//! `403 restricted_content` for the content; the clinic may let break-the-glass open it; a label
//! changes only with a reason, and the trail keeps the confidentiality level only; exports leave
//! psychotherapy notes out.

use clinicd_test_support::{TestApp, member, roomy_settings, send};
use serde_json::json;

use crate::json_of;
use sqlx::PgPool;
use uuid::Uuid;

const THERAPY: &str = "Session 12: discussed the panic attacks in detail";

async fn role(pool: &PgPool, name: &str, permissions: &[&str]) {
    sqlx::query(
        "INSERT INTO roles (name, description, built_in, privileged, permissions) \
         VALUES ($1, 'a role of this test', false, true, $2)",
    )
    .bind(name)
    .bind(permissions)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_psychotherapy_note_is_shown_only_to_whom_its_label_allows(pool: PgPool) {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    role(
        &pool,
        "Therapist",
        &[
            "patient:read",
            "note:read",
            "note:write",
            "restricted:psychotherapy",
        ],
    )
    .await;
    role(
        &pool,
        "EmergencyPsych",
        &[
            "patient:read",
            "note:read",
            "break_glass",
            "restricted:psychotherapy",
        ],
    )
    .await;
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (therapist_id, therapist) = member(&app, "dr.freud", &["Therapist"]).await;
    let (doctor_id, doctor) = member(&app, "dr.grey", &["Provider"]).await;
    let (_, emergency) = member(&app, "dr.er", &["EmergencyPsych"]).await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let (_, patient) = json_of(
        &app,
        "POST",
        "/api/patients",
        &desk,
        Some(json!({"given_name": "Anna", "family_name": "O", "date_of_birth": "1959-02-27", "sex": "female"})),
    )
    .await;
    let patient = patient["id"].as_str().unwrap().to_owned();
    for user in [therapist_id, doctor_id] {
        let (status, _) = json_of(
            &app,
            "POST",
            &format!("/api/patients/{patient}/care-team"),
            &desk,
            Some(json!({"user_id": user.0, "reason": "treating clinician"})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let notes = format!("/api/patients/{patient}/notes");

    // Written and labelled by the therapist.
    let (status, note) = json_of(
        &app,
        "POST",
        &notes,
        &therapist,
        Some(
            json!({"encounter_date": "2026-11-30", "body": THERAPY, "confidentiality": "R",
            "sensitivity": ["PSYTHPN"]}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{note}");
    assert_eq!(
        (
            note["confidentiality"].as_str(),
            note["sensitivity"][0].as_str()
        ),
        (Some("R"), Some("PSYTHPN"))
    );
    let note_path = format!("/api/notes/{}", note["id"].as_str().unwrap());
    let (_, plain) = json_of(
        &app,
        "POST",
        &notes,
        &doctor,
        Some(json!({"encounter_date": "2026-11-30", "body": "BP 120/80"})),
    )
    .await;
    let plain_path = format!("/api/notes/{}", plain["id"].as_str().unwrap());
    // No one labels a note beyond what they may read themselves.
    let (status, refused) = json_of(
        &app,
        "POST",
        &notes,
        &doctor,
        Some(json!({"encounter_date": "2026-11-30", "body": "x", "confidentiality": "R", "sensitivity": ["PSYTHPN"]})),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("restricted_content"))
    );

    // The therapist reads it; the provider on the team does not, and sees only id and label.
    let (status, read) = json_of(&app, "GET", &note_path, &therapist, None).await;
    assert_eq!((status, read["body"].as_str()), (200, Some(THERAPY)));
    let response = app.call(send("GET", &note_path, &doctor, None)).await;
    let problem = response.assert_problem(403, "restricted_content");
    assert!(problem["detail"].as_str().unwrap().contains("R/PSYTHPN"));
    assert!(!String::from_utf8_lossy(&response.body).contains("panic"));
    let listed = app.call(send("GET", &notes, &doctor, None)).await;
    assert!(!String::from_utf8_lossy(&listed.body).contains("panic"));
    let listed = listed.json();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == note["id"])
        .unwrap();
    assert_eq!(
        (entry["withheld"].as_bool(), entry["body"].is_null()),
        (Some(true), true)
    );
    assert_eq!(entry["sensitivity"], json!(["PSYTHPN"]));
    // Neither edits, signs nor amends it.
    let (status, _) = json_of(
        &app,
        "PATCH",
        &note_path,
        &doctor,
        Some(json!({"body": "changed"})),
    )
    .await;
    assert_eq!(status, 403);

    // Break-the-glass opens the ordinary note, not the psychotherapy one.
    let (status, _) = json_of(
        &app,
        "POST",
        &format!("/api/patients/{patient}/break-glass"),
        &emergency,
        Some(json!({"reason": "Patient in acute crisis in the emergency room"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        json_of(&app, "GET", &plain_path, &emergency, None).await.0,
        200
    );
    app.call(send("GET", &note_path, &emergency, None))
        .await
        .assert_problem(403, "restricted_content");
    // ... unless the clinic configures it to.
    let mut settings = roomy_settings();
    settings.break_glass_opens_psychiatric = true;
    let opened = TestApp::with_pool(settings, pool.clone());
    let (status, read) = json_of(&opened, "GET", &note_path, &emergency, None).await;
    assert_eq!((status, read["body"].as_str()), (200, Some(THERAPY)));

    // Exports leave psychotherapy notes out (outside the right of access).
    let (status, export) = json_of(
        &app,
        "GET",
        &format!("/api/patients/{patient}/export?recipient=the%20patient&purpose=individual"),
        &officer,
        None,
    )
    .await;
    assert_eq!(status, 200, "{export}");
    let copy = app
        .call(send(
            "GET",
            &format!("/api/patients/{patient}/export?recipient=the%20patient&purpose=individual"),
            &officer,
            None,
        ))
        .await;
    assert_eq!(
        copy.headers.get("clinicd-downloaded-by").unwrap(),
        "privacy.officer"
    );
    assert!(copy.headers.get("clinicd-download-id").is_some());
    let exported: Vec<&str> = export["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(exported, vec![plain["id"].as_str().unwrap()]);

    // Relabelled with a reason: the provider reads it now; the trail keeps levels, not codes.
    let label = format!("{note_path}/label");
    let (status, _) = json_of(
        &app,
        "PUT",
        &label,
        &therapist,
        Some(json!({"confidentiality": "N", "reason": "no"})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, relabelled) = json_of(
        &app,
        "PUT",
        &label,
        &therapist,
        Some(json!({"confidentiality": "N", "sensitivity": [], "reason": "filed under the wrong category"})),
    )
    .await;
    assert_eq!(
        (status, relabelled["confidentiality"].as_str()),
        (200, Some("N"))
    );
    assert_eq!(json_of(&app, "GET", &note_path, &doctor, None).await.0, 200);
    let coded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE patient_id = $1 AND metadata::text LIKE '%PSYTHPN%'",
    )
    .bind(Uuid::parse_str(&patient).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(coded, 0);
    let relabel_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE resource_type = 'note_label' AND sealed_values IS NOT NULL \
         AND metadata->'confidentiality'->>'from' = 'R'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(relabel_events, 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn labels_refuse_unknown_codes_and_coded_normal_notes(pool: PgPool) {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (doctor_id, doctor) = member(&app, "dr.grey", &["Provider"]).await;
    let (_, patient) = json_of(
        &app,
        "POST",
        "/api/patients",
        &desk,
        Some(json!({"given_name": "Ann", "family_name": "Lee", "date_of_birth": "1970-01-01", "sex": "female"})),
    )
    .await;
    let patient = patient["id"].as_str().unwrap().to_owned();
    json_of(
        &app,
        "POST",
        &format!("/api/patients/{patient}/care-team"),
        &desk,
        Some(json!({"user_id": doctor_id.0, "reason": "treating clinician"})),
    )
    .await;
    let notes = format!("/api/patients/{patient}/notes");
    for (body, field) in [
        (
            json!({"encounter_date": "2026-11-30", "body": "x", "confidentiality": "X"}),
            "confidentiality",
        ),
        (
            json!({"encounter_date": "2026-11-30", "body": "x", "confidentiality": "R", "sensitivity": ["FOO"]}),
            "sensitivity",
        ),
        (
            json!({"encounter_date": "2026-11-30", "body": "x", "sensitivity": ["HIV"]}),
            "confidentiality",
        ),
    ] {
        let response = app
            .call(send("POST", &notes, &doctor, Some(body.clone())))
            .await;
        let problem = response.assert_problem(422, "invalid_field");
        assert_eq!(problem["field"], field, "{body}");
    }
    // Restricted without a code: the care team reads it; V and R alike.
    let (status, note) = json_of(
        &app,
        "POST",
        &notes,
        &doctor,
        Some(json!({"encounter_date": "2026-11-30", "body": "private", "confidentiality": "V"})),
    )
    .await;
    assert_eq!(status, 201);
    let path = format!("/api/notes/{}", note["id"].as_str().unwrap());
    assert_eq!(json_of(&app, "GET", &path, &doctor, None).await.0, 200);
    // Relabelling needs note:write.
    let (_, reader) = member(&app, "read.only", &["ReadOnly"]).await;
    app.call(send(
        "PUT",
        &format!("{path}/label"),
        &reader,
        Some(json!({"confidentiality": "N", "reason": "because"})),
    ))
    .await
    .assert_problem(403, "permission_denied");
}

const BOUNDARY: &str = "labels-boundary";
const RESULT: &[u8] = b"HIV-1/2 antibody: reactive. Confirmatory test ordered.\n";

/// An upload form: `category`, then the given label parts, then the file.
fn upload(patient: &str, token: &str, label: &[(&str, &str)]) -> actix_web::test::TestRequest {
    let mut body = Vec::new();
    let mut part = |name: &str, filename: Option<&str>, content: &[u8]| {
        body.extend(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").bytes(),
        );
        if let Some(filename) = filename {
            body.extend(format!("; filename=\"{filename}\"").bytes());
        }
        body.extend(b"\r\n\r\n");
        body.extend_from_slice(content);
        body.extend(b"\r\n");
    };
    part("category", None, b"lab_result");
    for (name, value) in label {
        part(name, None, value.as_bytes());
    }
    part("file", Some("hiv-result.txt"), RESULT);
    body.extend(format!("--{BOUNDARY}--\r\n").bytes());
    clinicd_test_support::bearer(
        actix_web::test::TestRequest::post()
            .uri(&format!("/api/patients/{patient}/files"))
            .insert_header((
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            ))
            .set_payload(body),
        token,
    )
}

/// A file labelled restricted (HIV) at upload: its uploader, who holds `restricted:hiv`, reads
/// it; a provider on the same team sees its id and label only, and cannot download, delete or
/// relabel it, nor label a file beyond what they may read; a relabel needs a reason and opens
/// it; the trail keeps the level, never the code; exports to outsiders leave out Part 2 files.
#[sqlx::test(migrations = "../../migrations")]
async fn a_restricted_file_is_shown_only_to_whom_its_label_allows(pool: PgPool) {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    role(
        &pool,
        "HivClinic",
        &[
            "patient:read",
            "file:read",
            "file:upload",
            "restricted:hiv",
            "restricted:substance_use",
        ],
    )
    .await;
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (specialist_id, specialist) = member(&app, "dr.ho", &["HivClinic"]).await;
    let (doctor_id, doctor) = member(&app, "dr.grey", &["Provider"]).await;
    let (reader_id, reader) = member(&app, "auditor.read", &["ReadOnly"]).await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let (_, patient) = json_of(
        &app,
        "POST",
        "/api/patients",
        &desk,
        Some(json!({"given_name": "Pat", "family_name": "Doe", "date_of_birth": "1980-01-02", "sex": "unknown"})),
    )
    .await;
    let patient = patient["id"].as_str().unwrap().to_owned();
    for user in [specialist_id, doctor_id, reader_id] {
        let (status, _) = json_of(
            &app,
            "POST",
            &format!("/api/patients/{patient}/care-team"),
            &desk,
            Some(json!({"user_id": user.0, "reason": "treating clinician"})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let hiv = [("confidentiality", "R"), ("sensitivity", "HIV")];

    // Labelled at upload by someone who may read it.
    let stored = app.call(upload(&patient, &specialist, &hiv)).await;
    assert_eq!(stored.status, 201, "{:?}", stored.body);
    let stored = stored.json();
    assert_eq!(stored["confidentiality"], "R");
    assert_eq!(stored["sensitivity"], json!(["HIV"]));
    let id = stored["id"].as_str().unwrap().to_owned();
    let file = format!("/api/files/{id}");

    // Nobody labels a file beyond what they may read themselves.
    app.call(upload(&patient, &doctor, &hiv))
        .await
        .assert_problem(403, "restricted_content");
    // Bad labels and parts out of order are refused, and nothing is stored.
    for (label, status, code) in [
        (
            vec![("confidentiality", "N"), ("sensitivity", "HIV")],
            422,
            "invalid_field",
        ),
        (vec![("confidentiality", "Q")], 422, "invalid_field"),
        (
            vec![("confidentiality", "R"), ("sensitivity", "HIV,XYZ")],
            422,
            "invalid_field",
        ),
        (
            vec![("sensitivity", "HIV"), ("confidentiality", "R")],
            400,
            "invalid_multipart",
        ),
        (
            vec![("confidentiality", "R"), ("confidentiality", "V")],
            400,
            "invalid_multipart",
        ),
    ] {
        app.call(upload(&patient, &specialist, &label))
            .await
            .assert_problem(status, code);
    }

    // The provider sees the file exists, its label, and nothing else.
    let (status, listed) = json_of(
        &app,
        "GET",
        &format!("/api/patients/{patient}/files"),
        &doctor,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let entry = &listed.as_array().unwrap()[0];
    assert_eq!(
        (
            entry["id"].as_str(),
            entry["withheld"].as_bool(),
            entry["name"].is_null()
        ),
        (Some(id.as_str()), Some(true), true)
    );
    assert_eq!(entry["sensitivity"], json!(["HIV"]));
    let refused = app
        .call(send("GET", &file, &doctor, None))
        .await
        .assert_problem(403, "restricted_content");
    assert!(refused["detail"].as_str().unwrap().contains("R/HIV"));
    app.call(send("DELETE", &file, &doctor, None))
        .await
        .assert_problem(403, "restricted_content");
    app.call(send(
        "PUT",
        &format!("{file}/label"),
        &doctor,
        Some(json!({"confidentiality": "N", "reason": "the result was negative"})),
    ))
    .await
    .assert_problem(403, "restricted_content");
    app.call(send(
        "PUT",
        &format!("{file}/label"),
        &reader,
        Some(json!({"confidentiality": "N", "reason": "the result was negative"})),
    ))
    .await
    .assert_problem(403, "permission_denied");
    // Its uploader reads it.
    let download = app.call(send("GET", &file, &specialist, None)).await;
    assert_eq!(
        (download.status.as_u16(), &download.body[..]),
        (200, RESULT)
    );

    // A relabel needs a good label and a reason; then the provider reads it.
    for body in [
        json!({"confidentiality": "N", "reason": "no"}),
        json!({"confidentiality": "N", "sensitivity": ["HIV"], "reason": "the result was negative"}),
    ] {
        app.call(send(
            "PUT",
            &format!("{file}/label"),
            &specialist,
            Some(body),
        ))
        .await
        .assert_problem(422, "invalid_field");
    }
    let (status, relabelled) = json_of(
        &app,
        "PUT",
        &format!("{file}/label"),
        &specialist,
        Some(json!({"confidentiality": "N", "reason": "the confirmatory test was negative"})),
    )
    .await;
    assert_eq!(status, 200, "{relabelled}");
    assert_eq!(relabelled["confidentiality"], "N");
    let download = app.call(send("GET", &file, &doctor, None)).await;
    assert_eq!(download.status, 200);

    // The trail keeps levels, never codes.
    let metadata: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(metadata::text, '') FROM audit_events WHERE resource_type = 'file'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        metadata
            .iter()
            .any(|m| m.contains("\"confidentiality\": \"R\"")),
        "{metadata:?}"
    );
    assert!(metadata.iter().all(|m| !m.contains("HIV")), "{metadata:?}");

    // A substance-use file does not go to an outside recipient without the patient's consent.
    let sud = app
        .call(upload(
            &patient,
            &specialist,
            &[("confidentiality", "R"), ("sensitivity", "ETH")],
        ))
        .await;
    assert_eq!(sud.status, 201);
    let (status, export) = json_of(
        &app,
        "GET",
        &format!("/api/patients/{patient}/export?recipient=Other%20Clinic&purpose=treatment"),
        &officer,
        None,
    )
    .await;
    assert_eq!(status, 200, "{export}");
    let files: Vec<&str> = export["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(files, vec![id.as_str()]);
}

/// A patient's label is the floor of their record: setting it (with a reason, by someone who
/// may read under it) raises every note and file, and every later note starts from it; the
/// provider without the permission then sees neither, and the trail keeps levels only.
#[sqlx::test(migrations = "../../migrations")]
async fn a_patient_label_raises_every_note_and_file_of_the_record(pool: PgPool) {
    let app = TestApp::with_pool(roomy_settings(), pool.clone());
    role(
        &pool,
        "Recovery",
        &[
            "patient:read",
            "patient:write",
            "note:read",
            "note:write",
            "file:read",
            "file:upload",
            "restricted:substance_use",
        ],
    )
    .await;
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (clinician_id, clinician) = member(&app, "dr.recovery", &["Recovery"]).await;
    let (doctor_id, doctor) = member(&app, "dr.grey", &["Provider"]).await;
    let (_, reader) = member(&app, "auditor.read", &["ReadOnly"]).await;
    let (_, patient) = json_of(
        &app,
        "POST",
        "/api/patients",
        &desk,
        Some(json!({"given_name": "Sam", "family_name": "Roe", "date_of_birth": "1975-03-04", "sex": "unknown"})),
    )
    .await;
    let patient = patient["id"].as_str().unwrap().to_owned();
    for user in [clinician_id, doctor_id] {
        let (status, _) = json_of(
            &app,
            "POST",
            &format!("/api/patients/{patient}/care-team"),
            &desk,
            Some(json!({"user_id": user.0, "reason": "treating clinician"})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let notes = format!("/api/patients/{patient}/notes");
    let (status, earlier) = json_of(
        &app,
        "POST",
        &notes,
        &doctor,
        Some(json!({"encounter_date": "2026-11-30", "body": "Intake: withdrawal symptoms"})),
    )
    .await;
    assert_eq!(status, 201);
    let earlier = format!("/api/notes/{}", earlier["id"].as_str().unwrap());
    let file = app.call(upload(&patient, &doctor, &[])).await;
    assert_eq!(file.status, 201);
    let file = format!("/api/files/{}", file.json()["id"].as_str().unwrap());
    let label = format!("/api/patients/{patient}/label");
    let (status, read) = json_of(&app, "GET", &label, &doctor, None).await;
    assert_eq!((status, read["confidentiality"].as_str()), (200, Some("N")));

    let part2 = json!({"confidentiality": "R", "sensitivity": ["ETH"], "reason": "enrolled in the opioid treatment programme"});
    // Refused: a label its setter could not read, a role without patient:write, bad input.
    app.call(send("PUT", &label, &desk, Some(part2.clone())))
        .await
        .assert_problem(403, "restricted_content");
    app.call(send("PUT", &label, &reader, Some(part2.clone())))
        .await
        .assert_problem(403, "permission_denied");
    // Without patient:read, not even the label is read.
    let (_, nobody) = member(&app, "no.roles", &[]).await;
    app.call(send("GET", &label, &nobody, None))
        .await
        .assert_problem(403, "permission_denied");
    for (body, status, code) in [
        (
            json!({"confidentiality": "N", "sensitivity": ["ETH"], "reason": "enrolled in the programme"}),
            422,
            "invalid_field",
        ),
        (
            json!({"confidentiality": "R", "sensitivity": ["ETH"], "reason": "no"}),
            422,
            "invalid_field",
        ),
        (
            json!({"confidentiality": "R", "reason": "enrolled", "scope": "all"}),
            400,
            "unknown_field",
        ),
    ] {
        app.call(send("PUT", &label, &clinician, Some(body)))
            .await
            .assert_problem(status, code);
    }
    let (status, set) = json_of(&app, "PUT", &label, &clinician, Some(part2)).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(
        (set["notes_raised"].as_u64(), set["files_raised"].as_u64()),
        (Some(1), Some(1))
    );

    // The provider without restricted:substance_use now reads neither the note nor the file,
    // nor writes a note that would carry the label.
    app.call(send("GET", &earlier, &doctor, None))
        .await
        .assert_problem(403, "restricted_content");
    app.call(send("GET", &file, &doctor, None))
        .await
        .assert_problem(403, "restricted_content");
    app.call(send(
        "POST",
        &notes,
        &doctor,
        Some(json!({"encounter_date": "2026-12-01", "body": "Follow-up"})),
    ))
    .await
    .assert_problem(403, "restricted_content");
    // The clinician does; a new note starts from the patient's label.
    let (status, read) = json_of(&app, "GET", &earlier, &clinician, None).await;
    assert_eq!((status, read["sensitivity"].clone()), (200, json!(["ETH"])));
    let (status, later) = json_of(
        &app,
        "POST",
        &notes,
        &clinician,
        Some(json!({"encounter_date": "2026-12-01", "body": "Dose adjusted"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        (
            later["confidentiality"].as_str(),
            later["sensitivity"].clone()
        ),
        (Some("R"), json!(["ETH"]))
    );
    // The export carries the patient's label.
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let (status, export) = json_of(
        &app,
        "GET",
        &format!("/api/patients/{patient}/export?recipient=the%20patient&purpose=individual"),
        &officer,
        None,
    )
    .await;
    assert_eq!(status, 200, "{export}");
    assert_eq!(
        (
            export["label"]["confidentiality"].as_str(),
            export["label"]["sensitivity"].clone()
        ),
        (Some("R"), json!(["ETH"]))
    );
    // Lowering the patient's label lowers nothing already raised.
    let (status, _) = json_of(
        &app,
        "PUT",
        &label,
        &clinician,
        Some(json!({"confidentiality": "N", "reason": "left the programme"})),
    )
    .await;
    assert_eq!(status, 200);
    app.call(send("GET", &earlier, &doctor, None))
        .await
        .assert_problem(403, "restricted_content");

    // The trail keeps levels, never codes.
    let metadata: Vec<String> = sqlx::query_scalar(
        "SELECT coalesce(metadata::text, '') FROM audit_events WHERE resource_type = 'patient_label'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(metadata.len() >= 3, "{metadata:?}");
    assert!(metadata.iter().all(|m| !m.contains("ETH")), "{metadata:?}");
}

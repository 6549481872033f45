//! A change and its audit event commit together, or neither does. Every route the route table
//! declares as changing state is called, ready to succeed, while a trigger makes every insert
//! into the audit trail fail: each answers 503 problem+json and leaves the database and the
//! object store exactly as they were. Only the documented defensive state moves (a failure
//! count, a used-up single-use challenge or code), which commits on its own by design.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::test::TestRequest;
use clinicd_api::routes::ROUTES;

use clinicd_audit::{AuditWriter, WriterSettings};
use clinicd_identity::otp::LogOtpSender;
use clinicd_test_support::{TestApp, bearer, member, roomy_settings, send};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const BOUNDARY: &str = "atomic-boundary";

fn objects(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.insert(path);
            }
        }
    }
    found
}

async fn break_the_trail(pool: &PgPool) {
    sqlx::query(
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'the trail refuses this event'; END $$",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
         FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn mend_the_trail(pool: &PgPool) {
    sqlx::query("DROP TRIGGER refuse_audit ON audit_events")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DROP FUNCTION refuse_audit()")
        .execute(pool)
        .await
        .unwrap();
}

fn json_post(path: &str, body: Value) -> TestRequest {
    clinicd_test_support::post(path, &body)
}

fn upload(patient: Uuid, token: &str) -> TestRequest {
    let mut body = Vec::new();
    body.extend(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"category\"\r\n\r\nlab_result\r\n"
        )
        .bytes(),
    );
    body.extend(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n"
        )
        .bytes(),
    );
    body.extend(b"plain text result\r\n");
    body.extend(format!("--{BOUNDARY}--\r\n").bytes());
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

fn if_match(request: TestRequest, version: i64) -> TestRequest {
    request.insert_header(("If-Match", format!("\"{version}\"")))
}

/// A user with a confirmed TOTP factor whose secret and backup codes the test knows.
async fn with_totp(app: &TestApp, username: &str) -> (Uuid, String, Vec<String>) {
    let pool = &app.state.db;
    let user = clinicd_test_support::create_user(pool, username, PASSWORD, false).await;
    let mfa = &app.state.identity.mfa;
    let mut tx = pool.begin().await.unwrap();
    let enrolment = mfa.begin(&mut tx, user, username).await.unwrap();
    tx.commit().await.unwrap();
    let secret = enrolment.secret_base32.expose_secret().to_owned();
    let mut tx = pool.begin().await.unwrap();
    let codes = mfa.confirm(&mut tx, user, &totp(&secret, 0)).await.unwrap();
    tx.commit().await.unwrap();
    let codes = codes.iter().map(|c| c.expose_secret().to_owned()).collect();
    (user.0, secret, codes)
}

/// The TOTP code `steps` time steps from now.
fn totp(secret: &str, steps: i64) -> String {
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap();
    let now = chrono::Utc::now().timestamp() + steps * 30;
    totp.generate(u64::try_from(now).unwrap()).to_string()
}

async fn mfa_challenge(app: &TestApp, username: &str) -> String {
    let response = app
        .call(json_post(
            "/api/auth/login",
            json!({"username": username, "password": PASSWORD}),
        ))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    response.json()["challenge_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn id_of(response: &clinicd_test_support::TestResponse) -> Uuid {
    let body = response.json();
    assert!(
        response.status.is_success(),
        "{}: {body}",
        response.status.as_u16()
    );
    Uuid::parse_str(body["id"].as_str().unwrap()).unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn every_change_and_its_event_commit_together_or_not_at_all(pool: PgPool) {
    let dir = std::env::temp_dir()
        .join("clinicd-test-atomic")
        .join(Uuid::now_v7().to_string());
    let identity = clinicd_test_support::identity_with(pool.clone(), |identity| {
        identity.with_otp_sender(Arc::new(LogOtpSender))
    });
    let audit = AuditWriter::start(
        pool.clone(),
        clinicd_test_support::keyring(pool.clone()),
        WriterSettings::default(),
    );
    let app = TestApp {
        state: clinicd_test_support::compose(
            pool.clone(),
            roomy_settings(),
            identity,
            audit,
            Arc::new(clinicd_files::LocalStore::new(dir.clone())),
        ),
    };

    // The clinic, made before the trail breaks.
    let (_, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let (_, second) = member(&app, "second.admin", &["Admin"]).await;
    let (desk_id, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (doctor, doctor_token) = member(&app, "dr.grey", &["Provider"]).await;
    let (other_doctor, other_token) = member(&app, "dr.shepherd", &["Provider"]).await;
    let (reader, _) = member(&app, "read.only", &["ReadOnly"]).await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let (mfa_user, mfa_secret, backup_codes) = with_totp(&app, "dr.mfa").await;

    let patient = id_of(
        &app.call(send(
            "POST",
            "/api/patients",
            &desk,
            Some(json!({"given_name": "Ada", "family_name": "Byron", "date_of_birth": "1980-12-10", "sex": "female"})),
        ))
        .await,
    );
    let assigned = app
        .call(send(
            "POST",
            &format!("/api/patients/{patient}/care-team"),
            &desk,
            Some(json!({"user_id": doctor.0, "reason": "primary care provider"})),
        ))
        .await;
    assert_eq!(assigned.status, 201);
    let draft = id_of(
        &app.call(send(
            "POST",
            &format!("/api/patients/{patient}/notes"),
            &doctor_token,
            Some(json!({"encounter_date": "2026-01-05", "body": "Seen for a cough."})),
        ))
        .await,
    );
    let signed = id_of(
        &app.call(send(
            "POST",
            &format!("/api/patients/{patient}/notes"),
            &doctor_token,
            Some(json!({"encounter_date": "2026-01-06", "body": "Follow-up."})),
        ))
        .await,
    );
    assert_eq!(
        app.call(if_match(
            send(
                "POST",
                &format!("/api/notes/{signed}/sign"),
                &doctor_token,
                None
            ),
            1
        ))
        .await
        .status,
        200
    );
    let booking = id_of(
        &app.call(send(
            "POST",
            "/api/appointments",
            &desk,
            Some(json!({"patient_id": patient, "provider_id": doctor.0,
                "starts_at": "2027-03-01T09:00:00Z", "ends_at": "2027-03-01T09:30:00Z", "kind": "follow_up"})),
        ))
        .await,
    );
    let file = id_of(&app.call(upload(patient, &doctor_token)).await);
    let grant = id_of(
        &app.call(send(
            "POST",
            &format!("/api/patients/{patient}/break-glass"),
            &other_token,
            Some(json!({"reason": "unconscious in the emergency room"})),
        ))
        .await,
    );
    let block = id_of(
        &app.call(send(
            "POST",
            "/api/security/blocks",
            &officer,
            Some(
                json!({"network": "198.51.100.9", "reason": "a scanner seen twice", "minutes": 60}),
            ),
        ))
        .await,
    );
    let watched = app
        .call(send(
            "PUT",
            &format!("/api/security/watched-patients/{patient}"),
            &officer,
            Some(json!({"label": "employee", "reason": "works at the front desk"})),
        ))
        .await;
    assert_eq!(watched.status, 204);
    // The lifecycle: a hold to release, two pending erasures (one to approve, one to reject) of
    // patients the desk registered, one of them with a stored file.
    let (_, records) = member(&app, "records.manager", &["RecordsManager"]).await;
    let mut doomed = Vec::new();
    for family in ["Erased", "Rejected"] {
        doomed.push(id_of(
            &app.call(send(
                "POST",
                "/api/patients",
                &desk,
                Some(json!({"given_name": "Ann", "family_name": family, "date_of_birth": "1970-01-02", "sex": "female"})),
            ))
            .await,
        ));
    }
    id_of(&app.call(upload(doomed[0], &desk)).await);
    let hold = id_of(
        &app.call(send(
            "POST",
            "/api/lifecycle/holds",
            &records,
            Some(json!({"scope": "patients", "patient_ids": [patient], "reason": "litigation", "case_reference": "CV-1"})),
        ))
        .await,
    );
    let mut erasures = Vec::new();
    for target in &doomed {
        erasures.push(id_of(
            &app.call(send(
                "POST",
                "/api/lifecycle/erasures",
                &records,
                Some(json!({"patient_id": target, "basis": "court_order", "reason": "court order 12"})),
            ))
            .await,
        ));
    }
    // A Part 2 consent to revoke.
    let consent = id_of(
        &app.call(send(
            "POST",
            &format!("/api/patients/{patient}/consents"),
            &officer,
            Some(
                json!({"kind": "part2_disclosure", "recipient": "Riverside Recovery",
                "purpose": "treatment", "signed_on": "2026-01-05", "expires_on": crate::consents::next_year()}),
            ),
        ))
        .await,
    );
    let mut alerts = Vec::new();
    for n in 0..2 {
        let mut conn = pool.acquire().await.unwrap();
        let alert = clinicd_secops::alerts::NewAlert {
            rule: "volume".into(),
            severity: clinicd_secops::alerts::Severity::High,
            dedup_key: format!("test:{n}"),
            subject_user: Some(doctor.0),
            subject_ip: None,
            summary: "a test alert".into(),
            evidence: json!({}),
        };
        let raised = clinicd_secops::alerts::raise(
            &mut conn,
            &alert,
            clinicd_secops::alerts::Channels::default(),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
        alerts.push(raised.id);
    }
    let role = app
        .call(send(
            "POST",
            "/api/admin/roles",
            &admin,
            Some(json!({"name": "Auditor", "permissions": ["audit:read"]})),
        ))
        .await;
    assert_eq!(role.status, 201);
    let approve_me = id_of(
        &app.call(send(
            "PUT",
            &format!("/api/admin/users/{}/roles", reader.0),
            &admin,
            Some(json!({"roles": ["ReadOnly", "Provider"]})),
        ))
        .await,
    );
    let reject_me = id_of(
        &app.call(send(
            "POST",
            &format!("/api/admin/users/{}/enable", other_doctor.0),
            &admin,
            None,
        ))
        .await,
    );
    let device = app
        .state
        .identity
        .devices
        .trust(
            &pool,
            clinicd_identity::users::UserId(mfa_user),
            Some("test"),
        )
        .await
        .unwrap();
    let other_session = app
        .state
        .identity
        .sessions
        .start(doctor, false, &Default::default())
        .await
        .unwrap();
    let refresh_token = other_session.refresh_token.expose_secret().to_owned();
    let second_session = other_session.session_id;
    // A pending TOTP enrolment for the confirm route.
    let mut tx = pool.begin().await.unwrap();
    let enrolment = app
        .state
        .identity
        .mfa
        .begin(&mut tx, desk_id, "front.desk")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let pending_secret = enrolment.secret_base32.expose_secret().to_owned();
    let mfa_login =
        clinicd_test_support::session_token(&app, clinicd_identity::users::UserId(mfa_user)).await;
    let challenge = mfa_challenge(&app, "dr.mfa").await;
    let send_challenge = mfa_challenge(&app, "dr.mfa").await;

    // Each changing route, ready to succeed, with the state it may move on its own.
    let login_counter: &[&str] = &["login_attempts"];
    let used_code: &[&str] = &["mfa_totp", "mfa_challenges", "login_attempts"];
    let used_backup_code: &[&str] = &["mfa_backup_codes"];
    // A new patient's key is made before the transaction opens (key work never holds the
    // transaction's connection): it is left with nothing under it, like a key of an erased
    // patient.
    let new_subject_key: &[&str] = &["subject_keys"];
    let requests: Vec<(&str, &str, TestRequest, &[&str])> = vec![
        (
            "POST",
            "/api/auth/login",
            json_post(
                "/api/auth/login",
                json!({"username": "front.desk", "password": PASSWORD}),
            ),
            login_counter,
        ),
        (
            "POST",
            "/api/auth/refresh",
            json_post("/api/auth/refresh", json!({"refresh_token": refresh_token})),
            &[],
        ),
        (
            "POST",
            "/api/auth/logout",
            send("POST", "/api/auth/logout", &doctor_token, None),
            &[],
        ),
        (
            "POST",
            "/api/auth/password",
            send(
                "POST",
                "/api/auth/password",
                &doctor_token,
                Some(
                    json!({"current_password": PASSWORD, "new_password": "a much longer new passphrase"}),
                ),
            ),
            &[],
        ),
        (
            "DELETE",
            "/api/auth/sessions/{id}",
            send(
                "DELETE",
                &format!("/api/auth/sessions/{second_session}"),
                &doctor_token,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/auth/mfa",
            json_post(
                "/api/auth/mfa",
                json!({"challenge_token": challenge, "code": totp(&mfa_secret, 1)}),
            ),
            used_code,
        ),
        (
            "POST",
            "/api/auth/mfa/send",
            json_post(
                "/api/auth/mfa/send",
                json!({"challenge_token": send_challenge}),
            ),
            &[],
        ),
        (
            "POST",
            "/api/auth/mfa/totp",
            send("POST", "/api/auth/mfa/totp", &desk, None),
            &[],
        ),
        (
            "POST",
            "/api/auth/mfa/totp/confirm",
            send(
                "POST",
                "/api/auth/mfa/totp/confirm",
                &desk,
                Some(json!({"code": totp(&pending_secret, 0)})),
            ),
            &[],
        ),
        (
            "POST",
            "/api/auth/mfa/disable",
            send(
                "POST",
                "/api/auth/mfa/disable",
                &mfa_login,
                Some(json!({"password": PASSWORD, "code": backup_codes[0]})),
            ),
            used_backup_code,
        ),
        (
            "POST",
            "/api/auth/mfa/backup-codes",
            send(
                "POST",
                "/api/auth/mfa/backup-codes",
                &mfa_login,
                Some(json!({"code": backup_codes[1]})),
            ),
            used_backup_code,
        ),
        (
            "DELETE",
            "/api/auth/devices/{id}",
            send(
                "DELETE",
                &format!("/api/auth/devices/{}", device.id),
                &mfa_login,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/admin/users",
            send(
                "POST",
                "/api/admin/users",
                &admin,
                Some(
                    json!({"username": "new.hire", "email": "new.hire@clinic.example", "display_name": "New Hire", "roles": ["ReadOnly"]}),
                ),
            ),
            &[],
        ),
        (
            "PATCH",
            "/api/admin/users/{id}",
            send(
                "PATCH",
                &format!("/api/admin/users/{}", reader.0),
                &admin,
                Some(json!({"display_name": "Renamed"})),
            ),
            &[],
        ),
        (
            "PUT",
            "/api/admin/users/{id}/roles",
            send(
                "PUT",
                &format!("/api/admin/users/{}/roles", reader.0),
                &admin,
                Some(json!({"roles": []})),
            ),
            &[],
        ),
        (
            "POST",
            "/api/admin/users/{id}/disable",
            send(
                "POST",
                &format!("/api/admin/users/{}/disable", reader.0),
                &admin,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/admin/users/{id}/enable",
            send(
                "POST",
                &format!("/api/admin/users/{}/enable", reader.0),
                &admin,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/admin/users/{id}/unlock",
            send(
                "POST",
                &format!("/api/admin/users/{}/unlock", reader.0),
                &admin,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/admin/users/{id}/reset-password",
            send(
                "POST",
                &format!("/api/admin/users/{}/reset-password", reader.0),
                &admin,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/admin/users/{id}/reset-mfa",
            send(
                "POST",
                &format!("/api/admin/users/{}/reset-mfa", reader.0),
                &admin,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/admin/users/{id}/revoke-sessions",
            send(
                "POST",
                &format!("/api/admin/users/{}/revoke-sessions", reader.0),
                &admin,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/admin/proposals/{id}/approve",
            send(
                "POST",
                &format!("/api/admin/proposals/{approve_me}/approve"),
                &second,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/admin/proposals/{id}/reject",
            send(
                "POST",
                &format!("/api/admin/proposals/{reject_me}/reject"),
                &second,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/admin/roles",
            send(
                "POST",
                "/api/admin/roles",
                &admin,
                Some(json!({"name": "Billing", "permissions": ["audit:read"]})),
            ),
            &[],
        ),
        (
            "PUT",
            "/api/admin/roles/{name}",
            send(
                "PUT",
                "/api/admin/roles/Auditor",
                &admin,
                Some(json!({"permissions": ["audit:read", "security:read"]})),
            ),
            &[],
        ),
        (
            "DELETE",
            "/api/admin/roles/{name}",
            send("DELETE", "/api/admin/roles/Auditor", &admin, None),
            &[],
        ),
        (
            "POST",
            "/api/patients",
            send(
                "POST",
                "/api/patients",
                &desk,
                Some(
                    json!({"given_name": "Alan", "family_name": "Turing", "date_of_birth": "1970-06-23", "sex": "male"}),
                ),
            ),
            new_subject_key,
        ),
        (
            "PATCH",
            "/api/patients/{id}",
            if_match(
                send(
                    "PATCH",
                    &format!("/api/patients/{patient}"),
                    &desk,
                    Some(json!({"phone": "+15551234567"})),
                ),
                1,
            ),
            &[],
        ),
        (
            "POST",
            "/api/appointments",
            send(
                "POST",
                "/api/appointments",
                &desk,
                Some(
                    json!({"patient_id": patient, "provider_id": doctor.0, "starts_at": "2027-03-02T09:00:00Z", "ends_at": "2027-03-02T09:30:00Z", "kind": "annual"}),
                ),
            ),
            &[],
        ),
        (
            "PATCH",
            "/api/appointments/{id}",
            if_match(
                send(
                    "PATCH",
                    &format!("/api/appointments/{booking}"),
                    &desk,
                    Some(json!({"status": "arrived"})),
                ),
                1,
            ),
            &[],
        ),
        (
            "POST",
            "/api/patients/{id}/notes",
            send(
                "POST",
                &format!("/api/patients/{patient}/notes"),
                &doctor_token,
                Some(json!({"encounter_date": "2026-01-07", "body": "Better."})),
            ),
            &[],
        ),
        (
            "PATCH",
            "/api/notes/{id}",
            if_match(
                send(
                    "PATCH",
                    &format!("/api/notes/{draft}"),
                    &doctor_token,
                    Some(json!({"body": "Seen for a dry cough."})),
                ),
                1,
            ),
            &[],
        ),
        (
            "POST",
            "/api/notes/{id}/sign",
            if_match(
                send(
                    "POST",
                    &format!("/api/notes/{draft}/sign"),
                    &doctor_token,
                    None,
                ),
                1,
            ),
            &[],
        ),
        (
            "POST",
            "/api/notes/{id}/amendments",
            send(
                "POST",
                &format!("/api/notes/{signed}/amendments"),
                &doctor_token,
                Some(json!({"body": "Correction: two weeks."})),
            ),
            &[],
        ),
        (
            "POST",
            "/api/patients/{id}/files",
            upload(patient, &doctor_token),
            &[],
        ),
        (
            "PUT",
            "/api/patients/{id}/label",
            send(
                "PUT",
                &format!("/api/patients/{patient}/label"),
                &desk,
                Some(json!({"confidentiality": "R", "reason": "the patient asked for privacy"})),
            ),
            &[],
        ),
        (
            "PUT",
            "/api/files/{id}/label",
            send(
                "PUT",
                &format!("/api/files/{file}/label"),
                &doctor_token,
                Some(json!({"confidentiality": "R", "reason": "the patient asked for privacy"})),
            ),
            &[],
        ),
        (
            "DELETE",
            "/api/files/{id}",
            send("DELETE", &format!("/api/files/{file}"), &doctor_token, None),
            &[],
        ),
        (
            "POST",
            "/api/patients/{id}/care-team",
            send(
                "POST",
                &format!("/api/patients/{patient}/care-team"),
                &desk,
                Some(json!({"user_id": reader.0, "reason": "covering the clinic this week"})),
            ),
            &[],
        ),
        (
            "DELETE",
            "/api/patients/{id}/care-team/{user_id}",
            send(
                "DELETE",
                &format!("/api/patients/{patient}/care-team/{}", doctor.0),
                &desk,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/patients/{id}/break-glass",
            send(
                "POST",
                &format!("/api/patients/{patient}/break-glass"),
                &other_token,
                Some(json!({"reason": "called in for an emergency consult"})),
            ),
            &[],
        ),
        (
            "POST",
            "/api/security/alerts/{id}/acknowledge",
            send(
                "POST",
                &format!("/api/security/alerts/{}/acknowledge", alerts[0]),
                &officer,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/security/alerts/{id}/resolve",
            send(
                "POST",
                &format!("/api/security/alerts/{}/resolve", alerts[1]),
                &officer,
                Some(json!({"resolution": "a test, nothing more"})),
            ),
            &[],
        ),
        (
            "POST",
            "/api/security/blocks",
            send(
                "POST",
                "/api/security/blocks",
                &officer,
                Some(
                    json!({"network": "203.0.113.0/24", "reason": "scans from this range", "minutes": 30}),
                ),
            ),
            &[],
        ),
        (
            "POST",
            "/api/security/blocks/{id}/lift",
            send(
                "POST",
                &format!("/api/security/blocks/{block}/lift"),
                &officer,
                Some(json!({"reason": "the scanner was ours"})),
            ),
            &[],
        ),
        (
            "PUT",
            "/api/security/watched-patients/{id}",
            send(
                "PUT",
                &format!("/api/security/watched-patients/{patient}"),
                &officer,
                Some(json!({"label": "vip", "reason": "a board member's relative"})),
            ),
            &[],
        ),
        (
            "DELETE",
            "/api/security/watched-patients/{id}",
            send(
                "DELETE",
                &format!("/api/security/watched-patients/{patient}"),
                &officer,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/security/break-glass/{id}/review",
            send(
                "POST",
                &format!("/api/security/break-glass/{grant}/review"),
                &officer,
                None,
            ),
            &[],
        ),
        (
            "PUT",
            "/api/notes/{id}/label",
            send(
                "PUT",
                &format!("/api/notes/{signed}/label"),
                &doctor_token,
                Some(json!({"confidentiality": "R", "reason": "the patient asked for privacy"})),
            ),
            &[],
        ),
        (
            "POST",
            "/api/patients/{id}/consents",
            send(
                "POST",
                &format!("/api/patients/{patient}/consents"),
                &officer,
                Some(
                    json!({"kind": "part2_disclosure", "recipient": "Hope House",
                    "purpose": "payment", "signed_on": "2026-01-05", "expires_on": crate::consents::next_year()}),
                ),
            ),
            &[],
        ),
        (
            "POST",
            "/api/consents/{id}/revoke",
            send(
                "POST",
                &format!("/api/consents/{consent}/revoke"),
                &officer,
                Some(json!({"reason": "the patient revoked it in writing"})),
            ),
            &[],
        ),
        (
            "POST",
            "/api/lifecycle/holds",
            send(
                "POST",
                "/api/lifecycle/holds",
                &records,
                Some(
                    json!({"scope": "all", "reason": "regulator's inquiry", "case_reference": "OCR-1"}),
                ),
            ),
            &[],
        ),
        (
            "POST",
            "/api/lifecycle/holds/{id}/release",
            send(
                "POST",
                &format!("/api/lifecycle/holds/{hold}/release"),
                &records,
                Some(json!({"reason": "settled"})),
            ),
            &[],
        ),
        (
            "POST",
            "/api/lifecycle/erasures",
            send(
                "POST",
                "/api/lifecycle/erasures",
                &officer,
                Some(
                    json!({"patient_id": patient, "basis": "court_order", "reason": "court order 13"}),
                ),
            ),
            &[],
        ),
        (
            "POST",
            "/api/lifecycle/erasures/{id}/approve",
            send(
                "POST",
                &format!("/api/lifecycle/erasures/{}/approve", erasures[0]),
                &officer,
                None,
            ),
            &[],
        ),
        (
            "POST",
            "/api/lifecycle/erasures/{id}/reject",
            send(
                "POST",
                &format!("/api/lifecycle/erasures/{}/reject", erasures[1]),
                &officer,
                Some(json!({"reason": "not ordered after all"})),
            ),
            &[],
        ),
    ];

    let declared: BTreeSet<(String, &str)> = ROUTES
        .iter()
        .filter(|r| r.audit.is_some_and(|a| a.changes))
        .map(|r| (r.method.to_string(), r.path))
        .collect();
    let tried: BTreeSet<(String, &str)> = requests
        .iter()
        .map(|(method, path, _, _)| ((*method).to_owned(), *path))
        .collect();
    assert_eq!(tried, declared, "every changing route is tried");

    for (method, path, request, moves) in requests {
        let before = clinicd_test_support::table_digests(&pool, moves).await;
        let stored = objects(&dir);
        break_the_trail(&pool).await;
        let response = app.call(request).await;
        mend_the_trail(&pool).await;
        let problem = response.assert_problem(503, "service_unavailable");
        assert!(
            !String::from_utf8_lossy(&response.body).contains("trail refuses"),
            "{method} {path}: {problem}"
        );
        assert!(
            response.headers.get("set-cookie").is_none(),
            "{method} {path}: no session handed out"
        );
        assert_eq!(
            clinicd_test_support::table_digests(&pool, moves).await,
            before,
            "{method} {path} changed the database"
        );
        assert_eq!(objects(&dir), stored, "{method} {path} left an object");
    }
}

//! Care teams and break-the-glass, as a clinic uses them: staff put a provider on a patient's
//! team; a provider outside it breaks the glass with a reason, reaches the patient until the
//! grant expires (on an injected clock), and a privacy officer finds it in the review list and
//! in the audit trail.

use std::sync::Arc;

use clinicd_identity::clock::ManualClock;
use clinicd_rbac::Reach;
use clinicd_test_support::{TestApp, identity_with, member, roomy_settings as settings, send};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

async fn patient(app: &TestApp) -> Uuid {
    clinicd_test_support::unassigned_patient(app, ("Doe", "Jane"), "1980-01-02", None).await
}

fn app_with_clock(pool: &PgPool) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let rbac_clock = clock.clone();
    let identity = identity_with(pool.clone(), move |mut identity| {
        // Only RBAC reads this clock; sessions keep their own, so tokens stay valid.
        identity.clock = rbac_clock;
        identity
    });
    (
        TestApp::with_identity(settings(), pool.clone(), identity),
        clock,
    )
}

const REASON: &str = "Patient unconscious in the ER; the on-call team is unreachable";

#[sqlx::test(migrations = "../../migrations")]
async fn staff_manage_care_teams_and_only_the_team_reaches_the_patient(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let (doctor, doctor_token) = member(&app, "dr.grey", &["Provider"]).await;
    let (other, _) = member(&app, "dr.shepherd", &["Provider"]).await;
    let mine = patient(&app).await;
    let theirs = patient(&app).await;

    let team = |p: Uuid| format!("/api/patients/{p}/care-team");
    let assigned = app
        .call(send(
            "POST",
            &team(mine),
            &desk,
            Some(json!({"user_id": doctor.0, "reason": "covering this patient's care"})),
        ))
        .await;
    assert_eq!(assigned.status, 201);
    let again = app
        .call(send(
            "POST",
            &team(mine),
            &desk,
            Some(json!({"user_id": doctor.0, "reason": "covering this patient's care"})),
        ))
        .await;
    assert_eq!(again.status, 200, "assigning twice changes nothing");
    app.call(send(
        "POST",
        &team(theirs),
        &desk,
        Some(json!({"user_id": other.0, "reason": "covering this patient's care"})),
    ))
    .await;

    let members = app.call(send("GET", &team(mine), &desk, None)).await.json();
    assert_eq!(members.as_array().unwrap().len(), 1);
    assert_eq!(members[0]["username"], "dr.grey");

    assert_eq!(
        app.state.rbac.reach(doctor, mine).await.unwrap(),
        Reach::CareTeam
    );
    assert_eq!(
        app.state.rbac.reach(doctor, theirs).await.unwrap(),
        Reach::None
    );

    // Search and list queries use the same rule in SQL: the function `patient_reach`.
    let reachable: Vec<Uuid> = sqlx::query_scalar(
        "SELECT p.id FROM patients p WHERE patient_reach($1, p.id, $2) IS NOT NULL ORDER BY p.id",
    )
    .bind(doctor.0)
    .bind(chrono::Utc::now())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(reachable, vec![mine]);

    // Providers do not manage teams.
    app.call(send(
        "POST",
        &team(theirs),
        &doctor_token,
        Some(json!({"user_id": doctor.0, "reason": "covering this patient's care"})),
    ))
    .await
    .assert_problem(403, "permission_denied");

    // Bad input.
    let missing = Uuid::now_v7();
    app.call(send(
        "POST",
        &team(missing),
        &desk,
        Some(json!({"user_id": doctor.0, "reason": "covering this patient's care"})),
    ))
    .await
    .assert_problem(404, "not_found");
    app.call(send("GET", &team(missing), &desk, None))
        .await
        .assert_problem(404, "not_found");
    let problem = app
        .call(send(
            "POST",
            &team(mine),
            &desk,
            Some(json!({"user_id": Uuid::now_v7(), "reason": "covering this patient's care"})),
        ))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(problem["field"], "user_id");
    app.call(send(
        "POST",
        &team(mine),
        &desk,
        Some(json!({"user_id": "dr.grey", "reason": "covering this patient's care"})),
    ))
    .await
    .assert_problem(400, "invalid_body");
    app.call(send(
        "POST",
        &team(mine),
        &desk,
        Some(
            json!({"user_id": doctor.0, "role": "lead", "reason": "covering this patient's care"}),
        ),
    ))
    .await
    .assert_problem(400, "unknown_field");
    app.call(send(
        "GET",
        "/api/patients/not-a-uuid/care-team",
        &desk,
        None,
    ))
    .await
    .assert_problem(400, "invalid_parameters");

    let removed = app
        .call(send(
            "DELETE",
            &format!("{}/{}", team(mine), doctor.0),
            &desk,
            None,
        ))
        .await;
    assert_eq!(removed.status, 204);
    app.call(send(
        "DELETE",
        &format!("{}/{}", team(mine), doctor.0),
        &desk,
        None,
    ))
    .await
    .assert_problem(404, "not_found");
    assert_eq!(
        app.state.rbac.reach(doctor, mine).await.unwrap(),
        Reach::None
    );

    let audited: Vec<(String, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT action, patient_id, resource_id FROM audit_events \
         WHERE resource_type = 'care_team' AND outcome = 'success' AND http_method <> 'GET' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 4, "{audited:?}");
    assert_eq!(
        audited[3],
        ("delete".to_owned(), Some(mine), Some(doctor.0.to_string()))
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn breaking_the_glass_grants_time_limited_access_that_is_audited_and_reviewed(pool: PgPool) {
    let (app, clock) = app_with_clock(&pool);
    let (doctor, doctor_token) = member(&app, "dr.grey", &["Provider"]).await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let (_, desk) = member(&app, "front.desk", &["Staff"]).await;
    let stranger = patient(&app).await;
    let glass = format!("/api/patients/{stranger}/break-glass");

    // Refused: a short reason, a patient that does not exist, a role without the permission.
    let problem = app
        .call(send(
            "POST",
            &glass,
            &doctor_token,
            Some(json!({"reason": "emergency"})),
        ))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(problem["field"], "reason");
    app.call(send(
        "POST",
        &format!("/api/patients/{}/break-glass", Uuid::now_v7()),
        &doctor_token,
        Some(json!({"reason": REASON})),
    ))
    .await
    .assert_problem(404, "not_found");
    app.call(send("POST", &glass, &desk, Some(json!({"reason": REASON}))))
        .await
        .assert_problem(403, "permission_denied");
    app.call(send("POST", &glass, &doctor_token, Some(json!({}))))
        .await
        .assert_problem(400, "invalid_body");
    assert_eq!(
        app.state.rbac.reach(doctor, stranger).await.unwrap(),
        Reach::None
    );

    let granted = app
        .call(send(
            "POST",
            &glass,
            &doctor_token,
            Some(json!({"reason": REASON})),
        ))
        .await;
    assert_eq!(granted.status, 201);
    let grant = granted.json();
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    let granted_at: chrono::DateTime<chrono::Utc> =
        grant["granted_at"].as_str().unwrap().parse().unwrap();
    let expires_at: chrono::DateTime<chrono::Utc> =
        grant["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires_at - granted_at, chrono::Duration::minutes(60));
    assert!(matches!(
        app.state.rbac.reach(doctor, stranger).await.unwrap(),
        Reach::BreakGlass
    ));

    // The reason is stored only as a ciphertext.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT reason FROM break_glass_grants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("unconscious"));

    // Its own audit action, naming the patient and the grant.
    let (outcome, patient_id, resource_id, actor): (
        String,
        Option<Uuid>,
        Option<String>,
        Option<Uuid>,
    ) = sqlx::query_as(
        "SELECT outcome, patient_id, resource_id, actor_user_id FROM audit_events \
             WHERE action = 'break_glass' AND outcome = 'success'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(outcome, "success");
    assert_eq!(patient_id, Some(stranger));
    assert_eq!(resource_id.as_deref(), Some(grant_id.as_str()));
    assert_eq!(actor, Some(doctor.0));
    // And a security event, which the forwarder carries into the trail.
    let (kind, user): (String, Option<Uuid>) =
        sqlx::query_as("SELECT kind, user_id FROM security_events WHERE kind = 'break_glass'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((kind.as_str(), user), ("break_glass", Some(doctor.0)));
    let forwarded = clinicd_identity::security_events::forward(&pool, &app.state.identity.keyring)
        .await
        .unwrap();
    assert!(forwarded >= 1);
    let in_trail: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'security_event' AND metadata->>'kind' = 'break_glass'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(in_trail, 1);

    // The privacy officer reviews it; the provider may not read the list.
    let list = app
        .call(send("GET", "/api/security/break-glass", &officer, None))
        .await;
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list[0]["reason"], REASON);
    assert_eq!(list[0]["username"], "dr.grey");
    assert_eq!(list[0]["active"], true);
    app.call(send(
        "GET",
        "/api/security/break-glass",
        &doctor_token,
        None,
    ))
    .await
    .assert_problem(403, "permission_denied");
    app.call(send(
        "GET",
        "/api/security/break-glass?limit=0",
        &officer,
        None,
    ))
    .await
    .assert_problem(400, "invalid_parameters");

    // An hour later the grant has lapsed.
    clock.advance(chrono::Duration::minutes(61));
    assert_eq!(
        app.state.rbac.reach(doctor, stranger).await.unwrap(),
        Reach::None
    );
    let list = app
        .call(send("GET", "/api/security/break-glass", &officer, None))
        .await
        .json();
    assert_eq!(list[0]["active"], false);

    let reviewed = app
        .call(send(
            "POST",
            &format!("/api/security/break-glass/{grant_id}/review"),
            &officer,
            None,
        ))
        .await;
    assert_eq!(reviewed.status, 204);
    let pending = app
        .call(send("GET", "/api/security/break-glass", &officer, None))
        .await
        .json();
    assert_eq!(
        pending.as_array().unwrap().len(),
        0,
        "reviewed grants leave the pending list"
    );
    let all = app
        .call(send(
            "GET",
            "/api/security/break-glass?pending=false",
            &officer,
            None,
        ))
        .await
        .json();
    assert!(all[0]["reviewed_at"].is_string());
    app.call(send(
        "POST",
        &format!("/api/security/break-glass/{}/review", Uuid::now_v7()),
        &officer,
        None,
    ))
    .await
    .assert_problem(404, "not_found");
}

#[sqlx::test(migrations = "../../migrations")]
async fn no_one_reviews_their_own_emergency_access(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let lead = app
        .call(send(
            "POST",
            "/api/admin/roles",
            &admin,
            Some(json!({"name": "LeadPhysician", "privileged": true, "permissions": ["break_glass", "security:read"]})),
        ))
        .await;
    assert_eq!(lead.status, 201, "{:?}", lead.body);
    let (_, lead) = member(&app, "dr.lead", &["LeadPhysician"]).await;
    let stranger = patient(&app).await;
    let grant = app
        .call(send(
            "POST",
            &format!("/api/patients/{stranger}/break-glass"),
            &lead,
            Some(json!({"reason": REASON})),
        ))
        .await
        .json();
    app.call(send(
        "POST",
        &format!(
            "/api/security/break-glass/{}/review",
            grant["id"].as_str().unwrap()
        ),
        &lead,
        None,
    ))
    .await
    .assert_problem(403, "own_review");
}

//! The admin API as a clinic uses it: staffing the clinic, custom roles, and every escalation
//! we know of refused, with each change audited before and after.

use actix_web::test::TestRequest;
use clinicd_test_support::{TestApp, bearer, member, roomy_settings as settings, send};
use serde_json::{Value, json};
use sqlx::PgPool;

async fn roles_of(pool: &PgPool, user: uuid::Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT role_name FROM user_roles WHERE user_id = $1 ORDER BY role_name")
        .bind(user)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_administrator_staffs_the_clinic(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let (_, second) = member(&app, "second.admin", &["Admin"]).await;

    let created = app
        .call(send(
            "POST",
            "/api/admin/users",
            &admin,
            Some(json!({"username": "dr.grey", "email": "grey@clinic.example", "display_name": "Dr Grey", "roles": ["Provider"]})),
        ))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let created = created.json();
    // A clinical role waits for a second administrator; the account exists meanwhile.
    assert_eq!(created["user"]["roles"], json!([]));
    assert_eq!(created["proposal"]["kind"], "user_roles");
    assert_eq!(created["proposal"]["status"], "pending");
    assert_eq!(created["proposal"]["payload"]["roles"], json!(["Provider"]));
    assert_eq!(created["user"]["must_change_password"], true);
    assert_eq!(created["credential_delivery"], "shown", "development mode");
    assert!(created["one_time_password"].as_str().unwrap().len() >= 20);
    assert!(created["user"].get("password_hash").is_none());
    let id = created["user"]["id"].as_str().unwrap().to_owned();
    let user = uuid::Uuid::parse_str(&id).unwrap();
    let proposal = created["proposal"]["id"].as_str().unwrap().to_owned();
    approve(&app, &admin, &proposal)
        .await
        .assert_problem(403, "own_proposal");
    assert!(roles_of(&pool, user).await.is_empty());
    let approved = approve(&app, &second, &proposal).await;
    assert_eq!(approved.status, 200, "{:?}", approved.body);
    assert_eq!(approved.json()["proposal"]["status"], "approved");
    assert_eq!(roles_of(&pool, user).await, vec!["Provider"]);
    approve(&app, &second, &proposal)
        .await
        .assert_problem(409, "proposal_decided");

    // The one-time password works once, and must be changed first.
    let login = app
        .call(clinicd_test_support::post(
            "/api/auth/login",
            &json!({"username": "dr.grey", "password": created["one_time_password"]}),
        ))
        .await;
    assert_eq!(login.status, 200);
    assert_eq!(login.json()["must_change_password"], true);

    let list = app
        .call(send("GET", "/api/admin/users?limit=1", &admin, None))
        .await
        .json();
    assert_eq!(list["users"].as_array().unwrap().len(), 1);
    let next = list["next"].as_str().unwrap();
    let rest = app
        .call(send(
            "GET",
            &format!("/api/admin/users?after={next}"),
            &admin,
            None,
        ))
        .await
        .json();
    assert_eq!(rest["users"][0]["username"], "dr.grey");

    let staffed = app
        .call(send(
            "PUT",
            &format!("/api/admin/users/{id}/roles"),
            &admin,
            Some(json!({"roles": ["Provider", "ReadOnly"]})),
        ))
        .await;
    assert_eq!(staffed.status, 202);
    let proposal = staffed.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(approve(&app, &second, &proposal).await.status, 200);
    assert_eq!(roles_of(&pool, user).await, vec!["Provider", "ReadOnly"]);

    let renamed = app
        .call(send(
            "PATCH",
            &format!("/api/admin/users/{id}"),
            &admin,
            Some(json!({"display_name": "Dr Meredith Grey"})),
        ))
        .await;
    assert_eq!(renamed.json()["display_name"], "Dr Meredith Grey");

    let disabled = app
        .call(send(
            "POST",
            &format!("/api/admin/users/{id}/disable"),
            &admin,
            None,
        ))
        .await;
    assert_eq!(disabled.status, 200);
    assert_eq!(disabled.json()["status"], "disabled");
    // Enabling an account that reaches clinical data gives access back: two people.
    let enabled = app
        .call(send(
            "POST",
            &format!("/api/admin/users/{id}/enable"),
            &admin,
            None,
        ))
        .await;
    assert_eq!(enabled.status, 202);
    let proposal = enabled.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(approve(&app, &second, &proposal).await.status, 200);
    for (action, field, value) in [
        ("unlock", "status", json!("active")),
        ("revoke-sessions", "status", json!("active")),
        ("reset-mfa", "mfa_enabled", json!(false)),
    ] {
        let response = app
            .call(send(
                "POST",
                &format!("/api/admin/users/{id}/{action}"),
                &admin,
                None,
            ))
            .await;
        assert_eq!(response.status, 200, "{action}");
        assert_eq!(response.json()[field], value, "{action}");
    }
    let reset = app
        .call(send(
            "POST",
            &format!("/api/admin/users/{id}/reset-password"),
            &admin,
            None,
        ))
        .await;
    assert_eq!(reset.status, 200);
    assert_eq!(reset.json()["credential_delivery"], "shown");
    assert!(reset.json()["one_time_password"].as_str().unwrap().len() >= 20);
}

async fn approve(app: &TestApp, token: &str, proposal: &str) -> clinicd_test_support::TestResponse {
    app.call(send(
        "POST",
        &format!("/api/admin/proposals/{proposal}/approve"),
        token,
        None,
    ))
    .await
}

#[sqlx::test(migrations = "../../migrations")]
async fn disabling_a_user_ends_their_access_at_once(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let (desk, desk_token) = member(&app, "front.desk", &["Staff"]).await;
    let me = || bearer(TestRequest::get().uri("/api/auth/me"), &desk_token);
    assert_eq!(app.call(me()).await.status, 200);
    let disabled = app
        .call(send(
            "POST",
            &format!("/api/admin/users/{}/disable", desk.0),
            &admin,
            None,
        ))
        .await;
    assert_eq!(disabled.status, 200);
    app.call(me()).await.assert_problem(401, "unauthenticated");
}

#[sqlx::test(migrations = "../../migrations")]
async fn bad_input_is_refused_naming_the_field_and_nothing_is_written(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let users_before: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    for (body, field) in [
        (
            json!({"username": "x", "email": "a@b.example", "display_name": "A"}),
            "username",
        ),
        (
            json!({"username": "okname", "email": "not-an-email", "display_name": "A"}),
            "email",
        ),
        (
            json!({"username": "okname", "email": "a@b.example", "display_name": ""}),
            "display_name",
        ),
        (
            json!({"username": "okname", "email": "a@b.example", "display_name": "A", "roles": ["Wizard"]}),
            "roles",
        ),
    ] {
        let problem = app
            .call(send("POST", "/api/admin/users", &admin, Some(body)))
            .await
            .assert_problem(422, "invalid_field");
        assert_eq!(problem["field"], field);
    }
    app.call(send(
        "POST",
        "/api/admin/users",
        &admin,
        Some(json!({"username": "okname", "email": "a@b.example", "display_name": "A", "status": "active"})),
    ))
    .await
    .assert_problem(400, "unknown_field");
    app.call(send(
        "POST",
        "/api/admin/users",
        &admin,
        Some(json!({"username": 5})),
    ))
    .await
    .assert_problem(400, "invalid_body");
    let taken =
        json!({"username": "chief.admin", "email": "other@clinic.example", "display_name": "A"});
    app.call(send("POST", "/api/admin/users", &admin, Some(taken)))
        .await
        .assert_problem(409, "conflict");
    app.call(send("GET", "/api/admin/users/not-a-uuid", &admin, None))
        .await
        .assert_problem(400, "invalid_parameters");
    app.call(send("GET", "/api/admin/users?limit=0", &admin, None))
        .await
        .assert_problem(400, "invalid_parameters");
    app.call(send(
        "GET",
        &format!("/api/admin/users/{}", uuid::Uuid::now_v7()),
        &admin,
        None,
    ))
    .await
    .assert_problem(404, "not_found");
    let users_after: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users_before, users_after);
}

#[sqlx::test(migrations = "../../migrations")]
async fn no_one_changes_their_own_roles_or_account(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (admin_id, admin) = member(&app, "chief.admin", &["Admin"]).await;
    app.call(send(
        "PUT",
        &format!("/api/admin/users/{}/roles", admin_id.0),
        &admin,
        Some(json!({"roles": ["Admin", "Provider"]})),
    ))
    .await
    .assert_problem(403, "own_account");
    for action in ["disable", "reset-password", "reset-mfa", "revoke-sessions"] {
        app.call(send(
            "POST",
            &format!("/api/admin/users/{}/{action}", admin_id.0),
            &admin,
            None,
        ))
        .await
        .assert_problem(403, "own_account");
    }
    assert_eq!(roles_of(&pool, admin_id.0).await, vec!["Admin"]);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_roles_field_in_a_profile_change_is_refused_not_applied(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let (desk, _) = member(&app, "front.desk", &["Staff"]).await;
    app.call(send(
        "PATCH",
        &format!("/api/admin/users/{}", desk.0),
        &admin,
        Some(json!({"display_name": "Front Desk", "roles": ["Admin"]})),
    ))
    .await
    .assert_problem(400, "unknown_field");
    assert_eq!(roles_of(&pool, desk.0).await, vec!["Staff"]);
    let name: String = sqlx::query_scalar("SELECT display_name FROM users WHERE id = $1")
        .bind(desk.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "Test User", "nothing of the request was applied");
}

/// A help-desk role that may manage users and roles but holds no clinical or audit permission.
async fn help_desk(app: &TestApp, admin: &str) -> (clinicd_identity::users::UserId, String) {
    let created = app
        .call(send(
            "POST",
            "/api/admin/roles",
            admin,
            Some(json!({"name": "HelpDesk", "description": "Password resets", "permissions": ["user:manage", "role:manage"]})),
        ))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    member(app, "help.desk", &["HelpDesk"]).await
}

#[sqlx::test(migrations = "../../migrations")]
async fn no_one_grants_a_permission_they_do_not_hold(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (admin_id, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let (_, desk) = help_desk(&app, &admin).await;
    let (nurse, _) = member(&app, "nurse.joy", &["ReadOnly"]).await;

    let (starter, _) = member(&app, "new.starter", &[]).await;

    // Assigning a role that reaches further than the help desk.
    let problem = app
        .call(send(
            "PUT",
            &format!("/api/admin/users/{}/roles", starter.0),
            &desk,
            Some(json!({"roles": ["Admin"]})),
        ))
        .await
        .assert_problem(403, "permission_not_held");
    assert!(problem["detail"].as_str().unwrap().contains("audit:read"));
    assert!(roles_of(&pool, starter.0).await.is_empty());
    // Taking away one it could not have given.
    app.call(send(
        "PUT",
        &format!("/api/admin/users/{}/roles", nurse.0),
        &desk,
        Some(json!({"roles": []})),
    ))
    .await
    .assert_problem(403, "permission_not_held");
    assert_eq!(roles_of(&pool, nurse.0).await, vec!["ReadOnly"]);

    // Creating an account with such a role writes no account.
    app.call(send(
        "POST",
        "/api/admin/users",
        &desk,
        Some(json!({"username": "sock.puppet", "email": "p@clinic.example", "display_name": "P", "roles": ["Provider"]})),
    ))
    .await
    .assert_problem(403, "permission_not_held");
    let puppets: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE username = 'sock.puppet'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(puppets, 0);

    // Making a role with permissions it does not hold, or giving itself more.
    app.call(send(
        "POST",
        "/api/admin/roles",
        &desk,
        Some(json!({"name": "Snoop", "permissions": ["note:read"]})),
    ))
    .await
    .assert_problem(403, "permission_not_held");
    app.call(send(
        "POST",
        "/api/admin/roles",
        &desk,
        Some(json!({"name": "Snoop", "permissions": [], "delegable": ["note:read"]})),
    ))
    .await
    .assert_problem(403, "permission_not_held");
    app.call(send(
        "PUT",
        "/api/admin/roles/HelpDesk",
        &desk,
        Some(json!({"permissions": ["user:manage", "role:manage", "audit:read"]})),
    ))
    .await
    .assert_problem(403, "permission_not_held");
    // Nor change a role it holds, even within what it holds.
    app.call(send(
        "PUT",
        "/api/admin/roles/HelpDesk",
        &desk,
        Some(json!({"permissions": ["user:manage"]})),
    ))
    .await
    .assert_problem(403, "own_account");

    // Resetting an administrator's password would be a way to become one.
    app.call(send(
        "POST",
        &format!("/api/admin/users/{}/reset-password", admin_id.0),
        &desk,
        None,
    ))
    .await
    .assert_problem(403, "permission_not_held");

    // What it does hold, it may grant.
    let granted = app
        .call(send(
            "POST",
            "/api/admin/roles",
            &desk,
            Some(json!({"name": "UserClerk", "permissions": ["user:manage"]})),
        ))
        .await;
    assert_eq!(granted.status, 201);
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_last_active_administrator_cannot_be_removed(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (first, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let (second, _) = member(&app, "second.admin", &["Admin"]).await;
    // A deputy as powerful as an administrator, without the Admin role.
    let deputy = app
        .call(send(
            "POST",
            "/api/admin/roles",
            &admin,
            Some(json!({
                "name": "Deputy",
                "privileged": true,
                "permissions": ["audit:read", "user:manage", "role:manage", "security:read", "keys:manage"],
                "delegable": ["patient:read", "patient:write", "patient:read_identifiers", "care_team:manage",
                              "appointment:read", "appointment:write", "note:read", "note:write", "file:upload",
                              "file:read", "audit:read_values", "break_glass", "export", "lifecycle:hold",
                              "lifecycle:erase", "restricted:psychotherapy", "restricted:substance_use",
                              "restricted:hiv", "restricted:reproductive", "restricted:other"]
            })),
        ))
        .await;
    assert_eq!(deputy.status, 201, "{:?}", deputy.body);
    let (_, deputy) = member(&app, "deputy", &["Deputy"]).await;

    // Two administrators: one may go.
    let removed = app
        .call(send(
            "PUT",
            &format!("/api/admin/users/{}/roles", second.0),
            &admin,
            Some(json!({"roles": []})),
        ))
        .await;
    assert_eq!(removed.status, 200);
    // Now the first is the last.
    app.call(send(
        "PUT",
        &format!("/api/admin/users/{}/roles", first.0),
        &deputy,
        Some(json!({"roles": ["Provider"]})),
    ))
    .await
    .assert_problem(409, "last_administrator");
    app.call(send(
        "POST",
        &format!("/api/admin/users/{}/disable", first.0),
        &deputy,
        None,
    ))
    .await
    .assert_problem(409, "last_administrator");
    assert_eq!(roles_of(&pool, first.0).await, vec!["Admin"]);
    let status: String = sqlx::query_scalar("SELECT status FROM users WHERE id = $1")
        .bind(first.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "active");
}

#[sqlx::test(migrations = "../../migrations")]
async fn custom_roles_are_managed_and_built_in_ones_are_fixed(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let permissions = app
        .call(send("GET", "/api/admin/permissions", &admin, None))
        .await
        .json();
    assert_eq!(
        permissions.as_array().unwrap().len(),
        clinicd_rbac::Permission::ALL.len()
    );

    let created = app
        .call(send(
            "POST",
            "/api/admin/roles",
            &admin,
            Some(json!({"name": "Billing", "description": "Claims", "permissions": ["patient:read", "patient:read_identifiers"]})),
        ))
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["built_in"], false);
    app.call(send(
        "POST",
        "/api/admin/roles",
        &admin,
        Some(json!({"name": "Billing", "permissions": []})),
    ))
    .await
    .assert_problem(409, "conflict");
    let problem = app
        .call(send(
            "POST",
            "/api/admin/roles",
            &admin,
            Some(json!({"name": "Bad", "permissions": ["patient:*"]})),
        ))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(problem["field"], "permissions");
    let problem = app
        .call(send(
            "POST",
            "/api/admin/roles",
            &admin,
            Some(json!({"name": "1 bad name", "permissions": []})),
        ))
        .await
        .assert_problem(422, "invalid_field");
    assert_eq!(problem["field"], "name");

    let updated = app
        .call(send(
            "PUT",
            "/api/admin/roles/Billing",
            &admin,
            Some(json!({"description": "Claims", "permissions": ["patient:read"], "privileged": true})),
        ))
        .await;
    assert_eq!(updated.status, 200);
    assert_eq!(updated.json()["permissions"], json!(["patient:read"]));
    assert_eq!(updated.json()["privileged"], true);

    for (method, body) in [
        ("PUT", Some(json!({"permissions": ["patient:read"]}))),
        ("DELETE", None),
    ] {
        app.call(send(method, "/api/admin/roles/Provider", &admin, body))
            .await
            .assert_problem(409, "built_in_role");
    }
    app.call(send("DELETE", "/api/admin/roles/Nope", &admin, None))
        .await
        .assert_problem(404, "not_found");

    let (clerk, _) = member(&app, "billing.clerk", &["Billing"]).await;
    app.call(send("DELETE", "/api/admin/roles/Billing", &admin, None))
        .await
        .assert_problem(409, "role_in_use");
    app.call(send(
        "PUT",
        &format!("/api/admin/users/{}/roles", clerk.0),
        &admin,
        Some(json!({"roles": []})),
    ))
    .await;
    let deleted = app
        .call(send("DELETE", "/api/admin/roles/Billing", &admin, None))
        .await;
    assert_eq!(deleted.status, 204);
    let roles = app
        .call(send("GET", "/api/admin/roles", &admin, None))
        .await
        .json();
    let names: Vec<&str> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "Admin",
            "PrivacyOfficer",
            "Provider",
            "ReadOnly",
            "RecordsManager",
            "Staff"
        ]
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn every_change_is_audited_with_before_and_after(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (admin_id, admin) = member(&app, "chief.admin", &["Admin"]).await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let (second_id, second) = member(&app, "second.admin", &["Admin"]).await;
    let (desk, _) = member(&app, "front.desk", &["Staff"]).await;
    let proposed = app
        .call(send(
            "PUT",
            &format!("/api/admin/users/{}/roles", desk.0),
            &admin,
            Some(json!({"roles": ["Staff", "ReadOnly"]})),
        ))
        .await;
    assert_eq!(proposed.status, 202);
    let proposal = proposed.json()["id"].as_str().unwrap().to_owned();
    // The proposal is audited with the state now and the state it would make...
    let (action, actor, metadata): (String, Option<uuid::Uuid>, Value) = sqlx::query_as(
        "SELECT action, actor_user_id, metadata FROM audit_events \
         WHERE route = '/api/admin/users/{id}/roles' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(action, "role_change");
    assert_eq!(actor, Some(admin_id.0));
    assert_eq!(metadata["pending"], true);
    assert_eq!(metadata["changed"], json!(["roles"]));
    // ...and so is the approval, which made the change.
    assert_eq!(approve(&app, &second, &proposal).await.status, 200);

    let (seq, action, actor, resource, metadata, sealed): (
        i64,
        String,
        Option<uuid::Uuid>,
        Option<String>,
        Value,
        Option<Vec<u8>>,
    ) = sqlx::query_as(
        "SELECT seq, action, actor_user_id, resource_id, metadata, sealed_values FROM audit_events \
         WHERE route = '/api/admin/proposals/{id}/approve' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(action, "approve");
    assert_eq!(actor, Some(second_id.0));
    assert_eq!(resource, Some(proposal.clone()));
    assert_eq!(metadata["target"], desk.0.to_string());
    assert_eq!(metadata["changed"], json!(["roles"]));
    let sealed = sealed.unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains("ReadOnly"),
        "values are sealed, not stored in clear"
    );

    // An administrator cannot open them; the privacy officer can.
    let values = format!("/api/audit/events/{seq}/values");
    app.call(send("GET", &values, &admin, None))
        .await
        .assert_problem(403, "permission_denied");
    let opened = app.call(send("GET", &values, &officer, None)).await;
    assert_eq!(opened.status, 200);
    let opened = opened.json();
    assert_eq!(opened["before"]["roles"], json!(["Staff"]));
    assert_eq!(opened["after"]["roles"], json!(["ReadOnly", "Staff"]));
    for (without_values, why) in [(seq + 1, "the refused read"), (999_999, "no such event")] {
        let response = app
            .call(send(
                "GET",
                &format!("/api/audit/events/{without_values}/values"),
                &officer,
                None,
            ))
            .await;
        assert_eq!(response.status, 404, "{why}");
    }
    app.call(send("GET", "/api/audit/events/x/values", &officer, None))
        .await
        .assert_problem(400, "invalid_parameters");

    // Role changes too.
    app.call(send(
        "POST",
        "/api/admin/roles",
        &admin,
        Some(json!({"name": "Scheduler", "permissions": ["appointment:read"]})),
    ))
    .await;
    let (seq,): (i64,) = sqlx::query_as(
        "SELECT seq FROM audit_events WHERE route = '/api/admin/roles' AND http_method = 'POST' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let opened = app
        .call(send(
            "GET",
            &format!("/api/audit/events/{seq}/values"),
            &officer,
            None,
        ))
        .await
        .json();
    assert!(opened["before"].is_null());
    assert_eq!(opened["after"]["permissions"], json!(["appointment:read"]));
}

#[sqlx::test(migrations = "../../migrations")]
async fn administrators_see_the_key_hierarchy_but_no_key_material(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, admin) = member(&app, "chief.admin", &["Admin"]).await;
    // Something to encrypt creates the field branch key.
    app.state
        .identity
        .keyring
        .encrypt(
            clinicd_crypto::Owner::Purpose(clinicd_crypto::Purpose::Field),
            &clinicd_crypto::FieldLocation::new("t", "c", uuid::Uuid::now_v7()),
            b"x",
        )
        .await
        .unwrap();
    let keys = app.call(send("GET", "/api/admin/keys", &admin, None)).await;
    assert_eq!(keys.status, 200);
    let keys = keys.json();
    let field = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["purpose"] == "field")
        .unwrap();
    assert_eq!(field["status"], "active");
    assert!(field["kek_id"].as_str().unwrap().starts_with("local:"));
    let names: Vec<&String> = field.as_object().unwrap().keys().collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("wrapped") || n.contains("material")),
        "{names:?}"
    );
}

//! Deny by default, checked against the documented tables in docs/rbac.md: the endpoint table
//! is the route table, the built-in roles are what the database holds, and over HTTP every
//! permission route answers every role exactly as the role table says.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::Method;
use actix_web::test::TestRequest;
use clinicd_api::routes::{Access, ROUTES};
use clinicd_test_support::{TestApp, bearer, member, roomy_settings as settings};
use sqlx::PgPool;

const DOC: &str = include_str!("../../../../docs/rbac.md");

/// The rows of the markdown table that follows `heading`, as trimmed cells.
fn table(heading: &str) -> Vec<Vec<String>> {
    let start = DOC
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} missing"));
    DOC[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

fn role_names() -> Vec<String> {
    let start = DOC.find("## Built-in roles").unwrap();
    let header = DOC[start..].lines().find(|l| l.starts_with('|')).unwrap();
    header
        .trim_matches('|')
        .split('|')
        .skip(1)
        .map(|c| c.trim().to_owned())
        .collect()
}

/// role -> permission -> "✓", "d" or "".
fn documented_roles() -> BTreeMap<String, BTreeMap<String, String>> {
    let roles = role_names();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for row in table("## Built-in roles") {
        if row[0].starts_with("**") {
            continue;
        }
        for (role, cell) in roles.iter().zip(&row[1..]) {
            out.entry(role.clone())
                .or_default()
                .insert(row[0].clone(), cell.clone());
        }
    }
    out
}

fn documented_privileged() -> BTreeMap<String, bool> {
    let row = table("## Built-in roles")
        .into_iter()
        .find(|r| r[0].starts_with("**privileged"))
        .unwrap();
    role_names()
        .into_iter()
        .zip(row[1..].iter().map(|c| c == "yes"))
        .collect()
}

fn requirement(access: Access) -> String {
    match access {
        Access::Public => "public".into(),
        Access::Session => "session".into(),
        Access::Permission(p) => p.as_str().into(),
    }
}

/// A concrete URI for a route template: ids that name nothing, a real export format.
fn uri(path: &str) -> String {
    path.replace("{id}", "0192b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b")
        .replace("{user_id}", "0192b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7c")
        .replace("{seq}", "1")
        .replace("{name}", "NoSuchRole")
        .replace("{format}", "ndjson")
}

fn request(method: &Method, path: &str, token: &str) -> TestRequest {
    bearer(
        TestRequest::default()
            .method(method.clone())
            .uri(&uri(path)),
        token,
    )
}

#[test]
fn the_documented_endpoints_are_the_route_table() {
    let documented: BTreeSet<(String, String, String)> = table("## Endpoints")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    let served: BTreeSet<(String, String, String)> = ROUTES
        .iter()
        .map(|r| {
            (
                r.method.to_string(),
                r.path.to_owned(),
                requirement(r.access),
            )
        })
        .collect();
    assert_eq!(documented, served);
    assert_eq!(documented.len(), ROUTES.len(), "each route once");
}

#[test]
fn only_operational_probes_and_session_steps_are_public() {
    let public: BTreeSet<&str> = ROUTES
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        public,
        BTreeSet::from([
            "/health",
            "/ready",
            "/api/auth/login",
            "/api/auth/refresh",
            "/api/auth/mfa",
            "/api/auth/mfa/send",
        ])
    );
    for route in ROUTES.iter().filter(|r| r.access == Access::Session) {
        assert!(
            route.path.starts_with("/api/auth/"),
            "{} {} acts on the caller's own account only",
            route.method,
            route.path
        );
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn built_in_roles_in_the_database_match_the_documented_table(pool: PgPool) {
    let rows: Vec<(String, Vec<String>, Vec<String>, bool, bool)> = sqlx::query_as(
        "SELECT name, permissions, delegable, privileged, built_in FROM roles ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let documented = documented_roles();
    let privileged = documented_privileged();
    assert_eq!(
        rows.iter().map(|r| r.0.clone()).collect::<BTreeSet<_>>(),
        documented.keys().cloned().collect::<BTreeSet<_>>()
    );
    for (name, permissions, delegable, is_privileged, built_in) in rows {
        assert!(built_in, "{name}");
        assert_eq!(is_privileged, privileged[&name], "{name} privileged");
        let cells = &documented[&name];
        let with = |mark: &str| -> BTreeSet<String> {
            cells
                .iter()
                .filter(|(_, c)| c.as_str() == mark)
                .map(|(p, _)| p.clone())
                .collect()
        };
        assert_eq!(
            permissions.into_iter().collect::<BTreeSet<_>>(),
            with("✓"),
            "{name} holds"
        );
        assert_eq!(
            delegable.into_iter().collect::<BTreeSet<_>>(),
            with("d"),
            "{name} delegates"
        );
    }
    let every: BTreeSet<String> = clinicd_rbac::Permission::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    for (role, cells) in &documented {
        assert_eq!(
            cells.keys().cloned().collect::<BTreeSet<_>>(),
            every,
            "{role}: the table lists every permission"
        );
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn every_permission_route_refuses_a_user_with_no_roles(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, token) = member(&app, "no.roles", &[]).await;
    let mut checked = 0;
    for route in ROUTES {
        let Access::Permission(permission) = route.access else {
            continue;
        };
        let response = app.call(request(&route.method, route.path, &token)).await;
        let problem = response.assert_problem(403, "permission_denied");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(permission.as_str()),
            "{problem}"
        );
        let anonymous = TestRequest::default()
            .method(route.method.clone())
            .uri(&uri(route.path));
        app.call(anonymous)
            .await
            .assert_problem(401, "unauthenticated");
        checked += 1;
    }
    let documented = table("## Endpoints")
        .iter()
        .filter(|r| r[2] != "public" && r[2] != "session")
        .count();
    assert_eq!(checked, documented);
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_role_by_endpoint_matrix_matches_the_documented_table(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    for (role, cells) in documented_roles() {
        let username = format!("member.{}", role.to_lowercase());
        let (_, token) = member(&app, &username, &[role.as_str()]).await;
        for route in ROUTES {
            let Access::Permission(permission) = route.access else {
                continue;
            };
            let allowed = cells[permission.as_str()] == "✓";
            let response = app.call(request(&route.method, route.path, &token)).await;
            if allowed {
                let code = response
                    .json_or_null()
                    .get("code")
                    .and_then(|c| c.as_str().map(str::to_owned));
                assert!(
                    response.status != 401
                        && !matches!(
                            code.as_deref(),
                            Some("permission_denied" | "mfa_enrolment_required")
                        ),
                    "{role} may call {} {} but got {} {code:?}",
                    route.method,
                    route.path,
                    response.status
                );
            } else {
                response.assert_problem(403, "permission_denied");
            }
        }
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_privileged_role_without_a_second_factor_must_enrol_first(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let user = clinicd_test_support::create_user(&pool, "new.admin", "x", false).await;
    clinicd_identity::users::assign_role(&pool, user, "Admin", None)
        .await
        .unwrap();
    let token = clinicd_test_support::session_token(&app, user).await;
    let roles = || bearer(TestRequest::get().uri("/api/admin/roles"), &token);
    let refused = app.call(roles()).await;
    let problem = refused.assert_problem(403, "mfa_enrolment_required");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("/api/auth/mfa/totp")
    );
    // Self-service stays open, so that they can enrol.
    let me = app
        .call(bearer(TestRequest::get().uri("/api/auth/me"), &token))
        .await;
    assert_eq!(me.status, 200);

    clinicd_test_support::enrol_totp(&app, user).await;
    assert_eq!(app.call(roles()).await.status, 200);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_refusal_is_audited_with_what_was_attempted_and_required(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (user, token) = member(&app, "front.desk", &["Staff"]).await;
    app.call(bearer(TestRequest::get().uri("/api/audit/stats"), &token))
        .await
        .assert_problem(403, "permission_denied");
    let (action, outcome, actor, route, metadata): (
        String,
        String,
        Option<uuid::Uuid>,
        Option<String>,
        serde_json::Value,
    ) = sqlx::query_as(
        "SELECT action, outcome, actor_user_id, route, metadata FROM audit_events ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (action.as_str(), outcome.as_str()),
        ("permission_denied", "denied")
    );
    assert_eq!(actor, Some(user.0));
    assert_eq!(route.as_deref(), Some("/api/audit/stats"));
    assert_eq!(metadata["attempted"], "audit_read");
    assert_eq!(metadata["required"], "audit:read");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_role_taken_away_applies_to_the_next_request(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (user, token) = member(&app, "temp.auditor", &["PrivacyOfficer"]).await;
    let stats = || bearer(TestRequest::get().uri("/api/audit/stats"), &token);
    assert_eq!(app.call(stats()).await.status, 200);
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(user.0)
        .execute(&pool)
        .await
        .unwrap();
    app.call(stats())
        .await
        .assert_problem(403, "permission_denied");
}

/// Grants are kept in memory keyed by the user's access version, which the database bumps with
/// any change that decides them. Every kind of change applies to the next request on every
/// instance, even where that instance has the caller's grants in memory.
#[sqlx::test(migrations = "../../migrations")]
async fn every_change_to_grants_applies_to_the_next_request_on_every_instance(pool: PgPool) {
    let a = TestApp::with_pool(settings(), pool.clone());
    let b = TestApp::with_pool(settings(), pool.clone());
    sqlx::query("INSERT INTO roles (name, description, permissions) VALUES ('TempAuditor', 'temporary', ARRAY['audit:read'])")
        .execute(&pool)
        .await
        .unwrap();
    let (user, token) = member(&a, "temp.auditor", &["TempAuditor"]).await;
    let stats = || bearer(TestRequest::get().uri("/api/audit/stats"), &token);
    let (apps, token) = ([&a, &b], token.as_str());
    let both = |status: u16| async move {
        for app in apps {
            let request = bearer(TestRequest::get().uri("/api/audit/stats"), token);
            assert_eq!(app.call(request).await.status, status);
        }
    };
    both(200).await;
    // The role's definition loses the permission.
    sqlx::query("UPDATE roles SET permissions = ARRAY[]::text[] WHERE name = 'TempAuditor'")
        .execute(&pool)
        .await
        .unwrap();
    both(403).await;
    // It gains it back.
    sqlx::query("UPDATE roles SET permissions = ARRAY['audit:read'] WHERE name = 'TempAuditor'")
        .execute(&pool)
        .await
        .unwrap();
    both(200).await;
    // A privileged role is added: without a second factor, nothing needing a permission works.
    sqlx::query("UPDATE roles SET privileged = true WHERE name = 'TempAuditor'")
        .execute(&pool)
        .await
        .unwrap();
    for app in [&a, &b] {
        app.call(stats())
            .await
            .assert_problem(403, "mfa_enrolment_required");
    }
    // Enrolling a second factor lifts that.
    clinicd_test_support::enrol_totp(&a, user).await;
    both(200).await;
    // The assignment goes.
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(user.0)
        .execute(&pool)
        .await
        .unwrap();
    both(403).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_pending_password_change_blocks_permission_routes_too(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    app.state.identity.keyring.bootstrap().await.unwrap();
    let user = clinicd_test_support::create_user(&pool, "new.desk", "x", true).await;
    clinicd_identity::users::assign_role(&pool, user, "Staff", None)
        .await
        .unwrap();
    let token = clinicd_test_support::session_token(&app, user).await;
    let search = clinicd_test_support::send(
        "POST",
        "/api/patients/search",
        &token,
        Some(serde_json::json!({})),
    );
    app.call(search)
        .await
        .assert_problem(403, "password_change_required");
}

//! The patient read and search check the caller's session in their own statement when this
//! instance checked it in full within the last minute (`session_confirmed`, migration 0031;
//! docs/performance.md). Every way a session or a grant ends must still apply to the next
//! request, whatever the instance remembers, and no answer may go out on memory alone.

use clinicd_api::metrics::SessionCheckKind;
use clinicd_test_support::{TestApp, member, roomy_settings as settings, send};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// A front-desk member with one patient on their care team, whose session this instance has checked
/// in full once (the first read): (user, token, patient id).
async fn remembered_provider(app: &TestApp, username: &str) -> (Uuid, String, String) {
    let (user, token) = member(app, username, &["Staff"]).await;
    let body = json!({"given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1985-12-10", "sex": "female"});
    let created = app
        .call(send("POST", "/api/patients", &token, Some(body)))
        .await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(read(app, &token, &id).await.0, 200);
    (user.0, token, id)
}

async fn read(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    let response = app
        .call(send("GET", &format!("/api/patients/{id}"), token, None))
        .await;
    let body = if response.body.is_empty() {
        Value::Null
    } else {
        response.json()
    };
    (response.status.as_u16(), body)
}

async fn search(app: &TestApp, token: &str, criteria: Value) -> (u16, Value) {
    let response = app
        .call(send("POST", "/api/patients/search", token, Some(criteria)))
        .await;
    (response.status.as_u16(), response.json())
}

fn lovelace() -> Value {
    json!({"family_name": "Lovelace", "date_of_birth": "1985-12-10"})
}

fn checks(app: &TestApp) -> [u64; 3] {
    let metrics = &app.state.metrics;
    [
        metrics.session_checks(SessionCheckKind::InStatement),
        metrics.session_checks(SessionCheckKind::Full),
        metrics.session_checks(SessionCheckKind::AfterHandler),
    ]
}

/// The last audit event: (action, outcome, actor, actor's username, session).
async fn last_event(pool: &PgPool) -> (String, String, Option<Uuid>, Option<String>, Option<Uuid>) {
    sqlx::query_as(
        "SELECT action, outcome, actor_user_id, actor_username, session_id FROM audit_events ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_remembered_session_is_confirmed_in_the_reads_own_statement(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (user, token, id) = remembered_provider(&app, "dr.grey").await;
    let before = checks(&app);
    let (status, body) = read(&app, &token, &id).await;
    assert_eq!(
        (status, body["family_name"].as_str()),
        (200, Some("Lovelace"))
    );
    let (status, found) = search(&app, &token, lovelace()).await;
    assert_eq!(status, 200);
    assert_eq!(found["patients"][0]["id"], id.as_str());
    let after = checks(&app);
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [2, 0, 0],
        "both confirmed in their own statement, nothing checked apart"
    );
    // The audit trail names the caller and the session as for a full check.
    let session: Uuid = sqlx::query_scalar("SELECT id FROM sessions WHERE user_id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
    let (action, outcome, actor, username, session_id) = last_event(&pool).await;
    assert_eq!((action.as_str(), outcome.as_str()), ("search", "success"));
    assert_eq!(
        (actor, username.as_deref(), session_id),
        (Some(user), Some("dr.grey"), Some(session))
    );
}

/// Each change is made in the database, as another instance (or an administrator's tool)
/// would make it, after this instance remembered the session; each request kind meets it on
/// the remembered path (its statement fails the check, then the full check answers).
#[sqlx::test(migrations = "../../migrations")]
async fn every_way_a_session_ends_applies_to_the_next_read_and_search(pool: PgPool) {
    let cases: [(&'static str, &'static [&'static str], u16, &str); 5] = [
        (
            "UPDATE sessions SET revoked_at = now(), revoked_reason = 'test' WHERE user_id = $1",
            &["UPDATE sessions SET revoked_at = NULL, revoked_reason = NULL WHERE user_id = $1"],
            401,
            "unauthenticated",
        ),
        (
            "UPDATE sessions SET absolute_expires_at = now() - interval '1 second' WHERE user_id = $1",
            &[
                "UPDATE sessions SET absolute_expires_at = now() + interval '1 day' WHERE user_id = $1",
            ],
            401,
            "unauthenticated",
        ),
        (
            "UPDATE sessions SET last_seen_at = now() - interval '1 day' WHERE user_id = $1",
            &["UPDATE sessions SET last_seen_at = now() WHERE user_id = $1"],
            401,
            "unauthenticated",
        ),
        (
            "UPDATE users SET status = 'disabled' WHERE id = $1",
            &[
                "UPDATE users SET status = 'active' WHERE id = $1",
                "UPDATE sessions SET revoked_at = NULL, revoked_reason = NULL WHERE user_id = $1",
            ],
            401,
            "unauthenticated",
        ),
        (
            "UPDATE users SET must_change_password = true WHERE id = $1",
            &["UPDATE users SET must_change_password = false WHERE id = $1"],
            403,
            "password_change_required",
        ),
    ];
    let app = TestApp::with_pool(settings(), pool.clone());
    let (user, token, id) = remembered_provider(&app, "dr.grey").await;
    let nobody = Uuid::new_v4().to_string();
    for (change, _, status, code) in cases {
        for request in ["read", "read of no patient", "search", "search for no one"] {
            for (_, undo, ..) in cases {
                for statement in undo {
                    sqlx::query(*statement)
                        .bind(user)
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }
            assert_eq!(
                read(&app, &token, &id).await.0,
                200,
                "remembered again before {request}, {change}"
            );
            sqlx::query(change).bind(user).execute(&pool).await.unwrap();
            let before = checks(&app);
            let (got, body) = match request {
                "read" => read(&app, &token, &id).await,
                "read of no patient" => read(&app, &token, &nobody).await,
                "search" => search(&app, &token, lovelace()).await,
                _ => {
                    search(
                        &app,
                        &token,
                        json!({"family_name": "Nobody", "date_of_birth": "1950-01-01"}),
                    )
                    .await
                }
            };
            assert_eq!(
                (got, body["code"].as_str()),
                (status, Some(code)),
                "{request} after {change}"
            );
            let after = checks(&app);
            assert_eq!(
                [after[0] - before[0], after[1] - before[1]],
                [0, 1],
                "{request} after {change}: its statement did not confirm the session, the full check answered"
            );
            let (_, outcome, ..) = last_event(&pool).await;
            assert_ne!(outcome, "success", "{request} after {change}");
        }
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_change_of_grants_applies_to_the_next_read_and_search(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (user, token, id) = remembered_provider(&app, "dr.grey").await;
    // A change that keeps the permission (a role added bumps the access version): the read's
    // statement does not confirm the remembered version, the caller is checked in full, and the
    // read answers as before.
    sqlx::query("INSERT INTO roles (name, description, permissions) VALUES ('Extra', 'another role', ARRAY['audit:read'])")
        .execute(&pool)
        .await
        .unwrap();
    clinicd_identity::users::assign_role(
        &pool,
        clinicd_identity::users::UserId(user),
        "Extra",
        None,
    )
    .await
    .unwrap();
    let before = checks(&app);
    assert_eq!(read(&app, &token, &id).await.0, 200);
    let after = checks(&app);
    assert_eq!(after[1] - before[1], 1, "checked in full once");
    assert_eq!(search(&app, &token, lovelace()).await.0, 200);
    assert_eq!(checks(&app)[0] - after[0], 1, "then remembered again");
    // The username the audit trail names changes: the next read names the new one.
    sqlx::query("UPDATE users SET username = 'dr.grey.md' WHERE id = $1")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(read(&app, &token, &id).await.0, 200);
    assert_eq!(last_event(&pool).await.3.as_deref(), Some("dr.grey.md"));
    // Every role goes: refused, and audited with what was required.
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = read(&app, &token, &id).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied"))
    );
    let metadata: Value =
        sqlx::query_scalar("SELECT metadata FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(metadata["required"], "patient:read");
    let (status, body) = search(&app, &token, lovelace()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied"))
    );
}

/// A handler that answers before any statement confirmed the session (here, a bad request)
/// does not answer on what is remembered: the session is checked in full first.
#[sqlx::test(migrations = "../../migrations")]
async fn an_answer_with_no_confirming_statement_waits_for_the_full_check(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (_, token, _) = remembered_provider(&app, "dr.grey").await;
    let before = checks(&app);
    let (status, body) = search(&app, &token, json!({"limit": 0})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_field"))
    );
    let (status, body) = read(&app, &token, "not-a-uuid").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_parameters"))
    );
    assert_eq!(
        checks(&app)[2] - before[2],
        2,
        "both checked in full after the handler"
    );
    sqlx::query("UPDATE sessions SET revoked_at = now(), revoked_reason = 'test'")
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = search(&app, &token, json!({"limit": 0})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, body) = read(&app, &token, "not-a-uuid").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
}

/// Logging out on one instance ends the session on another that remembers it.
#[sqlx::test(migrations = "../../migrations")]
async fn a_logout_on_another_instance_applies_to_the_next_read(pool: PgPool) {
    let a = TestApp::with_pool(settings(), pool.clone());
    let b = TestApp::with_pool(settings(), pool.clone());
    let (_, token, id) = remembered_provider(&a, "dr.grey").await;
    assert_eq!(read(&b, &token, &id).await.0, 200);
    let logout = b.call(send("POST", "/api/auth/logout", &token, None)).await;
    assert_eq!(logout.status, 204);
    let (status, body) = read(&a, &token, &id).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = search(&a, &token, lovelace()).await;
    assert_eq!(status, 401);
}

/// An account block applies to a remembered session too: it is checked before the request is
/// admitted on what the instance remembers, not left to the statement.
#[sqlx::test(migrations = "../../migrations")]
async fn an_account_block_applies_to_a_remembered_session(pool: PgPool) {
    let app = TestApp::with_pool(settings(), pool.clone());
    let (user, token, id) = remembered_provider(&app, "dr.grey").await;
    let (_, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let block = json!({"user_id": user, "reason": "a stolen laptop, reported", "minutes": 5});
    let created = app
        .call(send("POST", "/api/security/blocks", &officer, Some(block)))
        .await;
    assert_eq!(created.status, 201);
    let (status, body) = read(&app, &token, &id).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("account_blocked"))
    );
    let (status, body) = search(&app, &token, lovelace()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("account_blocked"))
    );
}

//! Security operations through the HTTP layer: automatic blocks for each attack pattern, the
//! allow-list, manual blocks and lifts, alert states, the dashboard, limits shared by two
//! instances on one database, block propagation between them, and failing closed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::test::TestRequest;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use clinicd_api::rate_limit::QuotaSpec;
use clinicd_secops::{SecOps, SecOpsSettings, Threshold};
use clinicd_test_support::{TestApp, bearer, member, roomy_settings, send, unassigned_patient};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const SECRET: &str = "a webhook secret of some length";

fn threshold(count: u32) -> Threshold {
    Threshold {
        count,
        window: Duration::from_secs(600),
    }
}

/// An app whose security operations use `settings`.
fn app_with(pool: &PgPool, settings: SecOpsSettings) -> TestApp {
    let mut app = TestApp::with_pool(roomy_settings(), pool.clone());
    app.state.secops = SecOps::new(pool.clone(), app.state.identity.keyring.clone(), settings);
    app
}

fn from(ip: &str, request: TestRequest) -> TestRequest {
    request.peer_addr(format!("{ip}:40000").parse().unwrap())
}

fn login(ip: &str, username: &str, password: &str) -> TestRequest {
    from(
        ip,
        TestRequest::post()
            .uri("/api/auth/login")
            .insert_header(("Content-Type", "application/json"))
            .set_payload(json!({"username": username, "password": password}).to_string()),
    )
}

/// A local webhook receiver on a thread of its own: every request's signature and body.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    let received: Arc<Mutex<Vec<(String, Vec<u8>)>>> = Arc::default();
    let store = received.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                let store = store.clone();
                App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                    let store = store.clone();
                    async move {
                        let sig = req
                            .headers()
                            .get("clinicd-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        store.lock().unwrap().push((sig, body.to_vec()));
                        HttpResponse::NoContent().finish()
                    }
                }))
            })
            .workers(1)
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    (format!("http://127.0.0.1:{port}/hook"), received)
}

async fn blocks_in(pool: &PgPool) -> Vec<(String, Option<String>, Option<Uuid>, Value)> {
    sqlx::query_as("SELECT rule, network::text, user_id, evidence FROM blocks ORDER BY created_at")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn credential_stuffing_is_blocked_at_its_threshold_and_alerts_once(pool: PgPool) {
    let (url, received) = webhook_receiver().await;
    let mut settings = SecOpsSettings::default();
    settings.abuse.stuffing = threshold(5);
    settings.delivery.webhook_url = Some(url);
    settings.delivery.webhook_secret = Some(SECRET.to_owned().into());
    let app = app_with(&pool, settings);
    app.state.identity.keyring.bootstrap().await.unwrap();
    let attacker = "203.0.113.9";
    for i in 0..5 {
        app.call(login(attacker, &format!("victim{i}"), "Winter2026!"))
            .await
            .assert_problem(401, "invalid_credentials");
    }
    // The fifth failure crossed the threshold: every request from the address is refused now.
    for i in 5..40 {
        let refused = app
            .call(login(attacker, &format!("victim{i}"), "Winter2026!"))
            .await;
        refused.assert_problem(403, "blocked");
        let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((800..=900).contains(&retry), "{retry}");
    }
    app.call(from(attacker, TestRequest::get().uri("/health")))
        .await
        .assert_problem(403, "blocked");
    // Another client is untouched.
    app.call(login("203.0.113.10", "victim0", "Winter2026!"))
        .await
        .assert_problem(401, "invalid_credentials");

    let blocks = blocks_in(&pool).await;
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].0, "credential_stuffing");
    assert_eq!(blocks[0].1.as_deref(), Some("203.0.113.9/32"));
    assert_eq!(blocks[0].3["count"], 5);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE resource_type = 'block' AND metadata->>'kind' = 'automatic_block'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // One alert, delivered once, signed.
    let pass = app.state.secops.deliver().await.unwrap();
    assert!(pass.dead == 0, "{pass:?}");
    let mut waited = 0;
    while received.lock().unwrap().is_empty() && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    app.state.secops.deliver().await.unwrap();
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one delivery, not one per refused request");
    let (sig, body) = &got[0];
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        sig,
        &clinicd_secops::deliver::signature(SECRET.as_bytes(), t, body)
    );
    let alert: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(alert["alert"]["rule"], "block:credential_stuffing");
    let text = String::from_utf8_lossy(body);
    assert!(
        !text.contains("victim"),
        "no usernames typed by the attacker: {text}"
    );
    assert!(!text.contains("Winter2026"), "no password: {text}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn password_spraying_blocks_every_address_that_sprayed(pool: PgPool) {
    let mut settings = SecOpsSettings::default();
    settings.abuse.spraying = threshold(3);
    let app = app_with(&pool, settings);
    app.state.identity.keyring.bootstrap().await.unwrap();
    for (i, ip) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        app.call(login(ip, &format!("staff{i}"), "Spring2026!"))
            .await
            .assert_problem(401, "invalid_credentials");
    }
    let blocked: Vec<String> = blocks_in(&pool)
        .await
        .into_iter()
        .filter(|b| b.0 == "password_spraying")
        .filter_map(|b| b.1)
        .collect();
    assert_eq!(blocked.len(), 3, "{blocked:?}");
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        app.call(login(ip, "staff9", "other password"))
            .await
            .assert_problem(403, "blocked");
    }
    // Different passwords on different accounts are ordinary failures.
    app.call(login("198.51.100.4", "staff1", "one"))
        .await
        .assert_problem(401, "invalid_credentials");
    app.call(login("198.51.100.4", "staff2", "two"))
        .await
        .assert_problem(401, "invalid_credentials");
}

#[sqlx::test(migrations = "../../migrations")]
async fn enumerating_patients_blocks_the_address_and_the_account(pool: PgPool) {
    let mut settings = SecOpsSettings::default();
    settings.abuse.enumeration = threshold(5);
    let app = app_with(&pool, settings);
    let (user, token) = member(&app, "dr.snoop", &["Provider"]).await;
    for _ in 0..5 {
        let path = format!("/api/patients/{}", Uuid::now_v7());
        app.call(from("192.0.2.77", send("GET", &path, &token, None)))
            .await
            .assert_problem(404, "not_found");
    }
    app.call(from(
        "192.0.2.77",
        send("GET", "/api/auth/me", &token, None),
    ))
    .await
    .assert_problem(403, "blocked");
    // The account is blocked too, from anywhere.
    app.call(from(
        "192.0.2.78",
        send("GET", "/api/auth/me", &token, None),
    ))
    .await
    .assert_problem(403, "account_blocked");
    let blocks = blocks_in(&pool).await;
    assert!(
        blocks
            .iter()
            .any(|b| b.2 == Some(user.0) && b.0 == "enumeration"),
        "{blocks:?}"
    );
    // Repeating one missing path is not enumeration.
    let (_, other) = member(&app, "dr.retry", &["Provider"]).await;
    let path = format!("/api/patients/{}", Uuid::now_v7());
    for _ in 0..10 {
        app.call(from("192.0.2.79", send("GET", &path, &other, None)))
            .await
            .assert_problem(404, "not_found");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn probing_tokens_blocks_the_address(pool: PgPool) {
    let mut settings = SecOpsSettings::default();
    settings.abuse.token = threshold(5);
    let app = app_with(&pool, settings);
    app.state.identity.keyring.bootstrap().await.unwrap();
    for i in 0..5 {
        app.call(from(
            "192.0.2.90",
            bearer(
                TestRequest::get().uri("/api/auth/me"),
                &format!("forged.{i}.token"),
            ),
        ))
        .await
        .assert_problem(401, "unauthenticated");
    }
    app.call(from("192.0.2.90", TestRequest::get().uri("/api/auth/me")))
        .await
        .assert_problem(403, "blocked");
}

#[sqlx::test(migrations = "../../migrations")]
async fn refused_origins_block_the_address(pool: PgPool) {
    let mut settings = SecOpsSettings::default();
    settings.abuse.origin = threshold(3);
    let app = app_with(&pool, settings);
    // As the server does at start (an automatic block is appended to the trail).
    app.state.identity.keyring.bootstrap().await.unwrap();
    for _ in 0..3 {
        app.call(from(
            "192.0.2.91",
            TestRequest::post()
                .uri("/api/auth/logout")
                .insert_header(("Origin", "https://evil.example")),
        ))
        .await
        .assert_problem(403, "origin_not_allowed");
    }
    app.call(from("192.0.2.91", TestRequest::get().uri("/health")))
        .await
        .assert_problem(403, "blocked");
}

#[sqlx::test(migrations = "../../migrations")]
async fn allow_listed_networks_are_never_blocked(pool: PgPool) {
    let mut settings = SecOpsSettings::default();
    settings.abuse.stuffing = threshold(2);
    settings.abuse.allow = vec!["203.0.113.0/24".parse().unwrap()];
    let app = app_with(&pool, settings);
    app.state.identity.keyring.bootstrap().await.unwrap();
    for i in 0..10 {
        app.call(login("203.0.113.50", &format!("user{i}"), "guess"))
            .await
            .assert_problem(401, "invalid_credentials");
    }
    assert!(blocks_in(&pool).await.is_empty());
}

#[sqlx::test(migrations = "../../migrations")]
async fn officers_block_and_lift_by_hand_and_bad_input_is_refused(pool: PgPool) {
    let mut settings = SecOpsSettings::default();
    settings.abuse.allow = vec!["10.0.0.0/8".parse().unwrap()];
    let app = app_with(&pool, settings);
    let (officer_id, officer) = member(&app, "privacy.officer", &["PrivacyOfficer"]).await;
    let (clerk, clerk_token) = member(&app, "front.desk", &["Staff"]).await;
    let reason = "repeated scans from this network";

    let created = app
        .call(send(
            "POST",
            "/api/security/blocks",
            &officer,
            Some(json!({"network": "198.51.100.0/24", "reason": reason, "minutes": 60})),
        ))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.json_or_null());
    let block = created.json();
    assert_eq!(block["network"], "198.51.100.0/24");
    assert_eq!(block["source"], "manual");
    assert_eq!(block["active"], true);
    app.call(from("198.51.100.7", TestRequest::get().uri("/health")))
        .await
        .assert_problem(403, "blocked");

    // An account block answers its holder 403 account_blocked on the next request.
    app.call(send(
        "POST",
        "/api/security/blocks",
        &officer,
        Some(json!({"user_id": clerk.0, "reason": reason, "minutes": 5})),
    ))
    .await;
    app.call(send("GET", "/api/auth/me", &clerk_token, None))
        .await
        .assert_problem(403, "account_blocked");

    let listed = app
        .call(send("GET", "/api/security/blocks", &officer, None))
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    let lift = format!(
        "/api/security/blocks/{}/lift",
        block["id"].as_str().unwrap()
    );
    let lifted = app
        .call(send(
            "POST",
            &lift,
            &officer,
            Some(json!({"reason": "scanner was ours"})),
        ))
        .await;
    assert_eq!(lifted.status, 200);
    assert_eq!(lifted.json()["lifted_by"], json!(officer_id.0));
    let health = app
        .call(from("198.51.100.7", TestRequest::get().uri("/health")))
        .await;
    assert_eq!(health.status, 200);
    app.call(send(
        "POST",
        &lift,
        &officer,
        Some(json!({"reason": "scanner was ours"})),
    ))
    .await
    .assert_problem(404, "not_found");

    // Bad input, each class.
    let bad = [
        (
            json!({"network": "198.51.100.0/24", "user_id": clerk.0, "reason": reason, "minutes": 5}),
            422,
            "invalid_field",
        ),
        (
            json!({"reason": reason, "minutes": 5}),
            422,
            "invalid_field",
        ),
        (
            json!({"network": "not-an-address", "reason": reason, "minutes": 5}),
            422,
            "invalid_field",
        ),
        (
            json!({"network": "0.0.0.0/0", "reason": reason, "minutes": 5}),
            422,
            "invalid_field",
        ),
        (
            json!({"network": "10.1.2.3", "reason": reason, "minutes": 5}),
            422,
            "invalid_field",
        ),
        (
            json!({"network": "192.0.2.1", "reason": "x", "minutes": 5}),
            422,
            "invalid_field",
        ),
        (
            json!({"network": "192.0.2.1", "reason": reason, "minutes": 0}),
            422,
            "invalid_field",
        ),
        (
            json!({"network": "192.0.2.1", "reason": reason, "minutes": 50000}),
            422,
            "invalid_field",
        ),
        (
            json!({"user_id": Uuid::now_v7(), "reason": reason, "minutes": 5}),
            422,
            "invalid_field",
        ),
        (
            json!({"user_id": officer_id.0, "reason": reason, "minutes": 5}),
            403,
            "own_account",
        ),
        (
            json!({"network": "192.0.2.1", "reason": reason, "minutes": 5, "extra": 1}),
            400,
            "unknown_field",
        ),
        (
            json!({"network": "192.0.2.1", "reason": reason, "minutes": -1}),
            422,
            "invalid_field",
        ),
        (
            json!({"network": "192.0.2.1", "reason": reason, "minutes": 2.5}),
            422,
            "invalid_field",
        ),
        (
            json!({"network": "192.0.2.1", "reason": reason, "minutes": "5"}),
            400,
            "invalid_body",
        ),
    ];
    // JSON Schema's integers include 90.0; a whole number is accepted however written.
    let whole = app
        .call(send(
            "POST",
            "/api/security/blocks",
            &officer,
            Some(json!({"network": "192.0.2.1", "reason": reason, "minutes": 90.0})),
        ))
        .await;
    assert_eq!(whole.status, 201, "{:?}", whole.json_or_null());
    for (body, status, code) in bad {
        app.call(send(
            "POST",
            "/api/security/blocks",
            &officer,
            Some(body.clone()),
        ))
        .await
        .assert_problem(status, code);
    }
    app.call(send(
        "POST",
        &format!("/api/security/blocks/{}/lift", Uuid::now_v7()),
        &officer,
        Some(json!({"reason": "no such block"})),
    ))
    .await
    .assert_problem(404, "not_found");
    app.call(send("GET", "/api/security/blocks?limit=0", &officer, None))
        .await
        .assert_problem(400, "invalid_parameters");
}

#[sqlx::test(migrations = "../../migrations")]
async fn roles_without_security_read_are_refused_everywhere(pool: PgPool) {
    let app = app_with(&pool, SecOpsSettings::default());
    let id = Uuid::now_v7();
    let routes = [
        ("GET", "/api/security/dashboard".to_owned(), None),
        ("GET", "/api/security/alerts".to_owned(), None),
        (
            "POST",
            format!("/api/security/alerts/{id}/acknowledge"),
            None,
        ),
        (
            "POST",
            format!("/api/security/alerts/{id}/resolve"),
            Some(json!({"resolution": "nothing found"})),
        ),
        ("GET", "/api/security/alert-deliveries".to_owned(), None),
        ("GET", "/api/security/blocks".to_owned(), None),
        (
            "POST",
            "/api/security/blocks".to_owned(),
            Some(json!({"network": "192.0.2.1", "reason": "because", "minutes": 5})),
        ),
        (
            "POST",
            format!("/api/security/blocks/{id}/lift"),
            Some(json!({"reason": "because"})),
        ),
        (
            "PUT",
            format!("/api/security/watched-patients/{id}"),
            Some(json!({"label": "vip", "reason": "board member"})),
        ),
        (
            "DELETE",
            format!("/api/security/watched-patients/{id}"),
            None,
        ),
    ];
    for role in ["Provider", "Staff", "ReadOnly"] {
        let (_, token) = member(&app, &format!("user.{}", role.to_lowercase()), &[role]).await;
        for (method, path, body) in &routes {
            app.call(send(method, path, &token, body.clone()))
                .await
                .assert_problem(403, "permission_denied");
        }
    }
    for (method, path, _) in &routes {
        let request = TestRequest::default()
            .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path);
        app.call(request)
            .await
            .assert_problem(401, "unauthenticated");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn alerts_move_from_open_to_acknowledged_to_resolved(pool: PgPool) {
    let mut settings = SecOpsSettings::default();
    settings.abuse.token = threshold(2);
    let app = app_with(&pool, settings);
    let (officer_id, officer) = member(&app, "security.officer", &["PrivacyOfficer"]).await;
    for _ in 0..2 {
        app.call(from(
            "192.0.2.5",
            bearer(TestRequest::get().uri("/api/auth/me"), "bogus"),
        ))
        .await;
    }
    let alerts = app
        .call(send(
            "GET",
            "/api/security/alerts?state=open",
            &officer,
            None,
        ))
        .await
        .json();
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule"], "block:token_probing");
    let id = alerts[0]["id"].as_str().unwrap();

    let ack = format!("/api/security/alerts/{id}/acknowledge");
    let acknowledged = app.call(send("POST", &ack, &officer, None)).await;
    assert_eq!(acknowledged.status, 200);
    assert_eq!(acknowledged.json()["acknowledged_by"], json!(officer_id.0));
    app.call(send("POST", &ack, &officer, None))
        .await
        .assert_problem(409, "invalid_transition");
    let resolve = format!("/api/security/alerts/{id}/resolve");
    app.call(send(
        "POST",
        &resolve,
        &officer,
        Some(json!({"resolution": "no"})),
    ))
    .await
    .assert_problem(422, "invalid_field");
    app.call(send("POST", &resolve, &officer, Some(json!({}))))
        .await
        .assert_problem(400, "invalid_body");
    let resolved = app
        .call(send(
            "POST",
            &resolve,
            &officer,
            Some(json!({"resolution": "a scanner of ours"})),
        ))
        .await;
    assert_eq!(resolved.status, 200);
    assert_eq!(resolved.json()["state"], "resolved");
    app.call(send(
        "POST",
        &resolve,
        &officer,
        Some(json!({"resolution": "a scanner of ours"})),
    ))
    .await
    .assert_problem(409, "invalid_transition");
    app.call(send(
        "POST",
        &format!("/api/security/alerts/{}/acknowledge", Uuid::now_v7()),
        &officer,
        None,
    ))
    .await
    .assert_problem(404, "not_found");
    app.call(send(
        "GET",
        "/api/security/alerts?state=bogus",
        &officer,
        None,
    ))
    .await
    .assert_problem(400, "invalid_parameters");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE resource_type = 'security_alert' AND action = 'update' AND outcome = 'success'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 2, "acknowledge and resolve are audited");
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_dashboard_shows_alerts_blocks_and_emergency_access_awaiting_review(pool: PgPool) {
    let mut settings = SecOpsSettings::default();
    settings.abuse.stuffing = threshold(3);
    let app = app_with(&pool, settings);
    let (_, officer) = member(&app, "privacy.lead", &["PrivacyOfficer"]).await;
    let (_, doctor) = member(&app, "dr.er", &["Provider"]).await;
    let stranger = unassigned_patient(&app, ("Doe", "Jane"), "1980-01-02", None).await;
    let granted = app
        .call(send(
            "POST",
            &format!("/api/patients/{stranger}/break-glass"),
            &doctor,
            Some(json!({"reason": "unconscious patient in the emergency room"})),
        ))
        .await;
    assert_eq!(granted.status, 201);
    for i in 0..3 {
        app.call(login("203.0.113.77", &format!("nobody{i}"), "pw"))
            .await;
    }
    let board = app
        .call(send("GET", "/api/security/dashboard", &officer, None))
        .await;
    assert_eq!(board.status, 200);
    let board = board.json();
    assert_eq!(board["break_glass_pending_review"], 1);
    assert_eq!(board["active_blocks"], 1);
    assert_eq!(board["alerts"]["open"], 1);
    assert_eq!(
        board["recent_alerts"][0]["rule"],
        "block:credential_stuffing"
    );
    assert_eq!(board["failed_logins_24h"], 3);
    assert!(board["keys"].as_array().unwrap().len() >= 4, "{board}");
    assert!(board["audit"]["head_seq"].as_i64().unwrap() > 0);
    // Every number is also a metric.
    let metrics = app.state.metrics.render().unwrap();
    for line in [
        "clinicd_security_blocks_active 1",
        "clinicd_security_break_glass_pending_review 1",
        "clinicd_security_alerts{state=\"open\"} 1",
        "clinicd_security_failed_logins_24h 3",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // Nothing of the patient in the picture.
    assert!(!board.to_string().contains("Doe"));
}

fn login_limited(limit: u32, shared: bool, pool: &PgPool) -> TestApp {
    let mut http = roomy_settings();
    http.rate_limits.login = QuotaSpec {
        count: std::num::NonZeroU32::new(limit).unwrap(),
        window: Duration::from_secs(900),
    };
    let mut app = TestApp::with_pool(http, pool.clone());
    let settings = SecOpsSettings {
        shared_limits: shared,
        ..SecOpsSettings::default()
    };
    app.state.secops = SecOps::new(pool.clone(), app.state.identity.keyring.clone(), settings);
    app
}

/// Attempts alternating between two instances until eight were answered; how many passed the
/// limit.
async fn alternate(a: &TestApp, b: &TestApp) -> usize {
    let mut passed = 0;
    for i in 0..8 {
        let app = if i % 2 == 0 { a } else { b };
        let response = app.call(login("192.0.2.200", "alternating", "wrong")).await;
        // The account's own failure delay (login_throttled) is not the rate limit.
        if response.json_or_null()["code"] != "rate_limited" {
            passed += 1;
        }
    }
    passed
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_instances_on_one_database_share_one_login_limit(pool: PgPool) {
    // Two instances: separate processes' state, one database.
    let a = login_limited(4, true, &pool);
    let b = login_limited(4, true, &pool);
    a.state.identity.keyring.bootstrap().await.unwrap();
    assert_eq!(alternate(&a, &b).await, 4, "the limit, not twice it");
    let buckets: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rate_buckets WHERE policy = 'login'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(buckets, 1);
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM rate_buckets")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        keys.iter().all(|k| !k.contains("alternating")),
        "usernames only hashed: {keys:?}"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn without_shared_limits_each_instance_counts_alone(pool: PgPool) {
    let a = login_limited(4, false, &pool);
    let b = login_limited(4, false, &pool);
    a.state.identity.keyring.bootstrap().await.unwrap();
    assert_eq!(
        alternate(&a, &b).await,
        8,
        "the embedded default is per instance"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn login_fails_closed_when_the_shared_store_is_down(pool: PgPool) {
    let app = login_limited(4, true, &pool);
    let mut dead = app.clone();
    dead.state.secops = SecOps::new(
        clinicd_test_support::dead_pool(),
        app.state.identity.keyring.clone(),
        SecOpsSettings {
            shared_limits: true,
            ..SecOpsSettings::default()
        },
    );
    app.state.identity.keyring.bootstrap().await.unwrap();
    dead.call(login("192.0.2.201", "someone", "pw"))
        .await
        .assert_problem(503, "service_unavailable");
    let metrics = dead.state.metrics.render().unwrap();
    assert!(
        metrics.contains("clinicd_shared_limit_failures_total{policy=\"login\"} 1"),
        "{metrics}"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_block_and_its_lifting_reach_the_other_instance(pool: PgPool) {
    let a = app_with(&pool, SecOpsSettings::default());
    let b = app_with(&pool, SecOpsSettings::default());
    let follower = b.state.secops.follow_blocks();
    let (_, officer) = member(&a, "officer.a", &["PrivacyOfficer"]).await;
    let ip: std::net::IpAddr = "192.0.2.123".parse().unwrap();
    // Let the follower's listener start before the change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let block = a
        .call(send(
            "POST",
            "/api/security/blocks",
            &officer,
            Some(json!({"network": "192.0.2.123", "reason": "propagation test", "minutes": 10})),
        ))
        .await
        .json();
    let reached = wait_for(|| b.state.secops.ip_blocked(ip).is_some()).await;
    assert!(reached, "the block reached the other instance");
    b.call(from("192.0.2.123", TestRequest::get().uri("/health")))
        .await
        .assert_problem(403, "blocked");
    a.call(send(
        "POST",
        &format!(
            "/api/security/blocks/{}/lift",
            block["id"].as_str().unwrap()
        ),
        &officer,
        Some(json!({"reason": "propagation test over"})),
    ))
    .await;
    let lifted = wait_for(|| b.state.secops.ip_blocked(ip).is_none()).await;
    assert!(lifted, "the lifting reached the other instance");
    follower.abort();
}

/// Polls for up to 5 s (a functional check: docs/security-operations.md has the measured
/// propagation time).
async fn wait_for(condition: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_blocked_account_is_refused_at_login_only_after_its_password(pool: PgPool) {
    let app = app_with(&pool, SecOpsSettings::default());
    let (_, officer) = member(&app, "officer.login", &["PrivacyOfficer"]).await;
    let (clerk, _) = member(&app, "blocked.clerk", &["Staff"]).await;
    let placed = app
        .call(send(
            "POST",
            "/api/security/blocks",
            &officer,
            Some(json!({"user_id": clerk.0, "reason": "shared password found", "minutes": 30})),
        ))
        .await;
    assert_eq!(placed.status, 201);
    // A wrong password learns nothing about the block.
    app.call(login("192.0.2.150", "blocked.clerk", "not the password"))
        .await
        .assert_problem(401, "invalid_credentials");
    app.call(login(
        "192.0.2.150",
        "blocked.clerk",
        "correct horse battery staple",
    ))
    .await
    .assert_problem(403, "account_blocked");
}

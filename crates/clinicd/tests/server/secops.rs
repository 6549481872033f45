//! Two real servers on one database: the shared login limit holds across them, and a block or
//! an unblock made in the database reaches both.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::{Running, client, start};

const SHARED: &[(&str, &str)] = &[
    ("CLINICD_SHARED_LIMITS", "true"),
    ("CLINICD_RATE_LIMIT_LOGIN", "4/15m"),
];

async fn login(server: &Running) -> Value {
    let url = format!("https://localhost:{}/api/auth/login", server.app_ports.0);
    client(&server.cert_pem)
        .post(url)
        .json(&json!({"username": "alternating", "password": "wrong password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null)
}

async fn health(server: &Running) -> (u16, Value) {
    let url = format!("https://localhost:{}/health", server.app_ports.0);
    let response = client(&server.cert_pem).get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls both servers for up to 5 s until `wanted` holds for each (a functional check; the
/// propagation time is measured by the secops bench).
async fn both(a: &Running, b: &Running, wanted: impl Fn(u16, &Value) -> bool) -> bool {
    for _ in 0..100 {
        let (sa, ba) = health(a).await;
        let (sb, bb) = health(b).await;
        if wanted(sa, &ba) && wanted(sb, &bb) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_servers_share_one_login_limit_and_every_block(pool: PgPool) {
    let a = start(pool.clone(), SHARED).await;
    let b = start(pool.clone(), SHARED).await;
    let mut passed = 0;
    for i in 0..8 {
        let answer = login(if i % 2 == 0 { &a } else { &b }).await;
        if answer["code"] != "rate_limited" {
            passed += 1;
        }
    }
    assert_eq!(
        passed, 4,
        "a client alternating between two servers meets one limit of 4"
    );

    sqlx::query(
        "INSERT INTO blocks (id, target, network, source, rule, reason, created_at, expires_at) \
         VALUES ($1, 'ip', '127.0.0.1/32', 'manual', 'manual', 'two-server test', now(), now() + interval '10 minutes')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();
    assert!(
        both(&a, &b, |status, body| status == 403
            && body["code"] == "blocked")
        .await,
        "the block holds on both servers"
    );
    sqlx::query("UPDATE blocks SET lifted_at = now(), lift_reason = 'test over'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(
        both(&a, &b, |status, _| status == 200).await,
        "the unblock holds on both servers"
    );
}

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sqlx::PgPool;

use crate::support::{client, staff_token, start};

#[sqlx::test(migrations = "../../migrations")]
async fn serves_https_with_a_real_handshake_and_every_header(pool: PgPool) {
    let running = start(pool, &[]).await;
    let (api_port, _, _) = running.app_ports;
    let response = client(&running.cert_pem)
        .get(format!("https://localhost:{api_port}/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let headers = response.headers().clone();
    for (name, value) in [
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(headers.get(name).unwrap(), value, "{name}");
    }
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_client_that_does_not_trust_the_certificate_is_refused(pool: PgPool) {
    let running = start(pool, &[]).await;
    let (api_port, _, _) = running.app_ports;
    let other_dir = tempfile::tempdir().unwrap();
    let (other_cert, _) = clinicd::tls::ensure_self_signed(other_dir.path()).unwrap();
    let stranger = client(&std::fs::read(other_cert).unwrap());
    let error = stranger
        .get(format!("https://localhost:{api_port}/health"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn plain_http_on_the_api_port_is_not_served(pool: PgPool) {
    let running = start(pool, &[]).await;
    let (api_port, _, _) = running.app_ports;
    let reply = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", api_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        reply
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(
        !text.contains("HTTP/1.1 200") && !text.contains("\"ok\""),
        "{text}"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_plain_listener_only_redirects_to_https(pool: PgPool) {
    let running = start(
        pool,
        &[
            ("CLINICD_HTTP_REDIRECT_ADDR", "127.0.0.1:0"),
            ("CLINICD_PUBLIC_HTTPS_PORT", "8443"),
        ],
    )
    .await;
    let redirect_port = running.app_ports.2.unwrap();
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, expected) in [
        ("/health", "https://localhost:8443/health"),
        ("/ready?x=1", "https://localhost:8443/ready?x=1"),
        (
            "/api/openapi.json",
            "https://localhost:8443/api/openapi.json",
        ),
    ] {
        let response = plain
            .get(format!("http://localhost:{redirect_port}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 308, "{path}");
        assert_eq!(response.headers()["location"], expected);
        assert!(
            response.text().await.unwrap().is_empty(),
            "the API is never served in clear"
        );
    }
    let bad_host = plain
        .get(format!("http://127.0.0.1:{redirect_port}/health"))
        .header("Host", "evil.example/\r\nX-Injected: 1")
        .send()
        .await;
    // Either refused by the client library or answered 400: never a redirect to that host.
    if let Ok(response) = bad_host {
        assert_eq!(response.status(), 400);
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn metrics_are_served_on_the_admin_listener_only(pool: PgPool) {
    let running = start(pool, &[]).await;
    let (api_port, metrics_port, _) = running.app_ports;
    let client = client(&running.cert_pem);
    for _ in 0..3 {
        client
            .get(format!("https://localhost:{api_port}/health"))
            .send()
            .await
            .unwrap();
    }
    client
        .get(format!("https://localhost:{api_port}/nowhere"))
        .send()
        .await
        .unwrap();
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"clinicd_http_requests_total{method="GET",route="/health",status="200"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="unmatched",status="404"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("clinicd_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    // The pool is read at the scrape: it holds connections, and says its limit.
    let samples = integer_samples(&metrics);
    let pool_gauge = |name: &str| samples.get(&format!("clinicd_{name}")).copied();
    assert!(
        pool_gauge("db_pool_connections").is_some_and(|n| n >= 1),
        "{metrics}"
    );
    assert!(
        pool_gauge("db_pool_idle_connections").is_some(),
        "{metrics}"
    );
    assert!(
        pool_gauge("db_pool_max_connections").is_some_and(|n| n >= 1),
        "{metrics}"
    );
    assert!(
        !metrics.contains("/nowhere"),
        "raw paths never become labels"
    );

    let on_api = client
        .get(format!("https://localhost:{api_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404);
}

/// The unlabelled integer samples of a metrics exposition, by name.
fn integer_samples(metrics: &str) -> std::collections::HashMap<String, i64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
        .collect()
}

/// The gauges as one scrape of the metrics listener gives them.
async fn gauges(metrics_port: u16) -> std::collections::HashMap<String, i64> {
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    integer_samples(&metrics)
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_workers_own_pools_are_counted_apart_from_the_shared_one(pool: PgPool) {
    // One HTTPS worker (the support's setting) on a shared pool of 10: its own pool holds up
    // to 5, opened lazily, so nothing is open before a patient record is touched.
    let running = start(pool.clone(), &[]).await;
    let (api_port, metrics_port, _) = running.app_ports;
    let before = gauges(metrics_port).await;
    assert_eq!(
        before.get("clinicd_db_worker_pools"),
        Some(&1),
        "{before:?}"
    );
    assert_eq!(
        before.get("clinicd_db_worker_pool_max_connections"),
        Some(&5),
        "{before:?}"
    );
    assert_eq!(
        before.get("clinicd_db_worker_pool_connections"),
        Some(&0),
        "{before:?}"
    );
    assert!(
        before
            .get("clinicd_db_pool_connections")
            .is_some_and(|n| *n >= 1),
        "the shared pool is already in use: {before:?}"
    );

    let base = format!("https://localhost:{api_port}");
    let http = client(&running.cert_pem);
    let token = staff_token(&pool, &http, &base).await;
    let created = http
        .post(format!("{base}/api/patients"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"given_name": "Pat", "family_name": "Smith", "date_of_birth": "1970-05-06", "sex": "unknown"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = http
        .get(format!("{base}/api/patients/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    let after = gauges(metrics_port).await;
    let open = after["clinicd_db_worker_pool_connections"];
    let idle = after["clinicd_db_worker_pool_idle_connections"];
    assert!((1..=5).contains(&open), "{after:?}");
    assert!(idle <= open, "{after:?}");
    assert_eq!(after.get("clinicd_db_worker_pools"), Some(&1), "{after:?}");
}

/// The shipped operator files (Prometheus rules, the Grafana dashboard) use only metrics the
/// server exports, and the dashboard imports without an `__inputs` placeholder: its data source
/// is a variable.
#[sqlx::test(migrations = "../../migrations")]
async fn every_metric_the_shipped_rules_and_dashboards_use_is_exported(pool: PgPool) {
    let running = start(pool, &[]).await;
    let (_, metrics_port, _) = running.app_ports;
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut referenced = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    let names = regex::Regex::new(r"clinicd_[a-z0-9_]+").unwrap();
    for dir in ["prometheus", "grafana"] {
        for entry in std::fs::read_dir(deploy.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().contains(".test.") {
                continue;
            }
            files.push(path.clone());
            let text = std::fs::read_to_string(&path).unwrap();
            for name in names.find_iter(&text) {
                referenced.insert(name.as_str().to_owned());
            }
        }
    }
    assert!(referenced.len() >= 15, "{referenced:?} in {files:?}");
    // The dashboard gauges are filled by a refresher on its first tick.
    let mut exported = String::new();
    for _ in 0..100 {
        exported = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if exported.contains("clinicd_security_key_age_days") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let names: std::collections::BTreeSet<&str> = exported
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    for metric in &referenced {
        assert!(
            names.contains(metric.as_str()),
            "{metric} is used in deploy/ but not exported:\n{exported}"
        );
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana/clinicd-security.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard.get("__inputs").is_none());
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource");
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
    }
}

//! Login throughput and the cost of a login flood to everyone else.
//!
//! Starts the real server (HTTPS, every middleware, argon2id with the configured parameters)
//! on a throwaway database, then measures in one run:
//! 1. `GET /api/auth/me` latency with no other load (baseline);
//! 2. the same while LOGIN_CLIENTS clients log in as fast as they can, and the logins/s;
//! 3. the baseline again, to show the machine did not drift.
//!
//! The figure that matters is the ratio of /me p99 under the flood to the baseline p99
//! (target: at most 2). Absolute numbers on these shared machines are noisy; ratios taken in one
//! run are not. Rate limits are raised for the run: the flood is meant to reach the hasher.
//!
//! Run with `./scripts/bench login` (it provides DATABASE_URL). Knobs: BENCH_SECONDS (per
//! phase, default 5), BENCH_LOGIN_CLIENTS (default 16), CLINICD_PASSWORD_HASH_CONCURRENCY.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use clinicd::{Application, Settings};
use serde_json::{Value, json};
use sqlx::PgPool;

const PASSWORD: &str = "correct horse battery staple";
const LOGIN_USERS: usize = 8;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start(pool: PgPool) -> Server {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut vars: HashMap<String, String> = HashMap::from([
        ("CLINICD_MODE".into(), "development".into()),
        (
            "DATABASE_URL".into(),
            std::env::var("DATABASE_URL").unwrap(),
        ),
        (
            "CLINICD_TOKEN_SIGNING_KEY".into(),
            base64::engine::general_purpose::STANDARD.encode([3u8; 64]),
        ),
        ("CLINICD_DATA_DIR".into(), dir.path().display().to_string()),
        (
            "CLINICD_MASTER_KEY_FILE".into(),
            key_file.display().to_string(),
        ),
        ("CLINICD_LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ("CLINICD_METRICS_ADDR".into(), "127.0.0.1:0".into()),
        ("CLINICD_RATE_LIMIT_PER_IP".into(), "1000000/1s".into()),
        ("CLINICD_RATE_LIMIT_API".into(), "1000000/1s".into()),
        ("CLINICD_RATE_LIMIT_LOGIN".into(), "1000000/1s".into()),
        ("CLINICD_DB_MAX_CONNECTIONS".into(), "40".into()),
    ]);
    for name in [
        "CLINICD_PASSWORD_HASH_CONCURRENCY",
        "CLINICD_PASSWORD_HASH_MEMORY_KIB",
        "CLINICD_HTTP_WORKERS",
    ] {
        if let Ok(value) = std::env::var(name) {
            vars.insert(name.into(), value);
        }
    }
    let settings = Settings::from_vars(&vars).expect("bench settings");
    println!(
        "argon2id: {} KiB, t={}, p={}; at most {} hashes at once; {} cores",
        settings.identity.hash.memory_kib,
        settings.identity.hash.iterations,
        settings.identity.hash.parallelism,
        settings.identity.max_concurrent_hashes,
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let app = Application::build_with_pool(settings, pool).await.unwrap();
    let base = format!("https://localhost:{}", app.api_port());
    tokio::spawn(app.run_until_stopped());
    let cert = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&cert).unwrap()])
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    Server {
        base,
        client,
        _dir: dir,
    }
}

async fn login(server: &Server, username: &str) -> Option<Value> {
    let response = server
        .client
        .post(format!("{}/api/auth/login", server.base))
        .json(&json!({ "username": username, "password": PASSWORD }))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

/// Sequential `GET /api/auth/me` for `duration`; the latency of each.
async fn me_latencies(server: &Server, token: &str, duration: Duration) -> Vec<Duration> {
    let url = format!("{}/api/auth/me", server.base);
    let mut latencies = Vec::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let started = Instant::now();
        let response = server
            .client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/me failed during the run");
        response.bytes().await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Summary {
    requests: usize,
    p50: Duration,
    p99: Duration,
}

fn summarise(mut latencies: Vec<Duration>) -> Summary {
    latencies.sort();
    Summary {
        requests: latencies.len(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    }
}

fn report(label: &str, s: &Summary, seconds: f64) {
    println!(
        "{label:<28} {:>7} requests {:>8.0}/s   p50 {:>8.2} ms   p99 {:>8.2} ms",
        s.requests,
        s.requests as f64 / seconds,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let seconds = env_number("BENCH_SECONDS", 5);
    let clients = env_number("BENCH_LOGIN_CLIENTS", 16);
    let phase = Duration::from_secs(seconds);
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (run ./scripts/bench login)");
    let pool = PgPool::connect(&url).await.unwrap();
    clinicd::startup::MIGRATOR.run(&pool).await.unwrap();
    sqlx::query("TRUNCATE users, sessions, refresh_tokens, security_events, mfa_challenges, trusted_devices, user_roles CASCADE")
        .execute(&pool)
        .await
        .unwrap();
    clinicd_test_support::create_user(&pool, "bench.me", PASSWORD, false).await;
    for i in 0..LOGIN_USERS {
        clinicd_test_support::create_user(&pool, &format!("bench.login{i}"), PASSWORD, false).await;
    }
    let server = Arc::new(start(pool).await);
    let token = login(&server, "bench.me").await.expect("login")["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Warm up connections, caches and the JIT-free but cold CPU caches.
    me_latencies(&server, &token, Duration::from_secs(1)).await;
    for i in 0..LOGIN_USERS {
        login(&server, &format!("bench.login{i}"))
            .await
            .expect("login");
    }

    let baseline = summarise(me_latencies(&server, &token, phase).await);

    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for c in 0..clients {
        let (server, stop, logins, failures) = (
            server.clone(),
            stop.clone(),
            logins.clone(),
            failures.clone(),
        );
        flood.push(tokio::spawn(async move {
            let mut n = c as usize;
            while !stop.load(Ordering::Relaxed) {
                let username = format!("bench.login{}", n % LOGIN_USERS);
                match login(&server, &username).await {
                    Some(_) => logins.fetch_add(1, Ordering::Relaxed),
                    None => failures.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }));
    }
    // Let the flood reach a steady state before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = logins.load(Ordering::Relaxed);
    let started = Instant::now();
    let flooded = summarise(me_latencies(&server, &token, phase).await);
    let login_rate =
        (logins.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    let after = summarise(me_latencies(&server, &token, phase).await);

    let secs = seconds as f64;
    println!();
    report("/me, no other load", &baseline, secs);
    report(
        &format!("/me, {clients} clients logging in"),
        &flooded,
        secs,
    );
    report("/me, no other load (again)", &after, secs);
    println!(
        "logins: {login_rate:.1}/s during the flood ({} refused or failed)",
        failures.load(Ordering::Relaxed)
    );
    println!(
        "ratio /me p99 under flood / baseline p99: {:.2} (target <= 2); p50 ratio {:.2}; \
         second baseline / first p99: {:.2}",
        flooded.p99.as_secs_f64() / baseline.p99.as_secs_f64(),
        flooded.p50.as_secs_f64() / baseline.p50.as_secs_f64(),
        after.p99.as_secs_f64() / baseline.p99.as_secs_f64(),
    );
}

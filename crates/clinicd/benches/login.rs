//! Login throughput and the cost of a login flood to everyone else.
//!
//! Starts the real server (HTTPS, every middleware, argon2id with the configured parameters)
//! on a throwaway database, then, in rounds, measures `GET /api/auth/me` latency with no other
//! load and then while BENCH_LOGIN_CLIENTS clients log in as fast as they can (and the
//! logins/s). The figure that matters is the ratio of /me p99 under the flood to the quiet p99
//! of the same round (target: at most 2); the median over the rounds is reported. Absolute
//! numbers on these shared machines are noisy, ratios within one round much less so. Rate
//! limits are raised for the run: the flood is meant to reach the hasher.
//!
//! Run with `./scripts/bench login` (it provides DATABASE_URL). Knobs: BENCH_SECONDS (per
//! window, default 3), BENCH_ROUNDS (default 5), BENCH_LOGIN_CLIENTS (default 16),
//! CLINICD_PASSWORD_HASH_CONCURRENCY and the other CLINICD_PASSWORD_HASH_* variables.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "a benchmark: a panic is its report, and it prints its figures"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Server, Summary, env_number, on_own_thread, start, summarise};

const PASSWORD: &str = "correct horse battery staple";
const LOGIN_USERS: usize = 8;

async fn login(client: &reqwest::Client, base: &str, username: &str) -> Option<Value> {
    let response = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "username": username, "password": PASSWORD }))
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    response.json().await.ok()
}

/// Sequential `GET /api/auth/me` for `duration`, on a thread and runtime of its own; the
/// latency of each.
fn me_latencies(server: &Server, token: &str, duration: Duration) -> Vec<Duration> {
    let client = server.client();
    let url = format!("{}/api/auth/me", server.base);
    let token = token.to_owned();
    on_own_thread(move || Box::pin(me_loop(client, url, token, duration)))
        .join()
        .unwrap()
}

async fn me_loop(
    client: reqwest::Client,
    url: String,
    token: String,
    duration: Duration,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let started = Instant::now();
        let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 200, "/me failed during the run");
        response.bytes().await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies
}

/// `clients` concurrent login loops until `stop`.
async fn flood(
    client: reqwest::Client,
    base: String,
    clients: u64,
    stop: Arc<AtomicBool>,
    counts: Arc<(AtomicU64, AtomicU64)>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, base, stop, counts) =
            (client.clone(), base.clone(), stop.clone(), counts.clone());
        tasks.spawn(async move {
            let mut n = c as usize;
            while !stop.load(Ordering::Relaxed) {
                let username = format!("bench.login{}", n % LOGIN_USERS);
                let counter = match login(&client, &base, &username).await {
                    Some(_) => &counts.0,
                    None => &counts.1,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
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
    let seconds = env_number("BENCH_SECONDS", 3);
    let rounds_wanted = env_number("BENCH_ROUNDS", 5);
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
    let server = start(pool).await;
    let setup = server.client();
    let token = login(&setup, &server.base, "bench.me")
        .await
        .expect("login")["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Warm up connections and caches.
    me_latencies(&server, &token, Duration::from_secs(1));
    for i in 0..LOGIN_USERS {
        login(&setup, &server.base, &format!("bench.login{i}"))
            .await
            .expect("login");
    }

    // Alternate quiet and flooded windows, so slow drift of this shared machine hits both
    // sides of every ratio alike; report each round and the median.
    let mut rounds = Vec::new();
    for round in 1..=rounds_wanted {
        let quiet = summarise(me_latencies(&server, &token, phase));
        let stop = Arc::new(AtomicBool::new(false));
        // (logins, refused or failed)
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let flooding = {
            let (client, base, stop, counts) = (
                server.client(),
                server.base.clone(),
                stop.clone(),
                counts.clone(),
            );
            on_own_thread(move || Box::pin(flood(client, base, clients, stop, counts)))
        };
        // Let the flood reach a steady state before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = counts.0.load(Ordering::Relaxed);
        let started = Instant::now();
        let flooded = summarise(me_latencies(&server, &token, phase));
        let login_rate =
            (counts.0.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        flooding.join().unwrap();
        let secs = seconds as f64;
        println!("round {round}");
        report("  /me, no other load", &quiet, secs);
        report(
            &format!("  /me, {clients} clients logging in"),
            &flooded,
            secs,
        );
        let ratio = flooded.p99.as_secs_f64() / quiet.p99.as_secs_f64();
        println!(
            "  logins {login_rate:.1}/s ({} refused or failed); p99 ratio {ratio:.2}",
            counts.1.load(Ordering::Relaxed)
        );
        rounds.push((ratio, login_rate));
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "\nlogins/s (argon2id as configured): median {:.1}",
        median(rounds.iter().map(|r| r.1).collect())
    );
    println!(
        "/me p99 under a {clients}-client login flood / quiet p99: median {:.2} over {} rounds \
         (each: {}) (target <= 2)",
        median(rounds.iter().map(|r| r.0).collect()),
        rounds.len(),
        rounds
            .iter()
            .map(|r| format!("{:.2}", r.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

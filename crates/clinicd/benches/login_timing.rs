//! Whether the time a refused login takes tells anything: a known username with a wrong
//! password, an unknown username, and a locked username (known and unknown) should all cost one
//! argon2id verification and answer 401 alike.
//!
//! Starts the real server (HTTPS, every middleware, argon2id as configured) on a throwaway
//! database, locks one known and one unknown username with five failures, then takes
//! BENCH_TIMING_SAMPLES (default 50) samples of each kind, interleaved so the machine's drift
//! hits every kind alike. Each known or unknown sample uses a fresh username (its first failure,
//! so no delay applies). Reports each kind's median and its ratio to the known username's
//! (target: within 0.8 to 1.25).
//!
//! Run with `./scripts/bench login_timing` (it provides DATABASE_URL).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "a benchmark: a panic is its report, and it prints its figures"
)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use support::{env_number, percentile, start};

const PASSWORD: &str = "correct horse battery staple";

/// One login attempt: its status and how long the answer took.
async fn attempt(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> (u16, Duration) {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    response.bytes().await.unwrap();
    let elapsed = started.elapsed();
    if let Some(wait) = retry.filter(|_| status == 429) {
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    (status, elapsed)
}

/// Fails until the username is locked (five failures; the delays after the third are waited).
async fn lock(client: &reqwest::Client, base: &str, username: &str) {
    let mut failures = 0;
    while failures < 5 {
        let (status, _) = attempt(client, base, username, "not the password").await;
        match status {
            401 => failures += 1,
            429 => {}
            other => panic!("locking {username}: unexpected {other}"),
        }
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    percentile(&samples, 0.5)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let samples = env_number("BENCH_TIMING_SAMPLES", 50) as usize;
    let url =
        std::env::var("DATABASE_URL").expect("DATABASE_URL (run ./scripts/bench login_timing)");
    let pool = PgPool::connect(&url).await.unwrap();
    clinicd::startup::MIGRATOR.run(&pool).await.unwrap();
    sqlx::query(
        "TRUNCATE users, sessions, refresh_tokens, security_events, login_attempts CASCADE",
    )
    .execute(&pool)
    .await
    .unwrap();
    clinicd_test_support::create_user(&pool, "timing.locked", PASSWORD, false).await;
    for i in 0..=samples {
        clinicd_test_support::create_user(&pool, &format!("timing.known{i}"), PASSWORD, false)
            .await;
    }
    let server = start(pool).await;
    let client = server.client();
    let base = server.base.clone();
    // Warm up: connections, the hasher, the caches.
    attempt(&client, &base, &format!("timing.known{samples}"), PASSWORD).await;
    lock(&client, &base, "timing.locked").await;
    lock(&client, &base, "timing.nobody.locked").await;
    let (status, _) = attempt(&client, &base, "timing.locked", PASSWORD).await;
    assert_eq!(
        status, 401,
        "the right password on a locked account is refused alike"
    );

    let kinds = [
        "known, wrong password",
        "unknown",
        "locked, known",
        "locked, unknown",
    ];
    let mut times: [Vec<Duration>; 4] = Default::default();
    for i in 0..samples {
        let usernames = [
            format!("timing.known{i}"),
            format!("timing.nobody{i}"),
            "timing.locked".to_owned(),
            "timing.nobody.locked".to_owned(),
        ];
        // Rotate the order each round, so no kind always goes first.
        for k in 0..kinds.len() {
            let kind = (i + k) % kinds.len();
            let (status, elapsed) =
                attempt(&client, &base, &usernames[kind], "not the password").await;
            assert_eq!(status, 401, "{}: {status}", kinds[kind]);
            times[kind].push(elapsed);
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let reference = medians[0].as_secs_f64();
    println!("refused logins, median of {samples} each:");
    for (kind, m) in kinds.iter().zip(&medians) {
        println!(
            "  {kind:<24} {:>8.2} ms   ratio to known {:.2}",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / reference
        );
    }
}

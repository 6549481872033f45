//! What auditing costs a read, and how many events the writer commits per second.
//!
//! One in-process server (plain HTTP on loopback; every middleware) serves the same handler
//! twice: `GET /api/auth/me`, declared in the route table and so audited, and `GET /bench/me`,
//! mounted only here and so not audited. Both authenticate against Postgres; the only
//! difference is the audit event committed before the response leaves. At 1, 16 and 64
//! concurrent clients it reports throughput audited / unaudited (target at 64: >= 0.7) and the
//! p99 the audit adds (target: <= 5 ms). Then it drives the writer alone with 64 tasks and
//! reports events/s.
//!
//! Run with `./scripts/bench audit`. Knobs: BENCH_SECONDS (per measurement, default 3).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "a benchmark: a panic is its report, and it prints its figures"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::{HttpServer, web};
use clinicd_api::HttpSettings;
use clinicd_api::rate_limit::RateLimitSettings;
use clinicd_audit::{Action, NewEvent, Outcome};

const PASSWORD: &str = "correct horse battery staple";

fn seconds() -> u64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

struct Run {
    requests: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// `clients` concurrent loops of GET `url` for `duration`, on a runtime and thread of their
/// own (awaited, not joined: the audit writer runs on this thread's runtime).
async fn load(url: String, token: String, clients: usize, duration: Duration) -> Run {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(clients)
                    .build()
                    .unwrap();
                let stop = Arc::new(AtomicBool::new(false));
                let started = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..clients {
                    let (client, url, token, stop) =
                        (client.clone(), url.clone(), token.clone(), stop.clone());
                    tasks.spawn(async move {
                        let mut latencies = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let t = Instant::now();
                            let response =
                                client.get(&url).bearer_auth(&token).send().await.unwrap();
                            assert_eq!(response.status(), 200, "{url}");
                            response.bytes().await.unwrap();
                            latencies.push(t.elapsed());
                        }
                        latencies
                    });
                }
                tokio::time::sleep(duration).await;
                stop.store(true, Ordering::Relaxed);
                let mut all: Vec<Duration> = tasks.join_all().await.into_iter().flatten().collect();
                let elapsed = started.elapsed();
                all.sort();
                let at =
                    |p: f64| all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1];
                Run {
                    requests: all.len(),
                    elapsed,
                    p50: at(0.50),
                    p99: at(0.99),
                }
            })
    })
    .await
    .unwrap()
}

fn main() {
    actix_web::rt::System::new().block_on(run());
}

async fn run() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (run ./scripts/bench audit)");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(40)
        .connect(&url)
        .await
        .unwrap();
    sqlx::migrate!("../../migrations").run(&pool).await.unwrap();
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    let username = format!("bench.{}", uuid::Uuid::now_v7().simple());
    clinicd_test_support::create_user(&pool, &username, PASSWORD, false).await;
    let quota = "1000000/1s".parse().unwrap();
    let settings = HttpSettings {
        production: false,
        rate_limits: RateLimitSettings {
            per_ip: quota,
            api: quota,
            login: quota,
            upload: quota,
            export: quota,
        },
        ..HttpSettings::default()
    };
    let state = clinicd_test_support::state(settings, pool.clone());
    let writer = state.audit.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        clinicd_api::app_with(state.clone(), |cfg| {
            cfg.route(
                "/bench/me",
                web::get().to(clinicd_api::routes::auth::login::me),
            );
        })
    })
    .workers(2)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    let base = format!("http://127.0.0.1:{port}");
    let token = reqwest::Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({ "username": username, "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let duration = Duration::from_secs(seconds());
    let (audited, unaudited) = (format!("{base}/api/auth/me"), format!("{base}/bench/me"));
    // Warm up both paths.
    load(audited.clone(), token.clone(), 4, Duration::from_secs(1)).await;
    load(unaudited.clone(), token.clone(), 4, Duration::from_secs(1)).await;

    println!("GET /api/auth/me (audited) against the same handler unaudited, same stack:");
    for clients in [1, 16, 64] {
        let off = load(unaudited.clone(), token.clone(), clients, duration).await;
        let on = load(audited.clone(), token.clone(), clients, duration).await;
        println!(
            "{clients:>3} clients: audited {:>7.0}/s p50 {:>6.2} ms p99 {:>6.2} ms | unaudited {:>7.0}/s p50 {:>6.2} ms p99 {:>6.2} ms | throughput ratio {:.2} (target at 64: >= 0.7), p99 added {:+.2} ms (target <= 5)",
            on.per_second(),
            ms(on.p50),
            ms(on.p99),
            off.per_second(),
            ms(off.p50),
            ms(off.p99),
            on.per_second() / off.per_second(),
            ms(on.p99) - ms(off.p99),
        );
    }

    // The writer alone: 64 tasks appending as fast as they can.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let writer = writer.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            let end = Instant::now() + duration;
            while Instant::now() < end {
                writer
                    .record(NewEvent::new(Action::View, Outcome::Success))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        });
    }
    let events: u64 = tasks.join_all().await.into_iter().sum();
    println!(
        "writer alone, 64 tasks: {:.0} events/s committed (batched, chained, HMAC-authenticated)",
        events as f64 / started.elapsed().as_secs_f64()
    );
    let report = clinicd_audit::verify(&pool, &clinicd_test_support::keyring(pool.clone()))
        .await
        .unwrap();
    println!(
        "verify afterwards: {} events, {} heads, intact: {}",
        report.events_checked,
        report.heads_checked,
        report.first_broken_seq.is_none()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

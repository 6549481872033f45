//! Patient reads and searches through the real HTTPS API against a raw-SQL ceiling measured in
//! the same run.
//!
//! Seeds BENCH_PATIENTS patients (default 5000) through `POST /api/patients` as a member of
//! staff (who joins each patient's care team), then for 16 and 64 concurrent clients measures
//! `GET /api/patients/{id}` and `POST /api/patients/search` by family name and date of birth:
//! requests/s, p50 and p99. The ceiling is pgbench running the same SELECT plus one audit
//! INSERT per transaction, straight to Postgres, at the same client counts. The figure that
//! matters is ours/ceiling (target: at least 0.5).
//!
//! Run with `./scripts/bench records`. Knobs: BENCH_SECONDS (per window, default 5),
//! BENCH_PATIENTS. `BENCH_SHARED_LIMITS=1` runs only the comparison of the patient read on a
//! server with shared limits (CLINICD_SHARED_LIMITS) against one without, on the same
//! database, interleaved, three rounds (docs/security-operations.md).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "a benchmark: a panic is its report, and it prints its figures"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clinicd_test_support::access_token;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Server, env_number, on_own_thread, start, start_with, summarise};

const PASSWORD: &str = "correct horse battery staple";
const FAMILIES: [&str; 8] = [
    "Smith", "Núñez", "O'Brien", "Okafor", "Yamada", "Haddad", "Chen", "García",
];

fn patient(i: usize) -> Value {
    json!({
        "given_name": "Pat",
        "family_name": FAMILIES[i % FAMILIES.len()],
        "date_of_birth": format!("{}-{:02}-{:02}", 1930 + i % 90, 1 + i % 12, 1 + i % 28),
        "sex": "unknown",
        "ssn": format!("{:03}-{:02}-{:04}", 100 + i % 500, 1 + i % 99, 1 + i % 9999),
        "phone": "+15551234567",
        "insurance_primary": {"payer": "Acme", "member_number": format!("XKQ{i:09}")}
    })
}

/// Registers `count` patients with 16 requests in flight; returns (id, family name, dob).
async fn seed(server: &Server, token: &str, count: usize) -> Vec<(String, String, String)> {
    let client = server.client();
    let mut out = Vec::with_capacity(count);
    let mut next = 0;
    while next < count {
        let batch: Vec<usize> = (next..(next + 16).min(count)).collect();
        next += batch.len();
        let requests = batch.iter().map(|&i| {
            let client = client.clone();
            let url = format!("{}/api/patients", server.base);
            let body = patient(i);
            let token = token.to_owned();
            async move {
                let response = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201, "seeding failed");
                let created: Value = response.json().await.unwrap();
                (
                    created["id"].as_str().unwrap().to_owned(),
                    body["family_name"].as_str().unwrap().to_owned(),
                    body["date_of_birth"].as_str().unwrap().to_owned(),
                )
            }
        });
        out.extend(futures_util::future::join_all(requests).await);
    }
    out
}

#[derive(Clone, Copy)]
enum Kind {
    /// `GET /health`: TLS, HTTP and the middleware, no database: our stack's own ceiling here.
    Health,
    /// `GET /api/auth/me`: plus the session check and an audit event.
    Me,
    Read,
    Search,
}

/// `clients` loops for `duration` on a runtime of their own; every latency.
fn load(
    server: &Server,
    token: &str,
    patients: Arc<Vec<(String, String, String)>>,
    kind: Kind,
    clients: usize,
    duration: Duration,
) -> Vec<Duration> {
    let client = server.client();
    let base = server.base.clone();
    let token = token.to_owned();
    on_own_thread(move || {
        Box::pin(async move {
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = tokio::task::JoinSet::new();
            for c in 0..clients {
                let (client, base, token, patients, stop) = (
                    client.clone(),
                    base.clone(),
                    token.clone(),
                    patients.clone(),
                    stop.clone(),
                );
                tasks.spawn(async move {
                    let mut latencies = Vec::new();
                    let mut n = c * 7919;
                    while !stop.load(Ordering::Relaxed) {
                        let (id, family, dob) = &patients[n % patients.len()];
                        n += 1;
                        let started = Instant::now();
                        let response = match kind {
                            Kind::Health => {
                                client.get(format!("{base}/health")).send().await.unwrap()
                            }
                            Kind::Me => client
                                .get(format!("{base}/api/auth/me"))
                                .bearer_auth(&token)
                                .send()
                                .await
                                .unwrap(),
                            Kind::Read => client
                                .get(format!("{base}/api/patients/{id}"))
                                .bearer_auth(&token)
                                .send()
                                .await
                                .unwrap(),
                            Kind::Search => client
                                .post(format!("{base}/api/patients/search"))
                                .bearer_auth(&token)
                                .json(&json!({"family_name": family, "date_of_birth": dob}))
                                .send()
                                .await
                                .unwrap(),
                        };
                        assert_eq!(response.status(), 200, "request failed during the run");
                        response.bytes().await.unwrap();
                        latencies.push(started.elapsed());
                    }
                    latencies
                });
            }
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
            let mut all = Vec::new();
            while let Some(done) = tasks.join_next().await {
                all.extend(done.unwrap());
            }
            all
        })
    })
    .join()
    .unwrap()
}

/// The ceiling: pgbench running `script` with `clients` connections; transactions per second.
fn pgbench(script: &str, clients: usize, seconds: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.sql");
    std::fs::write(&file, script).unwrap();
    let url = std::env::var("DATABASE_URL").unwrap();
    let output = std::process::Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "prepared",
            "-j",
            "2",
            "-c",
            &clients.to_string(),
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&file)
        .arg(&url)
        .output()
        .expect("pgbench (postgresql-client) on PATH");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in {text}"))
}

/// The audit row our API writes for each request, as one INSERT (its sequence numbers are far
/// above the real trail's, which this throwaway database does not verify).
const AUDIT_INSERT: &str = "INSERT INTO audit_events (seq, occurred_at, action, outcome, resource_type, resource_id, \
     patient_id, http_method, route, status_code, metadata, prev_hash, hash) \
     VALUES (nextval('bench_audit_seq'), now(), 'view', 'success', 'patient', :n, gen_random_uuid(), 'GET', \
     '/api/patients/{id}', 200, '{}', '\\x00', '\\x00');";

async fn prepare_ceiling(pool: &PgPool) {
    for sql in [
        "DROP TABLE IF EXISTS bench_rows",
        "CREATE TABLE bench_rows AS SELECT row_number() OVER (ORDER BY id) AS n, id, family_name_bidx, date_of_birth_bidx FROM patients",
        "CREATE UNIQUE INDEX ON bench_rows (n)",
        "DROP SEQUENCE IF EXISTS bench_audit_seq",
        "CREATE SEQUENCE bench_audit_seq START 1000000000",
        "ANALYZE",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap();
    }
}

/// The patient read with shared limits on against off: two servers on one database, windows
/// interleaved so drift hits both, medians of three rounds.
async fn shared_limits(
    pool: &PgPool,
    off: &Server,
    token_off: &str,
    patients: Arc<Vec<(String, String, String)>>,
    seconds: u64,
) {
    let on = start_with(pool.clone(), &[("CLINICD_SHARED_LIMITS", "true")]).await;
    let token_on = access_token(&on.client(), &on.base, "bench.desk", PASSWORD).await;
    let window = Duration::from_secs(seconds);
    // The server without sharing was warmed by the seeding; warm the other one too (its pool,
    // prepared statements and key cache), or the comparison measures a cold start.
    load(&on, &token_on, patients.clone(), Kind::Read, 16, window);
    let (mut rates_off, mut rates_on) = (Vec::new(), Vec::new());
    for round in 0..3 {
        // Which server goes first alternates, so that drift within a round hits both alike.
        let mut pair = [
            (off, token_off, &mut rates_off),
            (&on, token_on.as_str(), &mut rates_on),
        ];
        if round % 2 == 1 {
            pair.reverse();
        }
        for (server, token, rates) in pair {
            let latencies = load(server, token, patients.clone(), Kind::Read, 16, window);
            rates.push(summarise(latencies).requests as f64 / seconds as f64);
        }
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[1]
    };
    let (off, on) = (median(&mut rates_off), median(&mut rates_on));
    println!(
        "GET /api/patients/{{id}}, 16 clients, {seconds} s windows x3 interleaved: in-memory limits {off:.0}/s, shared limits {on:.0}/s, ratio {:.3}",
        on / off
    );
}

fn run_window(label: &str, latencies: Vec<Duration>, seconds: f64, ceiling: f64) -> f64 {
    let s = summarise(latencies);
    let rate = s.requests as f64 / seconds;
    println!(
        "{label:<40} {rate:>8.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ceiling {ceiling:>8.0}/s   ratio {:.2}",
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        rate / ceiling
    );
    rate / ceiling
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
    let count = env_number("BENCH_PATIENTS", 5000) as usize;
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (run ./scripts/bench records)");
    let pool = PgPool::connect(&url).await.unwrap();
    clinicd::startup::MIGRATOR.run(&pool).await.unwrap();
    let staff = clinicd_test_support::create_user(&pool, "bench.desk", PASSWORD, false).await;
    clinicd_identity::users::assign_role(&pool, staff, "Staff", None)
        .await
        .unwrap();
    let server = start(pool.clone()).await;
    let token = access_token(&server.client(), &server.base, "bench.desk", PASSWORD).await;

    let started = Instant::now();
    let patients = Arc::new(seed(&server, &token, count).await);
    println!(
        "seeded {count} patients in {:.1} s ({:.0}/s, each with its care-team row and audit event)",
        started.elapsed().as_secs_f64(),
        count as f64 / started.elapsed().as_secs_f64()
    );
    if std::env::var("BENCH_SHARED_LIMITS").is_ok_and(|v| v == "1") {
        shared_limits(&pool, &server, &token, patients, seconds).await;
        return;
    }
    prepare_ceiling(&pool).await;
    let read_sql = format!(
        "\\set n random(1, {count})\nSELECT p.* FROM patients p JOIN bench_rows b ON b.id = p.id WHERE b.n = :n;\n{AUDIT_INSERT}\n"
    );
    let search_sql = format!(
        "\\set n random(1, {count})\nSELECT p.* FROM bench_rows b JOIN patients p ON p.family_name_bidx = b.family_name_bidx \
         AND p.date_of_birth_bidx = b.date_of_birth_bidx WHERE b.n = :n;\n{AUDIT_INSERT}\n"
    );
    // Warm up.
    load(
        &server,
        &token,
        patients.clone(),
        Kind::Read,
        8,
        Duration::from_secs(1),
    );
    load(
        &server,
        &token,
        patients.clone(),
        Kind::Search,
        8,
        Duration::from_secs(1),
    );

    let secs = seconds as f64;
    let window = Duration::from_secs(seconds);
    println!(
        "\n{seconds} s windows; ceiling = pgbench: the same SELECT + one audit INSERT per transaction"
    );
    let mut ratios = Vec::new();
    for clients in [16usize, 64] {
        // Where the time goes: the same load on routes that do less, against the read ceiling.
        let ceiling = pgbench(&read_sql, clients, seconds);
        for (kind, label) in [
            (Kind::Health, "GET /health (no database)"),
            (Kind::Me, "GET /api/auth/me (session + audit)"),
        ] {
            let ours = load(&server, &token, patients.clone(), kind, clients, window);
            run_window(&format!("{label}, {clients}"), ours, secs, ceiling);
        }
        let ceiling = pgbench(&read_sql, clients, seconds);
        let ours = load(
            &server,
            &token,
            patients.clone(),
            Kind::Read,
            clients,
            window,
        );
        ratios.push(run_window(
            &format!("GET /api/patients/{{id}}, {clients} clients"),
            ours,
            secs,
            ceiling,
        ));
        let ceiling = pgbench(&search_sql, clients, seconds);
        let ours = load(
            &server,
            &token,
            patients.clone(),
            Kind::Search,
            clients,
            window,
        );
        ratios.push(run_window(
            &format!("search name + DOB, {clients} clients"),
            ours,
            secs,
            ceiling,
        ));
    }
    println!(
        "\nratios (target >= 0.5): {}",
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `GET /health`: TLS, HTTP and the middleware, no database: our stack's own ceiling here.
    Health,
    /// `GET /api/auth/me`: plus the session check and an audit event.
    Me,
    Read,
    Search,
    /// A clinic's mix, out of every 20 requests: 14 patient reads (70%), 3 searches (15%),
    /// 2 new notes (10%) and 1 booking (5%).
    Mixed,
}

/// What one load window saw.
struct Window {
    latencies: Vec<Duration>,
    /// Answers other than 2xx, and requests that failed outright.
    errors: usize,
    /// CPU seconds the load generator's own thread used (the rest of this process is the server).
    client_cpu: f64,
}

/// Booking slots: each booking takes the next half hour, so none overlaps another.
static SLOT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// The request a client sends for its `n`th iteration.
fn request(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    kind: Kind,
    n: usize,
    patient: &(String, String, String),
    provider: &str,
) -> reqwest::RequestBuilder {
    let (id, family, dob) = patient;
    let kind = match kind {
        Kind::Mixed => match n % 20 {
            0..14 => Kind::Read,
            14..17 => Kind::Search,
            17..19 => {
                return client
                    .post(format!("{base}/api/patients/{id}/notes"))
                    .bearer_auth(token)
                    .json(&json!({"encounter_date": "2026-11-30", "body": NOTE_BODY}));
            }
            _ => {
                let slot = SLOT.fetch_add(1, Ordering::Relaxed);
                let start = chrono::DateTime::<chrono::Utc>::from_timestamp(1_798_761_600, 0)
                    .unwrap()
                    + chrono::Duration::minutes(30 * slot);
                return client
                    .post(format!("{base}/api/appointments"))
                    .bearer_auth(token)
                    .json(&json!({"patient_id": id, "provider_id": provider,
                        "starts_at": start, "ends_at": start + chrono::Duration::minutes(30),
                        "kind": "follow_up"}));
            }
        },
        other => other,
    };
    match kind {
        Kind::Health => client.get(format!("{base}/health")),
        Kind::Me => client.get(format!("{base}/api/auth/me")).bearer_auth(token),
        Kind::Search => client
            .post(format!("{base}/api/patients/search"))
            .bearer_auth(token)
            .json(&json!({"family_name": family, "date_of_birth": dob})),
        Kind::Read | Kind::Mixed => client
            .get(format!("{base}/api/patients/{id}"))
            .bearer_auth(token),
    }
}

/// A visit note's length of text (about 600 characters).
const NOTE_BODY: &str = "Subjective: follow-up for hypertension; no chest pain, no shortness of breath, \
    sleeping well, taking medication as prescribed. Objective: BP 132/84, HR 72, weight stable, \
    heart sounds normal, lungs clear. Assessment: essential hypertension, improving on current \
    dose; continue lifestyle advice. Plan: continue lisinopril 10 mg daily, repeat basic \
    metabolic panel in three months, home blood pressure log, return in 12 weeks or sooner if \
    readings stay above 140/90. Patient understands and agrees with the plan. Time spent: 20 \
    minutes, more than half in counselling and coordination of care.";

/// CPU seconds (user + system) in a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name: state is the 3rd, utime the 14th.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn own_cpu(path: &str) -> f64 {
    stat_cpu(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// CPU seconds used so far by each PostgreSQL process (the bench's cluster is the only one
/// running while it measures), by pid.
fn postgres_cpu() -> std::collections::HashMap<u32, f64> {
    let mut cpu = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if stat.contains("(postgres)") {
            cpu.insert(pid, stat_cpu(&stat).unwrap_or(0.0));
        }
    }
    cpu
}

/// CPU used between two readings by the processes alive at both (the ceiling's pgbench
/// connections end around a window's start; their backends would count as negative).
fn postgres_cpu_between(
    before: &std::collections::HashMap<u32, f64>,
    after: &std::collections::HashMap<u32, f64>,
) -> f64 {
    after
        .iter()
        .filter_map(|(pid, cpu)| before.get(pid).map(|was| cpu - was))
        .sum()
}

/// `clients` loops for `duration` on a runtime of their own.
fn load(
    server: &Server,
    token: &str,
    provider: &str,
    patients: Arc<Vec<(String, String, String)>>,
    kind: Kind,
    clients: usize,
    duration: Duration,
) -> Window {
    let client = server.client();
    let base = server.base.clone();
    let token = token.to_owned();
    let provider = provider.to_owned();
    on_own_thread(move || {
        Box::pin(async move {
            let cpu_before = own_cpu("/proc/thread-self/stat");
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = tokio::task::JoinSet::new();
            for c in 0..clients {
                let (client, base, token, provider, patients, stop) = (
                    client.clone(),
                    base.clone(),
                    token.clone(),
                    provider.clone(),
                    patients.clone(),
                    stop.clone(),
                );
                tasks.spawn(async move {
                    let (mut latencies, mut errors) = (Vec::new(), 0);
                    let mut n = c * 7919;
                    while !stop.load(Ordering::Relaxed) {
                        let patient = &patients[n % patients.len()];
                        let started = Instant::now();
                        let sent =
                            request(&client, &base, &token, kind, n, patient, &provider).send();
                        n += 1;
                        match sent.await {
                            Ok(response) => {
                                let ok = response.status().is_success();
                                if response.bytes().await.is_err() || !ok {
                                    errors += 1;
                                }
                            }
                            Err(_) => errors += 1,
                        }
                        latencies.push(started.elapsed());
                    }
                    (latencies, errors)
                });
            }
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
            let mut window = Window {
                latencies: Vec::new(),
                errors: 0,
                client_cpu: 0.0,
            };
            while let Some(done) = tasks.join_next().await {
                let (latencies, errors) = done.unwrap();
                window.latencies.extend(latencies);
                window.errors += errors;
            }
            window.client_cpu = own_cpu("/proc/thread-self/stat") - cpu_before;
            window
        })
    })
    .join()
    .unwrap()
}

/// The ceiling: pgbench running `scripts` (SQL, weight) with `clients` connections;
/// transactions per second.
fn pgbench(scripts: &[(&str, u32)], clients: usize, seconds: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("DATABASE_URL").unwrap();
    let mut command = std::process::Command::new("pgbench");
    command.args([
        "-n",
        "-M",
        "prepared",
        "-j",
        "2",
        "-c",
        &clients.to_string(),
        "-T",
        &seconds.to_string(),
    ]);
    for (i, (script, weight)) in scripts.iter().enumerate() {
        let file = dir.path().join(format!("script{i}.sql"));
        std::fs::write(&file, script).unwrap();
        command
            .arg("-f")
            .arg(format!("{}@{weight}", file.display()));
    }
    let output = command
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
        "DROP TABLE IF EXISTS bench_writes",
        "CREATE TABLE bench_writes (id bigserial PRIMARY KEY, patient_id uuid NOT NULL, body bytea NOT NULL)",
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

/// The pgbench scripts of each route's ceiling: the rows the route reads or writes, plus the
/// audit INSERT, in the route's proportions.
struct Ceilings {
    read: String,
    search: String,
    write: String,
}

impl Ceilings {
    fn new(count: usize) -> Self {
        Self {
            read: format!(
                "\\set n random(1, {count})\nSELECT p.* FROM patients p JOIN bench_rows b ON b.id = p.id WHERE b.n = :n;\n{AUDIT_INSERT}\n"
            ),
            search: format!(
                "\\set n random(1, {count})\nSELECT p.* FROM bench_rows b JOIN patients p ON p.family_name_bidx = b.family_name_bidx \
                 AND p.date_of_birth_bidx = b.date_of_birth_bidx WHERE b.n = :n;\n{AUDIT_INSERT}\n"
            ),
            // A note or a booking: one row of a note's size, plus its audit event.
            write: format!(
                "\\set n random(1, {count})\nINSERT INTO bench_writes (patient_id, body) SELECT id, convert_to(repeat('x', 700), 'UTF8') FROM bench_rows WHERE n = :n;\n{AUDIT_INSERT}\n"
            ),
        }
    }

    fn scripts(&self, kind: Kind) -> Vec<(&str, u32)> {
        match kind {
            Kind::Search => vec![(self.search.as_str(), 1)],
            Kind::Mixed => vec![
                (self.read.as_str(), 14),
                (self.search.as_str(), 3),
                (self.write.as_str(), 3),
            ],
            Kind::Health | Kind::Me | Kind::Read => vec![(self.read.as_str(), 1)],
        }
    }
}

/// Where a window's time went in PostgreSQL (pg_stat_statements) and in CPU.
#[derive(Default, Clone)]
struct Profile {
    statements: f64,
    pg_exec_ms: f64,
    pg_cpu_ms: f64,
    server_cpu_ms: f64,
    client_cpu_ms: f64,
    /// (calls per request, mean ms, statement), busiest first.
    top: Vec<(f64, f64, String)>,
}

async fn reset_statements(pool: &PgPool) {
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(pool)
        .await
        .unwrap();
}

/// Statements per request and their time since the last reset, without the bench's own.
async fn statements(pool: &PgPool, requests: f64) -> (f64, f64, Vec<(f64, f64, String)>) {
    let rows: Vec<(i64, f64, String)> = sqlx::query_as(
        "SELECT calls, total_exec_time, query FROM pg_stat_statements \
         WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let calls: i64 = rows.iter().map(|r| r.0).sum();
    let time: f64 = rows.iter().map(|r| r.1).sum();
    let top = rows
        .iter()
        .take(12)
        .map(|(c, t, q)| {
            let q: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
            (
                *c as f64 / requests,
                t / (*c).max(1) as f64,
                q.chars().take(110).collect(),
            )
        })
        .collect();
    (calls as f64 / requests, time / requests, top)
}

/// One measured window of ours, with its profile.
#[allow(
    clippy::too_many_arguments,
    reason = "the window's whole set-up, spelled out"
)]
async fn measure(
    pool: &PgPool,
    server: &Server,
    token: &str,
    provider: &str,
    patients: &Arc<Vec<(String, String, String)>>,
    kind: Kind,
    clients: usize,
    seconds: u64,
) -> (Window, Profile) {
    // Let the ceiling's pgbench connections finish closing first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    reset_statements(pool).await;
    let (pg_before, me_before) = (postgres_cpu(), own_cpu("/proc/self/stat"));
    let window = load(
        server,
        token,
        provider,
        patients.clone(),
        kind,
        clients,
        Duration::from_secs(seconds),
    );
    let (pg_after, me_after) = (postgres_cpu(), own_cpu("/proc/self/stat"));
    let requests = window.latencies.len().max(1) as f64;
    let (statements, pg_exec_ms, top) = statements(pool, requests).await;
    let per_request = |seconds: f64| seconds * 1e3 / requests;
    let profile = Profile {
        statements,
        pg_exec_ms,
        pg_cpu_ms: per_request(postgres_cpu_between(&pg_before, &pg_after)),
        server_cpu_ms: per_request(me_after - me_before - window.client_cpu),
        client_cpu_ms: per_request(window.client_cpu),
        top,
    };
    (window, profile)
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
    load(&on, &token_on, "", patients.clone(), Kind::Read, 16, window);
    let (off, on) = interleaved_reads((off, token_off), (&on, &token_on), &patients, 16, seconds);
    println!(
        "GET /api/patients/{{id}}, 16 clients, {seconds} s windows x3 interleaved: in-memory limits {off:.0}/s, shared limits {on:.0}/s, ratio {:.3}",
        on / off
    );
}

/// The read rate (median of three rounds) of two servers, windows interleaved and the order
/// alternated each round, so that drift within a round hits both alike.
fn interleaved_reads(
    a: (&Server, &str),
    b: (&Server, &str),
    patients: &Arc<Vec<(String, String, String)>>,
    clients: usize,
    seconds: u64,
) -> (f64, f64) {
    let window = Duration::from_secs(seconds);
    let (mut rates_a, mut rates_b) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let mut pair = [(a, &mut rates_a), (b, &mut rates_b)];
        if round % 2 == 1 {
            pair.reverse();
        }
        for ((server, token), rates) in pair {
            let window = load(
                server,
                token,
                "",
                patients.clone(),
                Kind::Read,
                clients,
                window,
            );
            rates.push(summarise(window.latencies).requests as f64 / seconds as f64);
        }
    }
    (median(rates_a), median(rates_b))
}

/// `BENCH_POOL_AB=1`: the read on the server's pool (a connection pinged before use only after
/// 5 s idle) against the same server on sqlx's default pool (pinged before every use), both on
/// one database, windows interleaved and the order alternated each round.
async fn pool_ab(
    url: &str,
    ours: &Server,
    token_ours: &str,
    patients: Arc<Vec<(String, String, String)>>,
    seconds: u64,
) {
    let default_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(env_number("BENCH_DB_CONNECTIONS", 10) as u32)
        .connect(url)
        .await
        .unwrap();
    let other = start(default_pool).await;
    let token_other = access_token(&other.client(), &other.base, "bench.desk", PASSWORD).await;
    let window = Duration::from_secs(seconds);
    load(
        &other,
        &token_other,
        "",
        patients.clone(),
        Kind::Read,
        16,
        window,
    );
    for clients in [16usize, 64] {
        let (ours, other) = interleaved_reads(
            (ours, token_ours),
            (&other, &token_other),
            &patients,
            clients,
            seconds,
        );
        println!(
            "GET /api/patients/{{id}}, {clients} clients, {seconds} s windows x3 interleaved: sqlx's default pool {other:.0}/s, ours {ours:.0}/s, ratio {:.3}",
            ours / other
        );
    }
}

/// One route's window in one round.
struct Sample {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    ceiling: f64,
    profile: Profile,
}

impl Sample {
    fn new(window: Window, profile: Profile, seconds: f64, ceiling: f64) -> Self {
        let errors = window.errors;
        let s = summarise(window.latencies);
        Self {
            rate: s.requests as f64 / seconds,
            p50_ms: s.p50.as_secs_f64() * 1e3,
            p99_ms: s.p99.as_secs_f64() * 1e3,
            errors,
            ceiling,
            profile,
        }
    }

    fn ratio(&self) -> f64 {
        self.rate / self.ceiling
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn label(kind: Kind) -> &'static str {
    match kind {
        Kind::Health => "GET /health (no database)",
        Kind::Me => "GET /api/auth/me",
        Kind::Read => "GET /api/patients/{id}",
        Kind::Search => "search name + DOB",
        Kind::Mixed => "mixed 70/15/10/5",
    }
}

fn print_sample(round: usize, kind: Kind, clients: usize, s: &Sample) {
    println!(
        "round {round}  {:<26} {clients:>3} clients {:>7.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {:>3}  ceiling {:>6.0}/s  ratio {:.2}   | {:.2} stmts, pg {:.2}/{:.2} ms exec/cpu, server {:.2} ms, client {:.2} ms cpu per request",
        label(kind),
        s.rate,
        s.p50_ms,
        s.p99_ms,
        s.errors,
        s.ceiling,
        s.ratio(),
        s.profile.statements,
        s.profile.pg_exec_ms,
        s.profile.pg_cpu_ms,
        s.profile.server_cpu_ms,
        s.profile.client_cpu_ms,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

const KINDS: [Kind; 5] = [
    Kind::Read,
    Kind::Me,
    Kind::Search,
    Kind::Mixed,
    Kind::Health,
];

/// `BENCH_ROUTES` (read, me, search, mixed, health; comma-separated) narrows a run while
/// working on one path; the default runs them all. `me` is measured against the read ceiling.
fn chosen(kind: Kind) -> bool {
    let Ok(routes) = std::env::var("BENCH_ROUTES") else {
        return true;
    };
    let name = match kind {
        Kind::Read => "read",
        Kind::Me => "me",
        Kind::Search => "search",
        Kind::Mixed => "mixed",
        Kind::Health => "health",
    };
    routes.split(',').any(|r| r.trim() == name)
}

async fn run() {
    let seconds = env_number("BENCH_SECONDS", 15);
    let rounds = env_number("BENCH_ROUNDS", 3) as usize;
    let count = env_number("BENCH_PATIENTS", 5000) as usize;
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (run ./scripts/bench records)");
    // The server's own pool settings (the default of CLINICD_DB_MAX_CONNECTIONS).
    let pool = clinicd::startup::pool_options(env_number("BENCH_DB_CONNECTIONS", 10) as u32)
        .connect(&url)
        .await
        .unwrap();
    clinicd::startup::MIGRATOR.run(&pool).await.unwrap();
    let staff = clinicd_test_support::create_user(&pool, "bench.desk", PASSWORD, false).await;
    // Staff registers, searches and books; a custom role adds writing notes (the built-in
    // Provider role is privileged, and a second factor would only add a login step here). The
    // member of staff is also the booked provider.
    sqlx::query(
        "INSERT INTO roles (name, description, permissions) \
         VALUES ('BenchNotes', 'writes notes in the benchmark', ARRAY['note:read', 'note:write'])",
    )
    .execute(&pool)
    .await
    .unwrap();
    for role in ["Staff", "BenchNotes"] {
        clinicd_identity::users::assign_role(&pool, staff, role, None)
            .await
            .unwrap();
    }
    let provider = staff.0.to_string();
    let server = start(pool.clone()).await;
    let token = access_token(&server.client(), &server.base, "bench.desk", PASSWORD).await;

    let started = Instant::now();
    let patients = Arc::new(seed(&server, &token, count).await);
    println!(
        "seeded {count} patients in {:.1} s ({:.0}/s, each with its care-team row and audit event)",
        started.elapsed().as_secs_f64(),
        count as f64 / started.elapsed().as_secs_f64()
    );
    if std::env::var("BENCH_POOL_AB").is_ok_and(|v| v == "1") {
        pool_ab(&url, &server, &token, patients, seconds).await;
        return;
    }
    if std::env::var("BENCH_SHARED_LIMITS").is_ok_and(|v| v == "1") {
        shared_limits(&pool, &server, &token, patients, seconds).await;
        return;
    }
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&pool)
        .await
        .unwrap();
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await
        .expect("pg_stat_statements preloaded (./scripts/bench records starts it so)");
    prepare_ceiling(&pool).await;
    let ceilings = Ceilings::new(count);
    // Warm up every route (pools, prepared statements, key caches).
    for kind in [Kind::Read, Kind::Search, Kind::Mixed] {
        load(
            &server,
            &token,
            &provider,
            patients.clone(),
            kind,
            8,
            Duration::from_secs(1),
        );
    }

    let secs = seconds as f64;
    let clients_list = [16usize, 64];
    println!(
        "\nfsync = {fsync}, synchronous_commit = {sync}; {rounds} rounds of {seconds} s windows, each ceiling run just before the route it bounds;\n\
         ceiling = pgbench: the route's SELECT (or a note-sized INSERT) + one audit INSERT per transaction\n"
    );
    let mut samples: Vec<(usize, Kind, usize, Sample)> = Vec::new();
    for round in 1..=rounds {
        for &clients in &clients_list {
            let mut ceiling = 0.0;
            for kind in KINDS.into_iter().filter(|k| chosen(*k)) {
                if (kind != Kind::Me && kind != Kind::Health) || ceiling == 0.0 {
                    ceiling = pgbench(&ceilings.scripts(kind), clients, seconds);
                }
                let (window, profile) = measure(
                    &pool, &server, &token, &provider, &patients, kind, clients, seconds,
                )
                .await;
                let sample = Sample::new(window, profile, secs, ceiling);
                print_sample(round, kind, clients, &sample);
                samples.push((round, kind, clients, sample));
            }
        }
    }
    report(&samples, &clients_list);
}

/// Medians over the rounds, the profile of the last round, and the targets.
fn report(samples: &[(usize, Kind, usize, Sample)], clients_list: &[usize]) {
    println!(
        "\nmedians of the rounds (ratio = median of each round's ours/ceiling; Me and Health against the read ceiling)"
    );
    println!(
        "| route | clients | req/s | p50 ms | p99 ms | errors | ceiling/s | ratio | stmts/req | pg CPU ms/req | server CPU ms/req | client CPU ms/req |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = std::collections::HashMap::new();
    for &clients in clients_list {
        for kind in KINDS {
            let of: Vec<&Sample> = samples
                .iter()
                .filter(|(_, k, c, _)| *k == kind && *c == clients)
                .map(|(_, _, _, s)| s)
                .collect();
            if of.is_empty() {
                continue;
            }
            let m = |f: &dyn Fn(&Sample) -> f64| median(of.iter().map(|s| f(s)).collect());
            let ratio = m(&|s| s.ratio());
            let p99 = m(&|s| s.p99_ms);
            ratios.insert((label(kind), clients), (ratio, p99));
            println!(
                "| {} | {clients} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {ratio:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                label(kind),
                m(&|s| s.rate),
                m(&|s| s.p50_ms),
                p99,
                of.iter().map(|s| s.errors).sum::<usize>(),
                m(&|s| s.ceiling),
                m(&|s| s.profile.statements),
                m(&|s| s.profile.pg_cpu_ms),
                m(&|s| s.profile.server_cpu_ms),
                m(&|s| s.profile.client_cpu_ms),
            );
        }
    }
    let last = samples.iter().map(|(r, ..)| *r).max().unwrap_or(1);
    for kind in [Kind::Read, Kind::Search, Kind::Me] {
        if let Some((_, _, _, s)) = samples
            .iter()
            .find(|(r, k, c, _)| *r == last && *k == kind && *c == 64)
        {
            println!(
                "\nstatements per request, {} at 64 clients (last round):",
                label(kind)
            );
            for (calls, mean, query) in &s.profile.top {
                if *calls >= 0.01 {
                    println!("  {calls:>5.2} x {mean:>6.3} ms  {query}");
                }
            }
        }
    }
    let at = |kind, clients| {
        ratios
            .get(&(label(kind), clients))
            .copied()
            .unwrap_or_default()
    };
    let errors: usize = samples.iter().map(|(.., s)| s.errors).sum();
    println!("\ntargets:");
    for (what, value, target) in [
        ("patient read ratio, 64 clients", at(Kind::Read, 64).0, 0.5),
        ("patient read ratio, 16 clients", at(Kind::Read, 16).0, 0.4),
        ("search ratio, 64 clients", at(Kind::Search, 64).0, 0.35),
        ("search ratio, 16 clients", at(Kind::Search, 16).0, 0.35),
        ("/api/auth/me ratio, 64 clients", at(Kind::Me, 64).0, 0.6),
        ("/api/auth/me ratio, 16 clients", at(Kind::Me, 16).0, 0.6),
    ] {
        let verdict = if value >= target { "met" } else { "NOT met" };
        println!("  {what:<34} {value:.2} (>= {target}) {verdict}");
    }
    let p99 = at(Kind::Read, 64).1;
    let verdict = if p99 < 40.0 { "met" } else { "NOT met" };
    println!(
        "  {:<34} {p99:.1} ms (< 40 ms) {verdict}",
        "patient read p99, 64 clients"
    );
    println!("  errors in all windows: {errors}");
}

//! Upload and download of one large file through the real HTTPS API to the local store.
//!
//! A member of staff registers a patient, then uploads BENCH_FILE_MIB MiB (default 256) as
//! `multipart/form-data`, streamed from a repeated 1 MiB block (so the client holds almost
//! nothing), and downloads it back, counting bytes as they arrive. Each is timed end to end:
//! MB/s. The ceiling is single-core `openssl speed -evp aes-256-gcm` on 16 KiB blocks in the
//! same run; each transfer is repeated BENCH_ROUNDS times (default 3) and the median
//! reported. The figure that matters is ours/ceiling (target: at least 0.25, since TLS and our
//! encryption are two AES passes, plus parsing and I/O).
//!
//! Memory: the peak RSS (VmHWM) of this process, which holds the server and the client, is
//! read before and after each transfer; whatever the file size it should stay flat (target:
//! a 1 GiB upload under 100 MiB; try BENCH_FILE_MIB=1024).
//!
//! Run with `./scripts/bench files`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::time::Instant;

use actix_web::web::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Server, access_token, env_number, start_with};

const PASSWORD: &str = "correct horse battery staple";
const BOUNDARY: &str = "clinicd-bench-boundary-0d7f3a";
const BLOCK: usize = 1024 * 1024;

/// Peak and current resident set size of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A PDF-looking block of noise (the server sniffs the first bytes).
fn block() -> Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data: Vec<u8> = (0..BLOCK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    data[..9].copy_from_slice(b"%PDF-1.7\n");
    Bytes::from(data)
}

async fn setup(server: &Server) -> (String, String) {
    let token = access_token(server, "bench.desk", PASSWORD).await;
    let patient: Value = server
        .client()
        .post(format!("{}/api/patients", server.base))
        .bearer_auth(&token)
        .json(&json!({"given_name": "Pat", "family_name": "Bench", "date_of_birth": "1970-01-01", "sex": "unknown"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (token, patient["id"].as_str().unwrap().to_owned())
}

async fn upload(server: &Server, token: &str, patient: &str, mib: usize) -> String {
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"category\"\r\n\r\nlab_result\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.pdf\"\r\n\
         Content-Type: application/pdf\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    let length = head.len() + mib * BLOCK + tail.len();
    let block = block();
    let parts = std::iter::once(Bytes::from(head))
        .chain(std::iter::repeat_n(block, mib))
        .chain(std::iter::once(Bytes::from(tail)));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        parts.map(Ok::<_, std::io::Error>),
    ));
    let response = server
        .client()
        .post(format!("{}/api/patients/{patient}/files", server.base))
        .bearer_auth(token)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("Content-Length", length)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "upload failed");
    let stored: Value = response.json().await.unwrap();
    assert_eq!(stored["size"], (mib * BLOCK) as u64);
    stored["id"].as_str().unwrap().to_owned()
}

async fn download(server: &Server, token: &str, id: &str) -> usize {
    let response = server
        .client()
        .get(format!("{}/api/files/{id}", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = 0;
    while let Some(chunk) = stream.next().await {
        received += chunk.expect("the download ended early").len();
    }
    received
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let mib = env_number("BENCH_FILE_MIB", 256) as usize;
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (run ./scripts/bench files)");
    let pool = PgPool::connect(&url).await.unwrap();
    clinicd::startup::MIGRATOR.run(&pool).await.unwrap();
    let staff = clinicd_test_support::create_user(&pool, "bench.desk", PASSWORD, false).await;
    clinicd_identity::users::assign_role(&pool, staff, "Staff", None)
        .await
        .unwrap();
    let server = start_with(
        pool.clone(),
        &[("CLINICD_FILE_MAX_BYTES", ((mib + 1) * BLOCK).to_string())],
    )
    .await;
    let (token, patient) = setup(&server).await;
    let bytes = (mib * BLOCK) as f64;
    let ceiling_before = clinicd_test_support::openssl_aes_gcm();
    let (peak_start, _) = memory();
    let rounds = env_number("BENCH_ROUNDS", 3).max(1) as usize;
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    let mut peak_up = 0.0;
    for _ in 0..rounds {
        let started = Instant::now();
        let id = upload(&server, &token, &patient, mib).await;
        ups.push(bytes / started.elapsed().as_secs_f64());
        peak_up = memory().0;

        let started = Instant::now();
        let received = download(&server, &token, &id).await;
        downs.push(bytes / started.elapsed().as_secs_f64());
        assert_eq!(received, mib * BLOCK, "short download");
    }
    let (peak_down, now) = memory();
    let (up, down) = (median(&mut ups), median(&mut downs));
    let ceiling_after = clinicd_test_support::openssl_aes_gcm();

    let mb = |r: f64| r / 1e6;
    println!(
        "{mib} MiB through the HTTPS API to the local store (server and client in this process):"
    );
    let all = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{:.0}", mb(*r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  upload   {:.0} MB/s median of {rounds} ({})",
        mb(up),
        all(&ups)
    );
    println!(
        "  download {:.0} MB/s median of {rounds} ({})",
        mb(down),
        all(&downs)
    );
    println!(
        "  peak RSS: {peak_start:.1} MiB before, {peak_up:.1} MiB after the uploads, {peak_down:.1} MiB after the downloads (now {now:.1} MiB)"
    );
    match (ceiling_before, ceiling_after) {
        (Some(before), Some(after)) => {
            let ceiling = (before + after) / 2.0;
            println!(
                "  openssl speed -evp aes-256-gcm, 16 KiB, one core: {:.0} MB/s (before {:.0}, after {:.0})",
                mb(ceiling),
                mb(before),
                mb(after)
            );
            println!(
                "  ratio to the ceiling: upload {:.2}, download {:.2} (target >= 0.25)",
                up / ceiling,
                down / ceiling
            );
        }
        _ => println!("  openssl not found: no ratio"),
    }
}

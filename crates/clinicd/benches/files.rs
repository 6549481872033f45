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
//! The local disk's own write speed (the same amount written and fsynced in the same file
//! system, before and after) is reported too: on small cloud machines it can be the real limit
//! of an upload to the local store.
//!
//! The server is the release `clinicd` binary in a process of its own, so its memory is its
//! own: its peak RSS (VmHWM) is read before and after the transfers; whatever the file size it
//! should stay flat (target: a 1 GiB upload under 100 MiB; try BENCH_FILE_MIB=1024).
//!
//! Run with `./scripts/bench files`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    reason = "a benchmark: a panic is its report, and it prints its figures"
)]

mod support;

use std::time::Instant;

use actix_web::web::Bytes;
use clinicd_test_support::access_token;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::env_number;

const PASSWORD: &str = "correct horse battery staple";
const BOUNDARY: &str = "clinicd-bench-boundary-0d7f3a";
const BLOCK: usize = 1024 * 1024;

/// Peak and current resident set size of process `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
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

/// A PNG-looking block of noise (the server sniffs the first bytes; a PDF would be stamped on
/// download, which is measured by `./scripts/bench pdf`).
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
    data[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
    Bytes::from(data)
}

/// The release server binary on a free port with a data directory of its own; killed on drop.
struct Spawned {
    process: std::process::Child,
    base: String,
    cert: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Spawned {
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.cert).unwrap()])
            .build()
            .unwrap()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

async fn spawn_server(mib: usize) -> Spawned {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let process = std::process::Command::new(env!("CARGO_BIN_EXE_clinicd"))
        .env_clear()
        .env("CLINICD_MODE", "development")
        .env("DATABASE_URL", std::env::var("DATABASE_URL").unwrap())
        .env("CLINICD_TOKEN_SIGNING_KEY", "A".repeat(64))
        .env("CLINICD_DATA_DIR", dir.path())
        .env("CLINICD_MASTER_KEY_FILE", &key_file)
        .env("CLINICD_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("CLINICD_METRICS_ADDR", "127.0.0.1:0")
        .env("CLINICD_LOG", "warn")
        .env("CLINICD_FILE_MAX_BYTES", ((mib + 1) * BLOCK).to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the clinicd binary");
    let base = format!("https://localhost:{port}");
    let cert_file = dir.path().join("tls/cert.pem");
    for _ in 0..300 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Ok(cert) = std::fs::read(&cert_file) else {
            continue;
        };
        let spawned = Spawned {
            process,
            base,
            cert,
            _dir: dir,
        };
        for _ in 0..300 {
            let health = spawned
                .client()
                .get(format!("{}/health", spawned.base))
                .send()
                .await;
            if health.is_ok_and(|r| r.status() == 200) {
                return spawned;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the server did not answer");
    }
    panic!("the server did not start");
}

async fn setup(server: &Spawned) -> (String, String) {
    let token = access_token(&server.client(), &server.base, "bench.desk", PASSWORD).await;
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

async fn upload(server: &Spawned, token: &str, patient: &str, mib: usize) -> String {
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"category\"\r\n\r\nlab_result\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
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

async fn download(server: &Spawned, token: &str, id: &str) -> usize {
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

/// The local disk's own write speed for the same amount: written in 1 MiB blocks and fsynced
/// (as the local store does) in the same file system as the store, in MB/s.
fn disk_write(mib: usize) -> f64 {
    use std::io::Write;
    let block = block();
    let path = std::env::temp_dir().join(format!("clinicd-disk-ceiling-{}", std::process::id()));
    let started = Instant::now();
    let mut file = std::fs::File::create(&path).unwrap();
    for _ in 0..mib {
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
    let rate = (mib * BLOCK) as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    rate
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
    let server = spawn_server(mib).await;
    let pid = server.process.id();
    let (token, patient) = setup(&server).await;
    let bytes = (mib * BLOCK) as f64;
    let ceiling_before = clinicd_test_support::openssl_aes_gcm();
    let disk_before = disk_write(mib);
    let (peak_start, _) = memory(pid);
    let rounds = env_number("BENCH_ROUNDS", 3).max(1) as usize;
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    let mut peak_up = 0.0;
    for _ in 0..rounds {
        let started = Instant::now();
        let id = upload(&server, &token, &patient, mib).await;
        ups.push(bytes / started.elapsed().as_secs_f64());
        peak_up = memory(pid).0;

        let started = Instant::now();
        let received = download(&server, &token, &id).await;
        downs.push(bytes / started.elapsed().as_secs_f64());
        assert_eq!(received, mib * BLOCK, "short download");
    }
    let (peak_down, now) = memory(pid);
    let (up, down) = (median(&mut ups), median(&mut downs));
    let ceiling_after = clinicd_test_support::openssl_aes_gcm();
    let disk = (disk_before + disk_write(mib)) / 2.0;

    let mb = |r: f64| r / 1e6;
    println!(
        "{mib} MiB through the HTTPS API to the local store (the release server in its own process):"
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
        "  server peak RSS: {peak_start:.1} MiB before, {peak_up:.1} MiB after the uploads, {peak_down:.1} MiB after the downloads (now {now:.1} MiB)"
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
    println!(
        "  the disk itself, {mib} MiB written and fsynced in the same file system: {:.0} MB/s; upload / disk {:.2}",
        mb(disk),
        up / disk
    );
}

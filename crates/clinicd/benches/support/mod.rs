//! What the benchmarks share: the real server on a throwaway database, load generators on
//! threads of their own, and latency summaries.

#![allow(
    dead_code,
    reason = "each benchmark uses its own part of the shared support"
)]

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use clinicd::{Application, Settings};
use sqlx::PgPool;

pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The running server. Each load generator builds its own client on its own runtime and OS
/// thread (a reqwest client's connections live on the runtime that made them), so the probe's
/// latency never includes waiting behind the flood's tasks inside the benchmark process.
pub struct Server {
    pub base: String,
    pub cert: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.cert).unwrap()])
            .pool_max_idle_per_host(64)
            .build()
            .unwrap()
    }
}

pub type Work<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// Runs `work` on a fresh single-threaded runtime on its own OS thread.
pub fn on_own_thread<T: Send + 'static>(
    work: impl FnOnce() -> Work<T> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work())
    })
}

pub async fn start(pool: PgPool) -> Server {
    start_with(pool, &[]).await
}

/// As [`start`], with settings of the caller's on top (the records bench's shared-limits run).
pub async fn start_with(pool: PgPool, extra: &[(&str, &str)]) -> Server {
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
    for (name, value) in extra {
        vars.insert((*name).into(), (*value).into());
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
    Server {
        base,
        cert,
        _dir: dir,
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub struct Summary {
    pub requests: usize,
    pub p50: Duration,
    pub p99: Duration,
}

pub fn summarise(mut latencies: Vec<Duration>) -> Summary {
    latencies.sort();
    Summary {
        requests: latencies.len(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    }
}

//! The low-level test kit shared by every crate's tests: key material, a pool that never
//! connects, moto_server (S3 and KMS) clients, the bulk-encryption ceiling and a fake HTTP peer.
//! It depends on nothing of the HTTP API, so testing the crypto, audit or files crate builds
//! only what it tests; the API's own helpers live in `clinicd-test-support`, which re-exports
//! these.
//!
//! Must not: be a dependency of anything but tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::missing_panics_doc,
    reason = "test helpers: a panic is the test's report"
)]

pub mod fake_http;

use std::sync::Arc;

use clinicd_crypto::{Keyring, LocalKeyProvider, SecretKey};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// A pool that can never connect (port 1 on loopback): for tests that need no database, and
/// for proving that an unreachable database yields 503.
pub fn dead_pool() -> PgPool {
    PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap()
}

/// The master key of every test app's local key provider.
pub const MASTER_KEY: [u8; 32] = [12; 32];

/// A keyring over `pool` (call `bootstrap` before use on a live database).
pub fn keyring(pool: PgPool) -> Arc<Keyring> {
    let provider = LocalKeyProvider::new(SecretKey::from_bytes(&MASTER_KEY).unwrap());
    Arc::new(Keyring::new(pool, Arc::new(provider), Default::default()))
}

/// The shared AWS configuration for moto_server. Fails loudly when moto is not configured:
/// `./scripts/test` starts it and exports `AWS_ENDPOINT_URL`.
pub async fn moto_config() -> aws_config::SdkConfig {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL must point at moto_server (run the tests through ./scripts/test)",
    );
    aws_config::from_env()
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// An S3 client for moto_server (path-style addressing) and a fresh bucket with Object Lock.
pub async fn moto_s3_bucket() -> (aws_sdk_s3::Client, String) {
    let config = aws_sdk_s3::config::Builder::from(&moto_config().await)
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let bucket = format!("clinicd-test-{}", uuid::Uuid::now_v7().simple());
    client
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    (client, bucket)
}

/// A fresh KMS key in moto_server, through the real AWS SDK. Fails loudly when moto is not
/// configured: `./scripts/test` starts it and exports `AWS_ENDPOINT_URL`.
pub async fn moto_kms_key() -> (aws_sdk_kms::Client, String) {
    let client = aws_sdk_kms::Client::new(&moto_config().await);
    let key = client
        .create_key()
        .description("clinicd test root key")
        .send()
        .await
        .unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    (client, key_id)
}

/// `openssl speed -evp aes-256-gcm` on 16 KiB blocks, one core: bytes per second (the
/// benchmarks' ceiling for bulk encryption, measured in the same run).
pub fn openssl_aes_gcm() -> Option<f64> {
    let output = std::process::Command::new("openssl")
        .args([
            "speed",
            "-seconds",
            "2",
            "-bytes",
            "16384",
            "-evp",
            "aes-256-gcm",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // The last line: "AES-256-GCM   <k/s for 16384 bytes>k"
    let line = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with("aes-256-gcm"))?;
    let kilobytes: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(kilobytes * 1000.0)
}

/// An object's whole body from a (moto) bucket.
pub async fn s3_object(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}

//! Signed checkpoints of the chain head, kept outside the database.
//!
//! A chain rebuilt without the audit key is caught by its heads; a trail emptied or cut short
//! by someone with the database (triggers off, rows and heads deleted together) leaves a shorter
//! chain that is still valid. Checkpoints catch that: every few minutes the head (sequence,
//! hash, time) is written, with an HMAC under the audit key, to a store the database cannot
//! touch (local disk in development; S3 with Object Lock arrives with the object-store work),
//! and verification insists that the chain still holds the last checkpoint's event with the
//! same hash.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use chrono::{DateTime, Utc};
use clinicd_crypto::Keyring;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::error::AuditError;

const DOMAIN: &[u8] = b"clinicd-audit-checkpoint-v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    /// Hex of the event's hash.
    pub hash: String,
    pub written_at: DateTime<Utc>,
    pub key_version: u32,
    /// Hex of HMAC(audit key, domain ‖ seq ‖ hash ‖ written_at).
    pub mac: String,
}

impl Checkpoint {
    fn message(seq: i64, hash: &str, written_at: DateTime<Utc>) -> Vec<u8> {
        let mut message = DOMAIN.to_vec();
        message.extend_from_slice(&seq.to_be_bytes());
        message.extend_from_slice(hash.as_bytes());
        message.extend_from_slice(&written_at.timestamp_micros().to_be_bytes());
        message
    }

    pub fn authentic(&self, key: &hmac::Key) -> bool {
        let message = Self::message(self.seq, &self.hash, self.written_at);
        hex::decode(&self.mac).is_ok_and(|mac| hmac::verify(key, &message, &mac).is_ok())
    }
}

#[async_trait]
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    async fn put(&self, checkpoint: &Checkpoint) -> Result<(), AuditError>;
    /// The checkpoint with the highest sequence number, if any.
    async fn latest(&self) -> Result<Option<Checkpoint>, AuditError>;
}

/// One JSON file per checkpoint in a directory (development, single host).
#[derive(Debug, Clone)]
pub struct LocalCheckpoints {
    dir: PathBuf,
}

impl LocalCheckpoints {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

fn io(error: std::io::Error) -> AuditError {
    AuditError::Unavailable(format!("checkpoint store: {error}"))
}

#[async_trait]
impl CheckpointStore for LocalCheckpoints {
    async fn put(&self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
        let name = format!("checkpoint-{:020}.json", checkpoint.seq);
        let body = serde_json::to_vec_pretty(checkpoint)
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        // Written aside and renamed, so a reader never sees half a checkpoint.
        let partial = self.dir.join(format!(".{name}.partial"));
        tokio::fs::write(&partial, body).await.map_err(io)?;
        tokio::fs::rename(&partial, self.dir.join(name))
            .await
            .map_err(io)
    }

    async fn latest(&self) -> Result<Option<Checkpoint>, AuditError> {
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io(error)),
        };
        let mut newest: Option<String> = None;
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("checkpoint-")
                && name.ends_with(".json")
                && newest.as_ref().is_none_or(|n| &name > n)
            {
                newest = Some(name);
            }
        }
        let Some(name) = newest else {
            return Ok(None);
        };
        let body = tokio::fs::read(self.dir.join(name)).await.map_err(io)?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| AuditError::Unavailable(format!("checkpoint store: {e}")))
    }
}

#[derive(sqlx::FromRow)]
struct Head {
    seq: i64,
    hash: Vec<u8>,
}

/// Writes a checkpoint of the current head (none if the trail is empty or unchanged since the
/// last checkpoint).
pub async fn write_checkpoint(
    db: &PgPool,
    keyring: &Keyring,
    store: &dyn CheckpointStore,
) -> Result<Option<Checkpoint>, AuditError> {
    // One writer at a time across every instance (the job queue may run two catch-up ticks
    // at once): the check for an existing checkpoint and the write happen under the lock, so
    // two never race to write the same one. The lock ends with the transaction.
    let mut lock = db.begin().await?;
    sqlx::query_scalar!(
        r#"SELECT true AS "locked!" FROM pg_advisory_xact_lock($1)"#,
        CHECKPOINT_LOCK
    )
    .fetch_one(&mut *lock)
    .await?;
    let written = write_locked(db, keyring, store).await;
    lock.commit().await?;
    written
}

/// The advisory lock key of checkpoint writing (an arbitrary constant, unique in clinicd).
const CHECKPOINT_LOCK: i64 = 7_022_629_598_042_026_613;

async fn write_locked(
    db: &PgPool,
    keyring: &Keyring,
    store: &dyn CheckpointStore,
) -> Result<Option<Checkpoint>, AuditError> {
    let head: Option<Head> = sqlx::query_as!(
        Head,
        "SELECT seq, hash FROM audit_heads ORDER BY seq DESC LIMIT 1"
    )
    .fetch_optional(db)
    .await?;
    let Some(head) = head else {
        return Ok(None);
    };
    if store
        .latest()
        .await?
        .is_some_and(|last| last.seq >= head.seq)
    {
        return Ok(None);
    }
    let (key_version, key) = keyring.audit_chain_key().await?;
    let hash = hex::encode(&head.hash);
    let written_at = crate::event::to_micros(Utc::now());
    let mac = hmac::sign(&key, &Checkpoint::message(head.seq, &hash, written_at));
    let checkpoint = Checkpoint {
        seq: head.seq,
        hash,
        written_at,
        key_version,
        mac: hex::encode(mac.as_ref()),
    };
    store.put(&checkpoint).await?;
    tracing::info!(seq = checkpoint.seq, "audit checkpoint written");
    Ok(Some(checkpoint))
}

/// An S3 client from the standard AWS variables; path-style addressing with an endpoint
/// override (moto, MinIO).
pub async fn s3_client_from_env() -> aws_sdk_s3::Client {
    let shared = aws_config::load_from_env().await;
    let path_style = std::env::var_os("AWS_ENDPOINT_URL").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The whole body of one object.
pub(crate) async fn s3_get(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, String> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| e.into_service_error().to_string())?;
    let body = object.body.collect().await.map_err(|e| e.to_string())?;
    Ok(body.into_bytes().to_vec())
}

/// Checkpoints as objects in S3 (or an S3-compatible store), optionally under Object Lock in
/// compliance mode so that not even the bucket's owner can delete or overwrite one before its
/// retention date. Keys are `PREFIXcheckpoint-<seq, 20 digits>.json`, so the newest sorts last.
pub struct S3Checkpoints {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    lock_days: Option<u32>,
}

impl fmt::Debug for S3Checkpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Checkpoints")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("lock_days", &self.lock_days)
            .finish_non_exhaustive()
    }
}

fn s3_error(error: impl fmt::Display) -> AuditError {
    AuditError::Unavailable(format!("checkpoint store (S3): {error}"))
}

impl S3Checkpoints {
    /// Credentials, region and endpoint from the standard AWS variables. With an endpoint
    /// override (moto, MinIO) path-style addressing is used.
    pub async fn from_env(bucket: String, prefix: String, lock_days: Option<u32>) -> Self {
        Self::new(s3_client_from_env().await, bucket, prefix, lock_days)
    }

    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
        lock_days: Option<u32>,
    ) -> Self {
        Self {
            client,
            bucket,
            prefix,
            lock_days,
        }
    }
}

#[async_trait]
impl CheckpointStore for S3Checkpoints {
    async fn put(&self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        use aws_sdk_s3::primitives::{ByteStream, DateTime as AwsTime};
        let body = serde_json::to_vec_pretty(checkpoint).map_err(s3_error)?;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(format!(
                "{}checkpoint-{:020}.json",
                self.prefix, checkpoint.seq
            ))
            .content_type("application/json")
            .body(ByteStream::from(body));
        if let Some(days) = self.lock_days {
            let until = Utc::now() + chrono::Duration::days(i64::from(days));
            request = request
                .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Compliance)
                .object_lock_retain_until_date(AwsTime::from_secs(until.timestamp()));
        }
        request
            .send()
            .await
            .map_err(|e| s3_error(e.into_service_error()))?;
        Ok(())
    }

    async fn latest(&self) -> Result<Option<Checkpoint>, AuditError> {
        let mut newest: Option<String> = None;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}checkpoint-", self.prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error(e.into_service_error()))?;
            for object in page.contents() {
                if let Some(key) = object
                    .key()
                    .filter(|k| newest.as_deref().is_none_or(|n| *k > n))
                {
                    newest = Some(key.to_owned());
                }
            }
        }
        let Some(key) = newest else {
            return Ok(None);
        };
        let bytes = s3_get(&self.client, &self.bucket, &key)
            .await
            .map_err(s3_error)?;
        serde_json::from_slice(&bytes).map(Some).map_err(s3_error)
    }
}

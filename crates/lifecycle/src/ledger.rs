//! The erasure ledger: one entry per erased patient (ids and a time, nothing else), each
//! linked to the one before by a SHA-256 hash and authenticated by an HMAC under the audit
//! chain key. Two copies: a table in the database, and objects outside it (a directory, or the
//! S3 bucket beside the audit checkpoints). A backup taken before an erasure still holds the
//! patient's wrapped key; the copy outside survives the restore, and the server replays it
//! before it reports ready ([`replay`]), so a restore never brings an erased patient back.
//!
//! The entry goes outside right after the erasure commits ([`crate::erasure::finish`]); if that
//! fails (or the process dies in between), the database's copy has it, and the next start or
//! run of the retention job writes it out ([`replay`] republishes what the outside lacks).

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hmac;
use chrono::{DateTime, Utc};
use clinicd_crypto::Keyring;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::LifecycleError;

const DOMAIN: &[u8] = b"clinicd-erasure-ledger-v1";
/// One appender at a time across every instance (an arbitrary constant, unique in clinicd).
const LEDGER_LOCK: i64 = 7_022_629_598_042_026_702;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: i64,
    pub patient_id: Uuid,
    pub request_id: Uuid,
    pub erased_at: DateTime<Utc>,
    /// Hex of the previous entry's hash (64 zeros for the first).
    pub prev_hash: String,
    /// Hex of SHA-256(domain ‖ seq ‖ patient ‖ request ‖ time ‖ previous hash).
    pub hash: String,
    pub key_version: u32,
    /// Hex of HMAC(audit chain key, hash).
    pub mac: String,
}

fn genesis() -> String {
    "0".repeat(64)
}

fn link(seq: i64, patient: Uuid, request: Uuid, at: DateTime<Utc>, prev: &str) -> String {
    let mut message = DOMAIN.to_vec();
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(patient.as_bytes());
    message.extend_from_slice(request.as_bytes());
    message.extend_from_slice(&at.timestamp_micros().to_be_bytes());
    message.extend_from_slice(prev.as_bytes());
    hex::encode(digest(&SHA256, &message))
}

impl LedgerEntry {
    /// Whether the entry's hash is its content's and its MAC is the audit key's.
    async fn authentic(&self, keyring: &Keyring) -> Result<bool, LifecycleError> {
        if link(
            self.seq,
            self.patient_id,
            self.request_id,
            self.erased_at,
            &self.prev_hash,
        ) != self.hash
        {
            return Ok(false);
        }
        let key = keyring.audit_chain_key_at(self.key_version).await?;
        Ok(hex::decode(&self.mac)
            .is_ok_and(|mac| hmac::verify(&key, self.hash.as_bytes(), &mac).is_ok()))
    }
}

/// Where the ledger's second copy lives: somewhere the database's owner cannot rewrite along
/// with the database.
#[async_trait]
pub trait LedgerStore: Send + Sync + fmt::Debug {
    async fn put(&self, entry: &LedgerEntry) -> Result<(), LifecycleError>;
    /// Every entry, in sequence order.
    async fn all(&self) -> Result<Vec<LedgerEntry>, LifecycleError>;
}

fn entry_name(seq: i64) -> String {
    format!("erasure-{seq:020}.json")
}

fn store_error(error: impl fmt::Display) -> LifecycleError {
    LifecycleError::Ledger(format!("store: {error}"))
}

/// One JSON file per entry in a directory (development, single host).
#[derive(Debug, Clone)]
pub struct LocalLedger {
    dir: PathBuf,
}

impl LocalLedger {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl LedgerStore for LocalLedger {
    async fn put(&self, entry: &LedgerEntry) -> Result<(), LifecycleError> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(store_error)?;
        let name = entry_name(entry.seq);
        let body = serde_json::to_vec_pretty(entry).map_err(store_error)?;
        // Written aside and renamed, so a reader never sees half an entry.
        let partial = self.dir.join(format!(".{name}.partial"));
        tokio::fs::write(&partial, body)
            .await
            .map_err(store_error)?;
        tokio::fs::rename(&partial, self.dir.join(name))
            .await
            .map_err(store_error)
    }

    async fn all(&self) -> Result<Vec<LedgerEntry>, LifecycleError> {
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(store_error(error)),
        };
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(store_error)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("erasure-") && name.ends_with(".json") {
                names.push(name);
            }
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let body = tokio::fs::read(self.dir.join(&name))
                .await
                .map_err(store_error)?;
            out.push(serde_json::from_slice(&body).map_err(store_error)?);
        }
        Ok(out)
    }
}

/// Entries as objects in S3 (the bucket of the files and the audit checkpoints, under its own
/// prefix).
pub struct S3Ledger {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl fmt::Debug for S3Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Ledger")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Ledger {
    pub fn new(client: aws_sdk_s3::Client, bucket: String, prefix: String) -> Self {
        Self {
            client,
            bucket,
            prefix,
        }
    }
}

#[async_trait]
impl LedgerStore for S3Ledger {
    async fn put(&self, entry: &LedgerEntry) -> Result<(), LifecycleError> {
        let body = serde_json::to_vec_pretty(entry).map_err(store_error)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{}", self.prefix, entry_name(entry.seq)))
            .content_type("application/json")
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map_err(|e| store_error(e.into_service_error()))?;
        Ok(())
    }

    async fn all(&self) -> Result<Vec<LedgerEntry>, LifecycleError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}erasure-", self.prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| store_error(e.into_service_error()))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let object = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| store_error(e.into_service_error()))?;
            let body = object.body.collect().await.map_err(store_error)?;
            out.push(serde_json::from_slice(&body.into_bytes()).map_err(store_error)?);
        }
        Ok(out)
    }
}

struct Row {
    seq: i64,
    patient_id: Uuid,
    request_id: Uuid,
    erased_at: DateTime<Utc>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    key_version: i32,
    mac: Vec<u8>,
}

impl From<Row> for LedgerEntry {
    fn from(row: Row) -> Self {
        LedgerEntry {
            seq: row.seq,
            patient_id: row.patient_id,
            request_id: row.request_id,
            erased_at: row.erased_at,
            prev_hash: hex::encode(row.prev_hash),
            hash: hex::encode(row.hash),
            key_version: u32::try_from(row.key_version).unwrap_or(0),
            mac: hex::encode(row.mac),
        }
    }
}

/// The database's copy, in sequence order.
pub async fn database_entries(conn: &mut PgConnection) -> Result<Vec<LedgerEntry>, LifecycleError> {
    let rows = sqlx::query_as!(
        Row,
        "SELECT seq, patient_id, request_id, erased_at, prev_hash, hash, key_version, mac \
         FROM erasure_ledger ORDER BY seq"
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(LedgerEntry::from).collect())
}

fn undecodable(_: hex::FromHexError) -> LifecycleError {
    LifecycleError::Ledger("an entry's hash or MAC is not hex".into())
}

/// Writes an entry into the database's copy (in the caller's transaction).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    entry: &LedgerEntry,
) -> Result<(), LifecycleError> {
    sqlx::query!(
        "INSERT INTO erasure_ledger (seq, patient_id, request_id, erased_at, prev_hash, hash, key_version, mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        entry.seq,
        entry.patient_id,
        entry.request_id,
        entry.erased_at,
        hex::decode(&entry.prev_hash).map_err(undecodable)?,
        hex::decode(&entry.hash).map_err(undecodable)?,
        i32::try_from(entry.key_version).map_err(|_| LifecycleError::Ledger("key version out of range".into()))?,
        hex::decode(&entry.mac).map_err(undecodable)?
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends the erasure of `patient` to the database's copy in the caller's transaction (the
/// copy outside follows once it commits).
pub(crate) async fn append(
    conn: &mut PgConnection,
    keyring: &Keyring,
    patient: Uuid,
    request: Uuid,
    at: DateTime<Utc>,
) -> Result<LedgerEntry, LifecycleError> {
    sqlx::query_scalar!(
        r#"SELECT true AS "locked!" FROM pg_advisory_xact_lock($1)"#,
        LEDGER_LOCK
    )
    .fetch_one(&mut *conn)
    .await?;
    let head = sqlx::query!("SELECT seq, hash FROM erasure_ledger ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (seq, prev) = head.map_or((1, genesis()), |h| (h.seq + 1, hex::encode(h.hash)));
    let at = DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at);
    let hash = link(seq, patient, request, at, &prev);
    let (key_version, key) = keyring.audit_chain_key().await?;
    let entry = LedgerEntry {
        seq,
        patient_id: patient,
        request_id: request,
        erased_at: at,
        prev_hash: prev,
        mac: hex::encode(hmac::sign(&key, hash.as_bytes()).as_ref()),
        hash,
        key_version,
    };
    insert(conn, &entry).await?;
    Ok(entry)
}

/// Checks a ledger: sequence numbers from 1 without a gap, each entry linked to the one
/// before, each hash and MAC authentic.
pub async fn verify(keyring: &Keyring, entries: &[LedgerEntry]) -> Result<(), LifecycleError> {
    let mut prev = genesis();
    for (expected, entry) in (1i64..).zip(entries) {
        if entry.seq != expected {
            return Err(LifecycleError::Ledger(format!(
                "entry {expected} is missing (found {} in its place)",
                entry.seq
            )));
        }
        if entry.prev_hash != prev || !entry.authentic(keyring).await? {
            return Err(LifecycleError::Ledger(format!(
                "entry {} does not authenticate",
                entry.seq
            )));
        }
        prev.clone_from(&entry.hash);
    }
    Ok(())
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Replay {
    /// Entries in the ledger outside the database.
    pub entries: usize,
    /// Patients erased again because the database (a restored backup) still held them.
    pub erased_again: Vec<Uuid>,
    /// Entries the database lacked and now holds (their patients already gone or never there).
    pub recorded: usize,
    /// Entries the outside copy lacked and now holds again.
    pub republished: usize,
}

/// Brings the database and the ledger outside it into agreement, erasing again any patient the
/// ledger says is gone but the database still holds (after a restore). Both copies must verify
/// and agree where they overlap; otherwise nothing is done and the error says why (the server
/// does not start: an operator must look).
pub async fn replay(lifecycle: &crate::Lifecycle) -> Result<Replay, LifecycleError> {
    let outside = lifecycle.ledger.all().await?;
    verify(&lifecycle.keyring, &outside).await?;
    let mut conn = lifecycle.db.acquire().await?;
    let inside = database_entries(&mut conn).await?;
    drop(conn);
    verify(&lifecycle.keyring, &inside).await?;
    for (a, b) in outside.iter().zip(&inside) {
        if a != b {
            return Err(LifecycleError::Ledger(format!(
                "entry {} differs between the database and the store outside it",
                a.seq
            )));
        }
    }
    let mut report = Replay {
        entries: outside.len(),
        ..Replay::default()
    };
    for entry in inside.iter().skip(outside.len()) {
        lifecycle.ledger.put(entry).await?;
        report.republished += 1;
    }
    for entry in outside.iter().skip(inside.len()) {
        if crate::erasure::replay_entry(lifecycle, entry).await? {
            report.erased_again.push(entry.patient_id);
        }
        report.recorded += 1;
    }
    // The objects of patients erased again stay queued in `erasure_objects`: the retention job
    // and `clinicd lifecycle ledger` delete them ([`crate::erasure::finish`]); start-up does not
    // wait on the object store.
    if !report.erased_again.is_empty() || report.recorded > 0 || report.republished > 0 {
        tracing::warn!(
            erased_again = report.erased_again.len(),
            recorded = report.recorded,
            republished = report.republished,
            "erasure ledger replayed"
        );
    }
    Ok(report)
}

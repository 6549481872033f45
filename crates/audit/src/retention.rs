//! Retention: monthly partitions are created ahead, and partitions whose month ended more than
//! the retention period ago (default 7 years; never under 6) are archived and detached. This is
//! the only way rows leave the trail. The server keeps partitions ahead by itself (a daily job,
//! once across instances); archiving runs the same way, or as `clinicd audit maintain`.
//!
//! Rows whose month had no partition yet (upkeep lapsed) land in the default partition, and
//! Postgres then refuses to create that month's partition. Upkeep re-homes them: in one
//! transaction it detaches the default partition, creates every month it holds, copies its rows
//! through the parent into their own partitions (unchanged: the chain covers content, not
//! place) and puts a fresh, empty default partition in its place.
//!
//! An archive is the partition's events as NDJSON, in chunks of 10,000, each chunk a field
//! ciphertext under the audit key (bound to the archive's id), written as `u32 length ‖
//! ciphertext` records after a one-line JSON header. Only a prefix of the chain can be
//! archived: `audit_archives` records where the retained chain starts again (the last archived
//! sequence number and hash), and verification continues from there. The archiving itself is
//! an audit event.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use aws_lc_rs::digest::{SHA256, digest};
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use clinicd_crypto::{FieldLocation, Keyring, Owner, Purpose};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::AuditError;
use crate::event::{Action, NewEvent, Outcome, StoredEvent};
use crate::writer::AuditWriter;

pub const DEFAULT_RETENTION_YEARS: u32 = 7;
pub const MIN_RETENTION_YEARS: u32 = 6;
const CHUNK: usize = 10_000;

fn db(error: sqlx::Error) -> AuditError {
    AuditError::Unavailable(error.to_string())
}

fn io(error: std::io::Error) -> AuditError {
    AuditError::Unavailable(format!("archive: {error}"))
}

/// `audit_events_YYYY_MM`, the one name a month's partition has.
pub fn partition_name(month: NaiveDate) -> String {
    format!("audit_events_{:04}_{:02}", month.year(), month.month())
}

fn month_of(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix("audit_events_")?;
    let (year, month) = rest.split_once('_')?;
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
}

/// Creates the partition of `month` (first day) if missing; returns its name if created.
/// The work is `audit_create_partition` (migration 0017), which a server role that may only
/// append to the trail can still run.
pub async fn ensure_partition(
    pool: &PgPool,
    month: NaiveDate,
) -> Result<Option<String>, AuditError> {
    sqlx::query_scalar!("SELECT audit_create_partition($1)", month)
        .fetch_one(pool)
        .await
        .map_err(db)
}

/// Partitions for this month and the next `months_ahead`, after re-homing any rows the default
/// partition caught.
pub async fn ensure_partitions_ahead(
    pool: &PgPool,
    now: DateTime<Utc>,
    months_ahead: u32,
) -> Result<Vec<String>, AuditError> {
    let first = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap_or_default();
    let mut created = rehome_default(pool).await?;
    for i in 0..=months_ahead {
        if let Some(name) = ensure_partition(pool, first + Months::new(i)).await? {
            created.push(name);
        }
    }
    Ok(created)
}

/// Moves rows out of the default partition into partitions of their own months (created as
/// needed); returns the partitions created (`audit_rehome_default`, migration 0017).
pub async fn rehome_default(pool: &PgPool) -> Result<Vec<String>, AuditError> {
    let created: Vec<String> = sqlx::query_scalar!("SELECT audit_rehome_default() AS \"v!\"")
        .fetch_one(pool)
        .await
        .map_err(db)?;
    if !created.is_empty() {
        tracing::warn!(partitions = ?created, "audit rows re-homed from the default partition");
    }
    Ok(created)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveHeader {
    pub format: String,
    pub archive_id: Uuid,
    pub partition: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub rows: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivedPartition {
    pub partition: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub rows: i64,
    /// Where the archive went: a path, or `s3://bucket/key`.
    pub file: String,
    pub sha256: String,
}

/// Archives and detaches every partition whose month ended more than `retention_years` ago.
pub async fn archive_expired(
    pool: &PgPool,
    keyring: &Keyring,
    writer: &AuditWriter,
    store: &dyn ArchiveStore,
    retention_years: u32,
    now: DateTime<Utc>,
) -> Result<Vec<ArchivedPartition>, AuditError> {
    let years = retention_years.max(MIN_RETENTION_YEARS);
    let cutoff = now.date_naive() - Months::new(12 * years);
    if let Some(hold) = sqlx::query_scalar!("SELECT legal_hold_any() AS hold")
        .fetch_one(pool)
        .await
        .map_err(db)?
    {
        return Err(AuditError::Held(hold));
    }
    let mut names: Vec<String> = sqlx::query_scalar!(
        "SELECT c.relname::text AS \"name!\" FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_events'::regclass"
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    names.sort();
    let mut archived = Vec::new();
    for name in names {
        let Some(month) = month_of(&name) else {
            continue;
        };
        if month + Months::new(1) > cutoff {
            continue;
        }
        if let Some(done) = archive_partition(pool, keyring, writer, store, &name, month).await? {
            archived.push(done);
        }
    }
    Ok(archived)
}

#[derive(sqlx::FromRow)]
struct Span {
    first: Option<i64>,
    last: Option<i64>,
    rows: i64,
}

async fn archive_partition(
    pool: &PgPool,
    keyring: &Keyring,
    writer: &AuditWriter,
    store: &dyn ArchiveStore,
    name: &str,
    month: NaiveDate,
) -> Result<Option<ArchivedPartition>, AuditError> {
    // Runtime query: the partition is named at run time (one table per month); a checked
    // macro needs its table fixed at compile time. `name` comes from pg_inherits, not input.
    let span: Span = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT min(seq) AS first, max(seq) AS last, count(*) AS rows FROM {name}"
    )))
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let (Some(first), Some(last)) = (span.first, span.last) else {
        detach(pool, name).await?;
        return Ok(None);
    };
    // Only a prefix of the chain may go: nothing retained may come before it.
    let earlier = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM audit_events WHERE seq < $1 AND tableoid <> $2::text::regclass) AS "earlier!""#,
        first,
        name
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    if earlier {
        return Err(AuditError::Unavailable(format!(
            "{name} is not the oldest part of the chain; archive older partitions first"
        )));
    }
    let archive_id = Uuid::now_v7();
    let header = ArchiveHeader {
        format: "clinicd-audit-archive-v1".into(),
        archive_id,
        partition: name.to_owned(),
        first_seq: first,
        last_seq: last,
        rows: span.rows,
    };
    let mut file =
        serde_json::to_vec(&header).map_err(|e| AuditError::Unavailable(e.to_string()))?;
    file.push(b'\n');
    let location = FieldLocation::new("audit_archives", "chunk", archive_id);
    // Runtime query: the partition is named at run time (see `span` above).
    let mut rows = sqlx::query_as::<_, StoredEvent>(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM {name} ORDER BY seq"
    )))
    .fetch(pool);
    let mut chunk = Vec::new();
    let mut in_chunk = 0;
    let mut last_hash = Vec::new();
    while let Some(row) = rows.try_next().await.map_err(db)? {
        last_hash.clone_from(&row.hash);
        serde_json::to_writer(&mut chunk, &ArchivedEvent::from(row))
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        chunk.push(b'\n');
        in_chunk += 1;
        if in_chunk == CHUNK {
            seal(keyring, &location, &mut chunk, &mut file).await?;
            in_chunk = 0;
        }
    }
    drop(rows);
    if in_chunk > 0 {
        seal(keyring, &location, &mut chunk, &mut file).await?;
    }
    let sha256 = hex::encode(digest(&SHA256, &file).as_ref());
    let path = store.put(&format!("{name}.clinicd-audit"), file).await?;

    sqlx::query!("INSERT INTO audit_archives (partition_name, month, first_seq, last_seq, last_hash, row_count, file_name, file_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", name, month, first, last, &last_hash, span.rows, &path, &sha256)
    .execute(pool)
    .await
    .map_err(db)?;
    detach(pool, name).await?;
    let mut event = NewEvent::new(Action::ConfigChange, Outcome::Success);
    event.resource_type = Some("audit_partition".into());
    event.resource_id = Some(name.to_owned());
    event.reason = Some("retention".into());
    event.metadata = serde_json::json!({
        "first_seq": first, "last_seq": last, "rows": span.rows, "sha256": sha256,
    });
    writer.record(event).await?;
    tracing::info!(
        partition = name,
        rows = span.rows,
        "audit partition archived and detached"
    );
    Ok(Some(ArchivedPartition {
        partition: name.to_owned(),
        first_seq: first,
        last_seq: last,
        rows: span.rows,
        file: path,
        sha256,
    }))
}

/// Detaches the partition and renames it out of the way; dropping it is the DBA's call.
async fn detach(pool: &PgPool, name: &str) -> Result<(), AuditError> {
    for sql in [
        format!("ALTER TABLE audit_events DETACH PARTITION {name}"),
        format!(
            "ALTER TABLE {name} RENAME TO {}",
            name.replacen("audit_events_", "audit_archived_", 1)
        ),
    ] {
        // Runtime query: DDL on a partition named at run time.
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .map_err(db)?;
    }
    Ok(())
}

async fn seal(
    keyring: &Keyring,
    location: &FieldLocation<'static>,
    chunk: &mut Vec<u8>,
    file: &mut Vec<u8>,
) -> Result<(), AuditError> {
    let sealed = keyring
        .encrypt(Owner::Purpose(Purpose::Audit), location, chunk)
        .await?;
    file.extend_from_slice(
        &u32::try_from(sealed.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    file.extend_from_slice(&sealed);
    chunk.clear();
    Ok(())
}

/// Where archives go.
#[async_trait]
pub trait ArchiveStore: Send + Sync + std::fmt::Debug {
    /// Stores `bytes` durably under `name`; returns where they went.
    async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<String, AuditError>;
    async fn get(&self, location: &str) -> Result<Vec<u8>, AuditError>;
}

/// A directory; each archive written aside, synced, then renamed into place.
#[derive(Debug, Clone)]
pub struct LocalArchives {
    dir: PathBuf,
}

impl LocalArchives {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl ArchiveStore for LocalArchives {
    async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<String, AuditError> {
        tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
        let path = self.dir.join(name);
        let partial = self.dir.join(format!(".{name}.partial"));
        tokio::fs::write(&partial, &bytes).await.map_err(io)?;
        tokio::fs::File::open(&partial)
            .await
            .map_err(io)?
            .sync_all()
            .await
            .map_err(io)?;
        tokio::fs::rename(&partial, &path).await.map_err(io)?;
        Ok(path.display().to_string())
    }

    async fn get(&self, location: &str) -> Result<Vec<u8>, AuditError> {
        tokio::fs::read(Path::new(location)).await.map_err(io)
    }
}

/// S3 (or an S3-compatible store) under a prefix.
#[derive(Debug, Clone)]
pub struct S3Archives {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Archives {
    pub fn new(client: aws_sdk_s3::Client, bucket: String, prefix: String) -> Self {
        Self {
            client,
            bucket,
            prefix,
        }
    }

    pub async fn from_env(bucket: String, prefix: String) -> Self {
        Self::new(
            crate::checkpoint::s3_client_from_env().await,
            bucket,
            prefix,
        )
    }
}

fn s3(error: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable(format!("archive store (S3): {error}"))
}

#[async_trait]
impl ArchiveStore for S3Archives {
    async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<String, AuditError> {
        let key = format!("{}{name}", self.prefix);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3(e.into_service_error()))?;
        Ok(format!("s3://{}/{key}", self.bucket))
    }

    async fn get(&self, location: &str) -> Result<Vec<u8>, AuditError> {
        let key = location
            .strip_prefix(&format!("s3://{}/", self.bucket))
            .ok_or_else(|| s3(format!("{location} is not in this bucket")))?;
        crate::checkpoint::s3_get(&self.client, &self.bucket, key)
            .await
            .map_err(s3)
    }
}

/// An event as archived: every column, hashes in hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedEvent {
    pub seq: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor_user_id: Option<Uuid>,
    pub action: String,
    pub outcome: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    pub route: Option<String>,
    pub reason: Option<String>,
    pub event: serde_json::Value,
    pub hash: String,
}

impl From<StoredEvent> for ArchivedEvent {
    fn from(e: StoredEvent) -> Self {
        Self {
            seq: e.seq,
            occurred_at: e.occurred_at,
            actor_user_id: e.actor_user_id,
            action: e.action.clone(),
            outcome: e.outcome.clone(),
            resource_type: e.resource_type.clone(),
            resource_id: e.resource_id.clone(),
            patient_id: e.patient_id,
            route: e.route.clone(),
            reason: e.reason.clone(),
            hash: hex::encode(&e.hash),
            event: serde_json::json!({
                "actor_username": e.actor_username, "session_id": e.session_id,
                "http_method": e.http_method, "status_code": e.status_code,
                "client_ip": e.client_ip, "user_agent": e.user_agent, "request_id": e.request_id,
                "metadata": e.metadata, "prev_hash": hex::encode(&e.prev_hash),
                "sealed_values": e.sealed_values.as_deref().map(hex::encode),
            }),
        }
    }
}

/// Reads an archive back (for a records request or an auditor): header and events.
pub async fn read_archive(
    keyring: &Keyring,
    store: &dyn ArchiveStore,
    location: &str,
) -> Result<(ArchiveHeader, Vec<ArchivedEvent>), AuditError> {
    let bytes = store.get(location).await?;
    let truncated = || AuditError::Unavailable("archive truncated".into());
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| AuditError::Unavailable("archive without a header".into()))?;
    let (header, rest) = bytes.split_at_checked(newline).ok_or_else(truncated)?;
    let header: ArchiveHeader =
        serde_json::from_slice(header).map_err(|e| AuditError::Unavailable(e.to_string()))?;
    let location = FieldLocation::new("audit_archives", "chunk", header.archive_id);
    // After the header's newline: chunks, each its u32 length and its sealed bytes.
    let mut rest = rest.get(1..).unwrap_or_default();
    let mut events = Vec::new();
    while let Some((len, after)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let (sealed, next) = after.split_at_checked(len).ok_or_else(truncated)?;
        let plain = keyring.decrypt(&location, sealed).await?;
        for line in plain.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            events.push(
                serde_json::from_slice(line).map_err(|e| AuditError::Unavailable(e.to_string()))?,
            );
        }
        rest = next;
    }
    Ok((header, events))
}

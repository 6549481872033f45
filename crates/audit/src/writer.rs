//! The batching writer. Requests hand their event to one task per instance, which commits
//! whatever has queued (up to `max_batch`, waiting at most `window` for more) in one
//! transaction and then answers each request. The default window is zero: group commit, where
//! the events that arrive while one batch commits form the next. Measured (`./scripts/bench
//! audit`), a 1 ms window cost a lone client 2 ms per request and the writer two thirds of its
//! throughput, and bought nothing under load. A request returns PHI only after its event is
//! committed; if the commit fails, every request of the batch gets the error (and a 503).
//!
//! Several instances share one chain: each batch takes a transaction-scoped advisory lock,
//! reads the head, appends and records the new head, so sequence numbers stay gap-free and the
//! chain linear whichever instance writes.

use std::sync::Arc;
use std::time::Duration;

use clinicd_crypto::Keyring;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::chain;
use crate::checkpoint::CheckpointStore;
use crate::error::AuditError;
use crate::event::{NewEvent, StoredEvent};

/// The advisory lock that serialises appends to the chain ("clinicd audit" in ASCII).
const CHAIN_LOCK: i64 = 0x636c_696e_6175_6474;
const QUEUE: usize = 16_384;

#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub max_batch: usize,
    /// How long a batch waits for more events once it has one. Zero: commit what has queued.
    pub window: Duration,
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            max_batch: 512,
            window: Duration::ZERO,
        }
    }
}

struct Pending {
    event: NewEvent,
    done: oneshot::Sender<Result<i64, AuditError>>,
}

/// A handle to this instance's writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Pending>,
    db: PgPool,
    keyring: Arc<Keyring>,
    /// Set once the chain's key is known to exist (see [`AuditWriter::ensure_key`]).
    key_ready: Arc<tokio::sync::OnceCell<()>>,
    checkpoints: Option<Arc<dyn CheckpointStore>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl AuditWriter {
    /// Starts the writer task on the current Tokio runtime.
    pub fn start(db: PgPool, keyring: Arc<Keyring>, settings: WriterSettings) -> Self {
        let (queue, incoming) = mpsc::channel(QUEUE);
        let key_ready = Arc::new(tokio::sync::OnceCell::new());
        tokio::spawn(run(
            incoming,
            db.clone(),
            keyring.clone(),
            key_ready.clone(),
            settings,
        ));
        Self {
            queue,
            db,
            keyring,
            key_ready,
            checkpoints: None,
        }
    }

    /// Verifies against the latest checkpoint in `store` (the scheduled job `audit_checkpoint`
    /// of the server writes them there).
    #[must_use]
    pub fn with_checkpoints(mut self, store: Arc<dyn CheckpointStore>) -> Self {
        self.checkpoints = Some(store);
        self
    }

    /// Recomputes the chain this writer appends to, against the latest checkpoint if any
    /// ([`crate::verify::verify_with`]).
    pub async fn verify(&self) -> Result<crate::VerifyReport, AuditError> {
        let checkpoint = match &self.checkpoints {
            Some(store) => store.latest().await?,
            None => None,
        };
        crate::verify::verify_with(&self.db, &self.keyring, checkpoint).await
    }

    /// Makes sure the chain key exists before a first append (once; bootstrapping is
    /// idempotent and safe to race across instances).
    pub async fn ensure_key(&self) -> Result<(), AuditError> {
        ensure_key(&self.key_ready, &self.keyring).await
    }

    /// The key hierarchy the chain's heads and sealed values are under.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Appends `event`; returns its sequence number once it is committed.
    pub async fn record(&self, event: NewEvent) -> Result<i64, AuditError> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending { event, done })
            .await
            .map_err(|_| AuditError::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| AuditError::Unavailable("the writer has stopped".into()))?
    }
}

async fn ensure_key(
    ready: &tokio::sync::OnceCell<()>,
    keyring: &Keyring,
) -> Result<(), AuditError> {
    ready
        .get_or_try_init(|| async { keyring.bootstrap().await.map_err(AuditError::from) })
        .await
        .map(|_| ())
}

async fn run(
    mut incoming: mpsc::Receiver<Pending>,
    db: PgPool,
    keyring: Arc<Keyring>,
    key_ready: Arc<tokio::sync::OnceCell<()>>,
    settings: WriterSettings,
) {
    // The chain's head as this writer last left it; `None` until read, and after any failure.
    let mut head: Option<Head> = None;
    while let Some(first) = incoming.recv().await {
        let mut batch = vec![first];
        fill(&mut incoming, &mut batch, settings).await;
        let events: Vec<&NewEvent> = batch.iter().map(|p| &p.event).collect();
        // The chain key must exist before the first append. A failure here surfaces as failed
        // appends (503), never as unaudited access.
        let appended = match ensure_key(&key_ready, &keyring).await {
            Ok(()) => append_batch(&db, &keyring, &events, &mut head).await,
            Err(error) => Err(error),
        };
        match appended {
            Ok(first_seq) => {
                for (offset, pending) in (0i64..).zip(batch) {
                    let _ = pending.done.send(Ok(first_seq + offset));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, events = batch.len(), "audit batch not committed");
                for pending in batch {
                    let _ = pending.done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Adds whatever is queued, then waits up to the window for more, up to the batch size.
async fn fill(incoming: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>, s: WriterSettings) {
    while batch.len() < s.max_batch {
        match incoming.try_recv() {
            Ok(pending) => batch.push(pending),
            Err(_) => break,
        }
    }
    if s.window.is_zero() {
        return;
    }
    let deadline = tokio::time::Instant::now() + s.window;
    while batch.len() < s.max_batch {
        match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(pending)) => batch.push(pending),
            _ => break,
        }
    }
}

#[derive(sqlx::FromRow, Debug, Clone)]
struct Head {
    seq: i64,
    hash: Vec<u8>,
}

/// How often a batch is linked again when another instance moved the head meanwhile, before
/// the writer falls back to holding the chain's lock for a whole transaction.
const RELINKS: usize = 4;

/// Appends `events` in one round trip (the SQL function `audit_append`, which is its own
/// transaction): the batch is linked to the head this writer last wrote, and the function
/// writes it only if that is still the head. Returns the first sequence number; `head` is the
/// new head, or `None` after a failure (the next batch reads it again).
async fn append_batch(
    db: &PgPool,
    keyring: &Keyring,
    events: &[&NewEvent],
    head: &mut Option<Head>,
) -> Result<i64, AuditError> {
    let (key_version, key) = keyring.audit_chain_key().await?;
    let key_version = i32::try_from(key_version).unwrap_or(i32::MAX);
    for _ in 0..RELINKS {
        let known = match head.take() {
            Some(known) => known,
            None => read_head(db).await?,
        };
        let rows = link(&known, events);
        let Some(last) = rows.last() else {
            *head = Some(known);
            return Ok(0);
        };
        let mac = chain::head_mac(&key, last.seq, &last.hash);
        let answer = call_append(db, &known, &rows, key_version, mac).await?;
        *head = Some(Head {
            seq: answer.head_seq,
            hash: answer.head_hash.unwrap_or_else(|| chain::GENESIS.to_vec()),
        });
        if !answer.moved {
            return Ok(known.seq + 1);
        }
    }
    // Other instances keep moving the head: wait for the lock instead of racing them.
    *head = None;
    append(db, keyring, events).await
}

async fn read_head(db: &PgPool) -> Result<Head, AuditError> {
    let head: Option<Head> = sqlx::query_as!(
        Head,
        "SELECT seq, hash FROM audit_heads ORDER BY seq DESC LIMIT 1"
    )
    .fetch_optional(db)
    .await?;
    Ok(head.unwrap_or(Head {
        seq: 0,
        hash: chain::GENESIS.to_vec(),
    }))
}

/// The rows of `events`, numbered and hash-linked after `head`.
fn link(head: &Head, events: &[&NewEvent]) -> Vec<StoredEvent> {
    let (mut seq, mut prev) = (head.seq, head.hash.clone());
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let mut row = StoredEvent::from_new(seq, event);
        row.prev_hash = prev;
        row.hash = chain::link(&row.prev_hash, &row);
        prev = row.hash.clone();
        rows.push(row);
    }
    rows
}

struct Appended {
    moved: bool,
    head_seq: i64,
    head_hash: Option<Vec<u8>>,
}

/// One call of `audit_append`, in an implicit transaction of its own. Fail-closed depends on
/// this returning only after the commit: the server commits at the protocol's Sync, before its
/// ReadyForQuery, and sqlx's `fetch_one` reads the whole response up to ReadyForQuery (it
/// drains for deferred errors), so an answer here means the batch is durable.
async fn call_append(
    db: &PgPool,
    head: &Head,
    rows: &[StoredEvent],
    key_version: i32,
    mac: Vec<u8>,
) -> Result<Appended, AuditError> {
    fn col<T: Clone>(rows: &[StoredEvent], f: impl Fn(&StoredEvent) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let (disclosed, disclosed_seqs, disclosed_times) = disclosures(rows);
    let answer = sqlx::query_as!(Appended, r#"SELECT moved AS "moved!", head_seq AS "head_seq!", head_hash FROM audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)"#, head.seq, &head.hash, &col(rows, |r| r.seq) as _, &col(rows, |r| r.occurred_at) as _, &col(rows, |r| r.actor_user_id) as _, &col(rows, |r| r.actor_username.clone()) as _, &col(rows, |r| r.session_id) as _, &col(rows, |r| r.action.clone()) as _, &col(rows, |r| r.resource_type.clone()) as _, &col(rows, |r| r.resource_id.clone()) as _, &col(rows, |r| r.patient_id) as _, &col(rows, |r| r.outcome.clone()) as _, &col(rows, |r| r.http_method.clone()) as _, &col(rows, |r| r.route.clone()) as _, &col(rows, |r| r.status_code) as _, &col(rows, |r| r.client_ip.clone()) as _, &col(rows, |r| r.user_agent.clone()) as _, &col(rows, |r| r.request_id.clone()) as _, &col(rows, |r| r.reason.clone()) as _, &col(rows, |r| r.metadata.clone()) as _, &col(rows, |r| r.sealed_values.clone()) as _, &col(rows, |r| r.prev_hash.clone()) as _, &col(rows, |r| r.hash.clone()) as _, &disclosed, &disclosed_seqs, &disclosed_times as _, key_version, mac)
    .fetch_one(db)
    .await?;
    Ok(answer)
}

/// Appends `events` after the current head in one transaction that holds the chain's lock
/// throughout; returns the first sequence number.
pub(crate) async fn append(
    db: &PgPool,
    keyring: &Keyring,
    events: &[&NewEvent],
) -> Result<i64, AuditError> {
    let mut tx = db.begin().await?;
    let first = append_in(&mut tx, keyring, events).await?;
    tx.commit().await?;
    Ok(first)
}

/// Appends inside the caller's transaction (which must commit for the events to count).
pub async fn append_in(
    tx: &mut sqlx::PgConnection,
    keyring: &Keyring,
    events: &[&NewEvent],
) -> Result<i64, AuditError> {
    let (key_version, key) = keyring.audit_chain_key().await?;
    sqlx::query_scalar!(
        r#"SELECT true AS "locked!" FROM pg_advisory_xact_lock($1)"#,
        CHAIN_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    let head: Option<Head> = sqlx::query_as!(
        Head,
        "SELECT seq, hash FROM audit_heads ORDER BY seq DESC LIMIT 1"
    )
    .fetch_optional(&mut *tx)
    .await?;
    let head = head.unwrap_or(Head {
        seq: 0,
        hash: chain::GENESIS.to_vec(),
    });
    let rows = link(&head, events);
    let (seq, prev) = rows
        .last()
        .map_or((head.seq, head.hash.clone()), |r| (r.seq, r.hash.clone()));
    insert(&mut *tx, &rows).await?;
    sqlx::query!(
        "INSERT INTO audit_heads (seq, hash, key_version, mac) VALUES ($1, $2, $3, $4)",
        seq,
        &prev,
        i32::try_from(key_version).unwrap_or(i32::MAX),
        chain::head_mac(&key, seq, &prev)
    )
    .execute(&mut *tx)
    .await?;
    Ok(head.seq + 1)
}

/// One INSERT for the whole batch, column by column.
async fn insert(tx: &mut sqlx::PgConnection, rows: &[StoredEvent]) -> Result<(), sqlx::Error> {
    fn col<T: Clone>(rows: &[StoredEvent], f: impl Fn(&StoredEvent) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    sqlx::query!("INSERT INTO audit_events (seq, occurred_at, actor_user_id, actor_username, session_id, action, \
           resource_type, resource_id, patient_id, outcome, http_method, route, status_code, client_ip, \
           user_agent, request_id, reason, metadata, sealed_values, prev_hash, hash) \
         SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::uuid[], $4::text[], $5::uuid[], $6::text[], \
           $7::text[], $8::text[], $9::uuid[], $10::text[], $11::text[], $12::text[], $13::int[], $14::text[], \
           $15::text[], $16::text[], $17::text[], $18::jsonb[], $19::bytea[], $20::bytea[], $21::bytea[])", &col(rows, |r| r.seq) as _, &col(rows, |r| r.occurred_at) as _, &col(rows, |r| r.actor_user_id) as _, &col(rows, |r| r.actor_username.clone()) as _, &col(rows, |r| r.session_id) as _, &col(rows, |r| r.action.clone()) as _, &col(rows, |r| r.resource_type.clone()) as _, &col(rows, |r| r.resource_id.clone()) as _, &col(rows, |r| r.patient_id) as _, &col(rows, |r| r.outcome.clone()) as _, &col(rows, |r| r.http_method.clone()) as _, &col(rows, |r| r.route.clone()) as _, &col(rows, |r| r.status_code) as _, &col(rows, |r| r.client_ip.clone()) as _, &col(rows, |r| r.user_agent.clone()) as _, &col(rows, |r| r.request_id.clone()) as _, &col(rows, |r| r.reason.clone()) as _, &col(rows, |r| r.metadata.clone()) as _, &col(rows, |r| r.sealed_values.clone()) as _, &col(rows, |r| r.prev_hash.clone()) as _, &col(rows, |r| r.hash.clone()) as _)
    .execute(&mut *tx)
    .await?;
    insert_disclosures(tx, rows).await
}

/// Each patient an event disclosed, for the accounting of disclosures: its own patient and
/// those listed in `metadata.patients`.
async fn insert_disclosures(
    tx: &mut sqlx::PgConnection,
    rows: &[StoredEvent],
) -> Result<(), sqlx::Error> {
    let (patients, seqs, times) = disclosures(rows);
    if patients.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        "INSERT INTO audit_disclosures (patient_id, seq, occurred_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::timestamptz[])",
        &patients,
        &seqs,
        &times
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// The (patient, seq, time) rows of the accounting of disclosures for `rows`, column by column.
fn disclosures(
    rows: &[StoredEvent],
) -> (
    Vec<uuid::Uuid>,
    Vec<i64>,
    Vec<chrono::DateTime<chrono::Utc>>,
) {
    let (mut patients, mut seqs, mut times) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        let listed = row
            .metadata
            .get("patients")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str()?.parse::<uuid::Uuid>().ok());
        let mut disclosed: Vec<uuid::Uuid> = row.patient_id.into_iter().chain(listed).collect();
        disclosed.sort_unstable();
        disclosed.dedup();
        for patient in disclosed {
            patients.push(patient);
            seqs.push(row.seq);
            times.push(row.occurred_at);
        }
    }
    (patients, seqs, times)
}

//! Re-keying the data itself, for a suspected key compromise: first every subject gets a fresh
//! key ([`Keyring::rotate_subject_keys`]) and, for records that belong to no patient, the
//! `field` branch key is rotated; then [`Keyring::rekey`] moves every encrypted value still
//! under a retired key to its owner's active key.
//!
//! The job works through each registered column in id order, a batch per transaction, and
//! records its position in `rekey_progress` with each batch, so it can be interrupted and run
//! again and resumes where it stopped. One job runs at a time across all instances (a Postgres
//! advisory lock held for the whole run); a second caller is told it is already running.

use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::error::CryptoError;
use crate::field::{self, FieldLocation};
use crate::keyring::{Keyring, Owner};
use crate::keys::KeyRef;

const REKEY_LOCK: i64 = 0x636c_696e_7265_6b79; // "clinreky"

/// An encrypted column: `table.column`, keyed by the uuid column `id`, holding field
/// ciphertexts bound to `FieldLocation { table, column, row_id: id }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptedColumn {
    pub table: &'static str,
    pub column: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct RekeyOptions {
    pub batch_size: i64,
    /// Stop after this many batches (for operators who want to spread the work, and for tests
    /// that interrupt a run); `None` runs to the end.
    pub max_batches: Option<usize>,
}

impl Default for RekeyOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_batches: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RekeyReport {
    pub rows_seen: u64,
    pub rows_moved: u64,
    /// Values whose subject was shredded: unrecoverable, left as they are.
    pub rows_destroyed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RekeyOutcome {
    Finished(RekeyReport),
    /// Stopped at `max_batches`; run again to continue.
    Paused(RekeyReport),
    AlreadyRunning,
}

/// A table or column name from a static registry, checked before it is put into SQL.
pub(crate) fn identifier(name: &str) -> Result<&str, CryptoError> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    valid
        .then_some(name)
        .ok_or(CryptoError::Malformed("column identifier"))
}

impl Keyring {
    /// Gives every subject with an active key a fresh key (version + 1) under the active
    /// `field` branch key and retires the old one, which stays able to decrypt until
    /// [`rekey`](Self::rekey) has moved the data.
    pub async fn rotate_subject_keys(&self) -> Result<u64, CryptoError> {
        let started: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar!("SELECT clock_timestamp() AS \"v!\"")
                .fetch_one(self.db())
                .await?;
        let mut rotated = 0;
        loop {
            let subjects: Vec<(Uuid, i32)> = sqlx::query!(
                "SELECT subject_id, version FROM subject_keys WHERE status = 'active' AND created_at < $1 \
                 ORDER BY subject_id LIMIT 500",
                started
            )
            .fetch_all(self.db())
            .await?
            .into_iter()
            .map(|row| (row.subject_id, row.version))
            .collect();
            if subjects.is_empty() {
                break;
            }
            for (subject, version) in subjects {
                self.replace_subject_key(
                    crate::SubjectId(subject),
                    u32::try_from(version).unwrap_or(0),
                )
                .await?;
                rotated += 1;
            }
        }
        self.forget_active_versions();
        tracing::info!(rotated, "subject keys rotated");
        Ok(rotated)
    }

    /// Moves every value of `columns` still under a retired key to its owner's active key.
    pub async fn rekey(
        &self,
        job: &str,
        columns: &[EncryptedColumn],
        options: RekeyOptions,
    ) -> Result<RekeyOutcome, CryptoError> {
        let mut lock = self.db().acquire().await?;
        let locked: bool =
            sqlx::query_scalar!("SELECT pg_try_advisory_lock($1) AS \"v!\"", REKEY_LOCK)
                .fetch_one(&mut *lock)
                .await?;
        if !locked {
            return Ok(RekeyOutcome::AlreadyRunning);
        }
        let result = self.rekey_locked(job, columns, options).await;
        sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", REKEY_LOCK)
            .fetch_one(&mut *lock)
            .await?;
        result
    }

    async fn rekey_locked(
        &self,
        job: &str,
        columns: &[EncryptedColumn],
        options: RekeyOptions,
    ) -> Result<RekeyOutcome, CryptoError> {
        // Active versions may have changed just before the job: read them afresh.
        self.forget_active_versions();
        let mut report = RekeyReport::default();
        let mut batches = 0;
        for column in columns {
            sqlx::query!("INSERT INTO rekey_progress (job, table_name, column_name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", job, column.table, column.column)
            .execute(self.db())
            .await?;
            loop {
                if options.max_batches.is_some_and(|max| batches >= max) {
                    return Ok(RekeyOutcome::Paused(report));
                }
                let mut tx = self.db().begin().await?;
                let done = self
                    .rekey_batch(&mut tx, job, *column, options.batch_size, &mut report)
                    .await?;
                tx.commit().await?;
                batches += 1;
                if done {
                    break;
                }
            }
        }
        tracing::info!(job, rows_moved = report.rows_moved, "re-keying finished");
        Ok(RekeyOutcome::Finished(report))
    }

    /// One batch; `true` when the column is finished.
    async fn rekey_batch(
        &self,
        tx: &mut PgConnection,
        job: &str,
        column: EncryptedColumn,
        batch_size: i64,
        report: &mut RekeyReport,
    ) -> Result<bool, CryptoError> {
        let (table, name) = (identifier(column.table)?, identifier(column.column)?);
        let Some(last_id) = progress(&mut *tx, job, table, name).await? else {
            return Ok(true);
        };
        // Runtime query: re-keying walks every encrypted column of the registry, so the table
        // and column are only known here. Identifiers come from the static registry and are
        // checked above.
        let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, {name} FROM {table} WHERE {name} IS NOT NULL AND ($1::uuid IS NULL OR id > $1) \
             ORDER BY id LIMIT $2"
        )))
        .bind(last_id)
        .bind(batch_size)
        .fetch_all(&mut *tx)
        .await?;

        let (mut seen, mut moved) = (0i64, 0i64);
        for (id, ciphertext) in &rows {
            seen += 1;
            let location = FieldLocation::new(column.table, column.column, *id);
            match self.rekeyed(&location, ciphertext).await {
                Ok(Some(fresh)) => {
                    // Runtime query: the same registry column as the SELECT above.
                    sqlx::query(AssertSqlSafe(format!(
                        "UPDATE {table} SET {name} = $1 WHERE id = $2 AND {name} = $3"
                    )))
                    .bind(&fresh)
                    .bind(id)
                    .bind(ciphertext)
                    .execute(&mut *tx)
                    .await?;
                    moved += 1;
                }
                Ok(None) => {}
                Err(CryptoError::KeyDestroyed) => report.rows_destroyed += 1,
                Err(other) => return Err(other),
            }
        }
        let finished = rows.len() < usize::try_from(batch_size).unwrap_or(usize::MAX);
        let step = Step {
            last_id: rows.last().map(|(id, _)| *id),
            seen,
            moved,
            finished,
        };
        record_progress(&mut *tx, job, table, name, step).await?;
        report.rows_seen += u64::try_from(seen).unwrap_or(0);
        report.rows_moved += u64::try_from(moved).unwrap_or(0);
        Ok(finished)
    }

    /// The value re-encrypted under its owner's active key, or `None` if it already is.
    async fn rekeyed(
        &self,
        location: &FieldLocation<'static>,
        ciphertext: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        let (owner, current) = match field::parse(ciphertext)?.key {
            KeyRef::Subject(subject, version) => (
                Owner::Subject(subject),
                self.is_active_subject_version(subject, version).await?,
            ),
            KeyRef::Purpose(purpose, version) => (
                Owner::Purpose(purpose),
                self.is_active_branch_version(purpose, version).await?,
            ),
        };
        if current {
            return Ok(None);
        }
        let plaintext = self.decrypt(location, ciphertext).await?;
        Ok(Some(self.encrypt(owner, location, &plaintext).await?))
    }
}

/// Where a job stands on one column: `None` when finished, else the last id done (if any).
pub(crate) async fn progress(
    tx: &mut PgConnection,
    job: &str,
    table: &str,
    column: &str,
) -> Result<Option<Option<Uuid>>, CryptoError> {
    let row = sqlx::query!(
        "SELECT last_id, finished_at IS NOT NULL AS \"finished!\" FROM rekey_progress \
         WHERE job = $1 AND table_name = $2 AND column_name = $3 FOR UPDATE",
        job,
        table,
        column
    )
    .fetch_one(tx)
    .await?;
    if row.finished {
        return Ok(None);
    }
    Ok(Some(row.last_id))
}

/// What one batch did.
pub(crate) struct Step {
    pub last_id: Option<Uuid>,
    pub seen: i64,
    pub moved: i64,
    pub finished: bool,
}

pub(crate) async fn record_progress(
    tx: &mut PgConnection,
    job: &str,
    table: &str,
    column: &str,
    step: Step,
) -> Result<(), CryptoError> {
    sqlx::query!("UPDATE rekey_progress SET last_id = coalesce($4, last_id), rows_seen = rows_seen + $5, \
         rows_moved = rows_moved + $6, updated_at = now(), finished_at = CASE WHEN $7 THEN now() ELSE NULL END \
         WHERE job = $1 AND table_name = $2 AND column_name = $3", job, table, column, step.last_id, step.seen, step.moved, step.finished)
    .execute(tx)
    .await?;
    Ok(())
}

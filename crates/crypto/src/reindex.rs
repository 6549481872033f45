//! Rebuilding blind indexes under a new `blind_index` branch key.
//!
//! Each indexed column stores its index value next to the version of the key that made it
//! (`<column>_bidx`, `<column>_bidx_version`). After `rotate-branch --purpose blind_index`, new
//! writes index under the new version and [`Keyring::rebuild_blind_index`] recomputes old rows
//! from their decrypted values, a batch per transaction, resumably (progress in
//! `rekey_progress`, one job at a time). Meanwhile a search computes the value's index under
//! every live version ([`Keyring::blind_index_candidates`]) and matches on (version, value)
//! pairs, so search keeps working during the rebuild.

use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::blind_index::{BlindIndex, BlindIndexSpec};
use crate::error::CryptoError;
use crate::field::FieldLocation;
use crate::keyring::Keyring;
use crate::keys::Purpose;
use crate::rekey::{
    RekeyOptions, RekeyOutcome, RekeyReport, Step, identifier, progress, record_progress,
};

const REINDEX_LOCK: i64 = 0x636c_696e_6269_6478; // "clinbidx"

/// The SQLSTATE with which [`versions_check`] fails when the versions it was given are no
/// longer the live ones (migration 0029).
pub const VERSIONS_CHANGED: &str = "CK001";

/// A SQL condition that holds only if `versions` (as listed by the keyring, newest first) are
/// still exactly the live blind-index key versions, for a statement whose parameter `$n` binds
/// them as `int4[]` (see [`versions_param`]). It has no column in it, so PostgreSQL evaluates
/// it once, before the statement reads a row, and the statement fails with
/// [`VERSIONS_CHANGED`] if they are not.
pub fn versions_check(n: usize) -> String {
    format!("(SELECT blind_index_versions_are(${n}))")
}

/// `versions` as the parameter of [`versions_check`].
pub fn versions_param(versions: &[u32]) -> Vec<i32> {
    versions
        .iter()
        .map(|&v| i32::try_from(v).unwrap_or(i32::MAX))
        .collect()
}

/// Whether `error` is the failure of [`versions_check`].
pub fn versions_changed(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some(VERSIONS_CHANGED))
}

/// A blind-indexed column: the index of `spec.table.spec.column` (an encrypted column) lives in
/// `index_column` with its key version in `version_column`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedColumn {
    pub spec: BlindIndexSpec,
    pub index_column: &'static str,
    pub version_column: &'static str,
}

impl Keyring {
    /// The index of `value` under every blind-index key version that may still be in the
    /// table (active and retired), for searches during a rebuild.
    pub async fn blind_index_candidates(
        &self,
        spec: &BlindIndexSpec,
        value: &str,
    ) -> Result<Vec<BlindIndex>, CryptoError> {
        let versions = self.blind_index_versions().await?;
        self.blind_index_candidates_at(spec, value, &versions).await
    }

    /// The blind-index key versions that may still be in tables, newest first, read from the
    /// database now (and remembered for [`Self::blind_index_versions_seen`]).
    pub async fn blind_index_versions(&self) -> Result<Vec<u32>, CryptoError> {
        let versions: Vec<i32> = sqlx::query_scalar!("SELECT version FROM data_keys WHERE purpose = $1 AND status <> 'destroyed' ORDER BY version DESC", Purpose::BlindIndex.as_str())
        .fetch_all(self.db())
        .await?;
        let versions: Vec<u32> = versions
            .into_iter()
            .map(|v| u32::try_from(v).unwrap_or(0))
            .collect();
        if let Ok(mut seen) = self.index_versions_seen.write() {
            *seen = Some(versions.clone());
        }
        Ok(versions)
    }

    /// The blind-index key versions this instance last read, read now if it has none (or read
    /// none). Only a
    /// hint: a rotation on another instance changes them without telling this one. A search
    /// that uses them checks them in its own statement with [`versions_check`], which fails
    /// with [`VERSIONS_CHANGED`] unless they are still exactly the live versions; it then reads
    /// them again ([`Self::blind_index_versions`]) and reruns. This saves a search the round
    /// trip of reading them first, and it never runs under a stale set.
    pub async fn blind_index_versions_seen(&self) -> Result<Vec<u32>, CryptoError> {
        let seen = self
            .index_versions_seen
            .read()
            .ok()
            .and_then(|seen| seen.clone())
            .filter(|versions| !versions.is_empty());
        match seen {
            Some(versions) => Ok(versions),
            None => self.blind_index_versions().await,
        }
    }

    /// As [`Self::blind_index_candidates`], under `versions` read once for a whole search.
    pub async fn blind_index_candidates_at(
        &self,
        spec: &BlindIndexSpec,
        value: &str,
        versions: &[u32],
    ) -> Result<Vec<BlindIndex>, CryptoError> {
        let mut candidates = Vec::with_capacity(versions.len());
        for &version in versions {
            if let Some(index) = self.blind_index_at(spec, value, version).await? {
                candidates.push(index);
            }
        }
        Ok(candidates)
    }

    /// Recomputes every index of `column` not made with the active blind-index key.
    pub async fn rebuild_blind_index(
        &self,
        job: &str,
        column: IndexedColumn,
        options: RekeyOptions,
    ) -> Result<RekeyOutcome, CryptoError> {
        self.rebuild_index(job, &column, options).await
    }

    /// Rebuilds `index` under the active blind-index key: one job at a time across instances,
    /// a batch per transaction, resumably (progress in `rekey_progress`).
    pub async fn rebuild_index(
        &self,
        job: &str,
        index: &dyn DerivedIndex,
        options: RekeyOptions,
    ) -> Result<RekeyOutcome, CryptoError> {
        let mut lock = self.db().acquire().await?;
        let locked: bool =
            sqlx::query_scalar!("SELECT pg_try_advisory_lock($1) AS \"v!\"", REINDEX_LOCK)
                .fetch_one(&mut *lock)
                .await?;
        if !locked {
            return Ok(RekeyOutcome::AlreadyRunning);
        }
        let result = self.rebuild_locked(job, index, options).await;
        sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", REINDEX_LOCK)
            .fetch_one(&mut *lock)
            .await?;
        result
    }

    async fn rebuild_locked(
        &self,
        job: &str,
        index: &dyn DerivedIndex,
        options: RekeyOptions,
    ) -> Result<RekeyOutcome, CryptoError> {
        self.forget_active_versions();
        let (table, column) = index.progress_key();
        let (table, column) = (identifier(table)?, identifier(column)?);
        sqlx::query!("INSERT INTO rekey_progress (job, table_name, column_name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", job, table, column)
            .execute(self.db())
            .await?;
        let mut report = RekeyReport::default();
        let mut batches = 0;
        loop {
            if options.max_batches.is_some_and(|max| batches >= max) {
                return Ok(RekeyOutcome::Paused(report));
            }
            let mut tx = self.db().begin().await?;
            let Some(after) = progress(&mut tx, job, table, column).await? else {
                return Ok(RekeyOutcome::Finished(report));
            };
            let active = self.active_blind_index_version().await?;
            let batch = index
                .rebuild_batch(self, &mut tx, after, options.batch_size, active)
                .await?;
            let step = Step {
                last_id: batch.last_id,
                seen: i64::try_from(batch.seen).unwrap_or(i64::MAX),
                moved: i64::try_from(batch.moved).unwrap_or(i64::MAX),
                finished: batch.finished,
            };
            record_progress(&mut tx, job, table, column, step).await?;
            tx.commit().await?;
            report.rows_seen += batch.seen;
            report.rows_moved += batch.moved;
            report.rows_destroyed += batch.destroyed;
            batches += 1;
            if batch.finished {
                return Ok(RekeyOutcome::Finished(report));
            }
        }
    }
}

/// An index derived from encrypted values: a blind index beside its column
/// ([`IndexedColumn`]), or one kept in a table of its own, such as the name-token index (a row
/// per word of a name), whose owner knows how to rebuild it. [`Keyring::rebuild_index`] runs
/// either the same way.
#[async_trait::async_trait]
pub trait DerivedIndex: Send + Sync {
    /// The table and column under which a job's progress is recorded.
    fn progress_key(&self) -> (&'static str, &'static str);

    /// Inside `tx`, recomputes under blind-index key version `active` the entries of at most
    /// `limit` owners following `after` in id order (from the start if `None`).
    async fn rebuild_batch(
        &self,
        keyring: &Keyring,
        tx: &mut PgConnection,
        after: Option<Uuid>,
        limit: i64,
        active: u32,
    ) -> Result<Batch, CryptoError>;
}

/// What one batch of an index rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    /// The last owner id looked at: the next batch starts after it.
    pub last_id: Option<Uuid>,
    pub seen: u64,
    pub moved: u64,
    /// Owners whose keys were shredded: left as they are.
    pub destroyed: u64,
    /// Fewer owners than the limit were left: the rebuild is done.
    pub finished: bool,
}

impl Batch {
    /// A batch that read `read` owners, the last being `last_id`, out of at most `limit`.
    pub fn over(last_id: Option<Uuid>, read: usize, limit: i64) -> Self {
        Self {
            last_id,
            finished: read < usize::try_from(limit).unwrap_or(usize::MAX),
            ..Self::default()
        }
    }
}

#[async_trait::async_trait]
impl DerivedIndex for IndexedColumn {
    fn progress_key(&self) -> (&'static str, &'static str) {
        (self.spec.table, self.index_column)
    }

    async fn rebuild_batch(
        &self,
        keyring: &Keyring,
        tx: &mut PgConnection,
        after: Option<Uuid>,
        limit: i64,
        active: u32,
    ) -> Result<Batch, CryptoError> {
        let table = identifier(self.spec.table)?;
        let source = identifier(self.spec.column)?;
        let index = identifier(self.index_column)?;
        let version = identifier(self.version_column)?;
        // Runtime query: re-indexing walks every blind-indexed column of the registry, so the
        // table and columns are only known here. Identifiers come from the static registry and
        // are checked above.
        let rows: Vec<(Uuid, Vec<u8>, Option<i32>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, {source}, {version} FROM {table} WHERE {source} IS NOT NULL \
             AND ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
        )))
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;

        let mut batch = Batch::over(rows.last().map(|(id, _, _)| *id), rows.len(), limit);
        for (id, ciphertext, current) in &rows {
            batch.seen += 1;
            if current.and_then(|v| u32::try_from(v).ok()) == Some(active) {
                continue;
            }
            let location = FieldLocation::new(self.spec.table, self.spec.column, *id);
            let plaintext = match keyring.decrypt(&location, ciphertext).await {
                Ok(plaintext) => plaintext,
                Err(CryptoError::KeyDestroyed) => {
                    batch.destroyed += 1;
                    continue;
                }
                Err(other) => return Err(other),
            };
            let text =
                std::str::from_utf8(&plaintext).map_err(|_| CryptoError::InvalidPlaintext)?;
            let fresh = keyring.blind_index_at(&self.spec, text, active).await?;
            // Runtime query: the same registry column as the SELECT above.
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET {index} = $1, {version} = $2 WHERE id = $3"
            )))
            .bind(fresh.as_ref().map(|i| i.value.clone()))
            .bind(
                fresh
                    .as_ref()
                    .map(|_| i32::try_from(active).unwrap_or(i32::MAX)),
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            batch.moved += 1;
        }
        Ok(batch)
    }
}

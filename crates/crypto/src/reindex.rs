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
        let versions: Vec<i32> = sqlx::query_scalar(
            "SELECT version FROM data_keys WHERE purpose = $1 AND status <> 'destroyed' ORDER BY version DESC",
        )
        .bind(Purpose::BlindIndex.as_str())
        .fetch_all(self.db())
        .await?;
        let mut candidates = Vec::with_capacity(versions.len());
        for version in versions {
            let version = u32::try_from(version).unwrap_or(0);
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
        let mut lock = self.db().acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(REINDEX_LOCK)
            .fetch_one(&mut *lock)
            .await?;
        if !locked {
            return Ok(RekeyOutcome::AlreadyRunning);
        }
        let result = self.rebuild_locked(job, column, options).await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(REINDEX_LOCK)
            .execute(&mut *lock)
            .await?;
        result
    }

    async fn rebuild_locked(
        &self,
        job: &str,
        column: IndexedColumn,
        options: RekeyOptions,
    ) -> Result<RekeyOutcome, CryptoError> {
        self.forget_active_versions();
        sqlx::query("INSERT INTO rekey_progress (job, table_name, column_name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(job)
            .bind(column.spec.table)
            .bind(column.index_column)
            .execute(self.db())
            .await?;
        let mut report = RekeyReport::default();
        let mut batches = 0;
        loop {
            if options.max_batches.is_some_and(|max| batches >= max) {
                return Ok(RekeyOutcome::Paused(report));
            }
            let mut tx = self.db().begin().await?;
            let done = self
                .reindex_batch(&mut tx, job, column, options.batch_size, &mut report)
                .await?;
            tx.commit().await?;
            batches += 1;
            if done {
                return Ok(RekeyOutcome::Finished(report));
            }
        }
    }

    async fn reindex_batch(
        &self,
        tx: &mut PgConnection,
        job: &str,
        column: IndexedColumn,
        batch_size: i64,
        report: &mut RekeyReport,
    ) -> Result<bool, CryptoError> {
        let table = identifier(column.spec.table)?;
        let source = identifier(column.spec.column)?;
        let index = identifier(column.index_column)?;
        let version = identifier(column.version_column)?;
        let Some(last_id) = progress(&mut *tx, job, table, index).await? else {
            return Ok(true);
        };
        let active = self.active_blind_index_version().await?;
        // Identifiers come from the static column registry and are checked above.
        let rows: Vec<(Uuid, Vec<u8>, Option<i32>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, {source}, {version} FROM {table} WHERE {source} IS NOT NULL \
             AND ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
        )))
        .bind(last_id)
        .bind(batch_size)
        .fetch_all(&mut *tx)
        .await?;

        let (mut seen, mut moved) = (0i64, 0i64);
        for (id, ciphertext, current) in &rows {
            seen += 1;
            if current.and_then(|v| u32::try_from(v).ok()) == Some(active) {
                continue;
            }
            let location = FieldLocation::new(column.spec.table, column.spec.column, *id);
            let plaintext = match self.decrypt(&location, ciphertext).await {
                Ok(plaintext) => plaintext,
                Err(CryptoError::KeyDestroyed) => {
                    report.rows_destroyed += 1;
                    continue;
                }
                Err(other) => return Err(other),
            };
            let text =
                std::str::from_utf8(&plaintext).map_err(|_| CryptoError::InvalidPlaintext)?;
            let fresh = self.blind_index_at(&column.spec, text, active).await?;
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
            moved += 1;
        }
        let finished = rows.len() < usize::try_from(batch_size).unwrap_or(usize::MAX);
        let step = Step {
            last_id: rows.last().map(|(id, _, _)| *id),
            seen,
            moved,
            finished,
        };
        record_progress(&mut *tx, job, table, index, step).await?;
        report.rows_seen += u64::try_from(seen).unwrap_or(0);
        report.rows_moved += u64::try_from(moved).unwrap_or(0);
        Ok(finished)
    }
}

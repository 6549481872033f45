//! SQL for the crate's tables, `data_keys` and `subject_keys`. Nothing else touches them.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::CryptoError;
use crate::keys::{Purpose, SubjectId};

/// A branch key row.
#[derive(Debug, Clone)]
pub struct BranchRow {
    pub id: Uuid,
    pub purpose: Purpose,
    pub version: u32,
    pub wrapped: Option<Vec<u8>>,
    pub kek_id: String,
    pub kek_version: u32,
    pub status: String,
}

/// A subject key row, with the branch key that wraps it.
#[derive(Debug, Clone)]
pub struct SubjectRow {
    pub subject: SubjectId,
    pub version: u32,
    pub wrapped: Option<Vec<u8>>,
    pub branch_key_id: Uuid,
    pub branch_version: u32,
}

fn to_u32(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// A `data_keys` row as the checked queries return it.
struct BranchDb {
    id: Uuid,
    purpose: String,
    version: i32,
    wrapped: Option<Vec<u8>>,
    kek_id: String,
    kek_version: i32,
    status: String,
}

impl TryFrom<BranchDb> for BranchRow {
    type Error = CryptoError;

    fn try_from(row: BranchDb) -> Result<Self, CryptoError> {
        Ok(BranchRow {
            id: row.id,
            purpose: row.purpose.parse()?,
            version: to_u32(row.version),
            wrapped: row.wrapped,
            kek_id: row.kek_id,
            kek_version: to_u32(row.kek_version),
            status: row.status,
        })
    }
}

pub async fn branch_by_version(
    db: &PgPool,
    purpose: Purpose,
    version: u32,
) -> Result<Option<BranchRow>, CryptoError> {
    let row = sqlx::query_as!(BranchDb, "SELECT id, purpose, version, wrapped, kek_id, kek_version, status FROM data_keys WHERE purpose = $1 AND version = $2", purpose.as_str(), to_i32(version))
    .fetch_optional(db)
    .await?;
    row.map(BranchRow::try_from).transpose()
}

pub async fn active_branch(
    db: impl sqlx::PgExecutor<'_>,
    purpose: Purpose,
) -> Result<Option<BranchRow>, CryptoError> {
    let row = sqlx::query_as!(BranchDb, "SELECT id, purpose, version, wrapped, kek_id, kek_version, status FROM data_keys WHERE purpose = $1 AND status = 'active'", purpose.as_str())
    .fetch_optional(db)
    .await?;
    row.map(BranchRow::try_from).transpose()
}

pub async fn all_branches(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<BranchRow>, CryptoError> {
    let rows = sqlx::query_as!(BranchDb, "SELECT id, purpose, version, wrapped, kek_id, kek_version, status FROM data_keys ORDER BY purpose, version")
        .fetch_all(db)
        .await?;
    rows.into_iter().map(BranchRow::try_from).collect()
}

/// The KEK generation new keys are wrapped under: the newest in use, 1 on an empty table.
pub async fn current_kek_version(db: impl sqlx::PgExecutor<'_>) -> Result<u32, CryptoError> {
    let version: Option<i32> = sqlx::query_scalar!("SELECT max(kek_version) FROM data_keys")
        .fetch_one(db)
        .await?;
    Ok(version.map_or(1, to_u32))
}

pub async fn next_branch_version(
    conn: &mut PgConnection,
    purpose: Purpose,
) -> Result<u32, CryptoError> {
    let version: Option<i32> = sqlx::query_scalar!(
        "SELECT max(version) FROM data_keys WHERE purpose = $1",
        purpose.as_str()
    )
    .fetch_one(conn)
    .await?;
    Ok(version.map_or(1, |v| to_u32(v) + 1))
}

pub async fn insert_branch(conn: &mut PgConnection, row: &BranchRow) -> Result<(), CryptoError> {
    sqlx::query!(
        "INSERT INTO data_keys (id, purpose, version, wrapped, kek_id, kek_version, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        row.id,
        row.purpose.as_str(),
        to_i32(row.version),
        row.wrapped.as_deref(),
        &row.kek_id,
        to_i32(row.kek_version),
        &row.status
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn retire_active_branch(
    conn: &mut PgConnection,
    purpose: Purpose,
) -> Result<(), CryptoError> {
    sqlx::query!(
        "UPDATE data_keys SET status = 'retired' WHERE purpose = $1 AND status = 'active'",
        purpose.as_str()
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn rewrap_branch(
    db: &PgPool,
    id: Uuid,
    wrapped: &[u8],
    kek_id: &str,
    kek_version: u32,
) -> Result<(), CryptoError> {
    sqlx::query!("UPDATE data_keys SET wrapped = $2, kek_id = $3, kek_version = $4, rewrapped_at = now() WHERE id = $1", id, wrapped, kek_id, to_i32(kek_version))
        .execute(db)
        .await?;
    Ok(())
}

/// A `subject_keys` row (with its branch key's version) as the checked queries return it.
struct SubjectDb {
    subject_id: Uuid,
    version: i32,
    wrapped: Option<Vec<u8>>,
    branch_key_id: Uuid,
    branch_version: i32,
}

impl From<SubjectDb> for SubjectRow {
    fn from(row: SubjectDb) -> Self {
        SubjectRow {
            subject: SubjectId(row.subject_id),
            version: to_u32(row.version),
            wrapped: row.wrapped,
            branch_key_id: row.branch_key_id,
            branch_version: to_u32(row.branch_version),
        }
    }
}

pub async fn subject_key(
    db: &PgPool,
    subject: SubjectId,
    version: u32,
) -> Result<Option<SubjectRow>, CryptoError> {
    let row = sqlx::query_as!(SubjectDb, "SELECT s.subject_id, s.version, s.wrapped, s.branch_key_id, d.version AS branch_version FROM subject_keys s JOIN data_keys d ON d.id = s.branch_key_id WHERE s.subject_id = $1 AND s.version = $2", subject.0, to_i32(version))
    .fetch_optional(db)
    .await?;
    Ok(row.map(SubjectRow::from))
}

pub async fn active_subject_key(
    db: &PgPool,
    subject: SubjectId,
) -> Result<Option<SubjectRow>, CryptoError> {
    let row = sqlx::query_as!(SubjectDb, "SELECT s.subject_id, s.version, s.wrapped, s.branch_key_id, d.version AS branch_version FROM subject_keys s JOIN data_keys d ON d.id = s.branch_key_id WHERE s.subject_id = $1 AND s.status = 'active'", subject.0)
    .fetch_optional(db)
    .await?;
    Ok(row.map(SubjectRow::from))
}

pub async fn subject_has_destroyed_key(
    db: &PgPool,
    subject: SubjectId,
) -> Result<bool, CryptoError> {
    Ok(sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM subject_keys WHERE subject_id = $1 AND status = 'destroyed') AS \"v!\"",
        subject.0
    )
    .fetch_one(db)
    .await?)
}

/// Inserts a first key for a subject; `false` if another writer got there first.
pub async fn insert_subject_key(
    db: &PgPool,
    subject: SubjectId,
    wrapped: &[u8],
    branch_key_id: Uuid,
) -> Result<bool, CryptoError> {
    let inserted = sqlx::query!(
        "INSERT INTO subject_keys (subject_id, version, branch_key_id, wrapped, status) \
         VALUES ($1, 1, $2, $3, 'active') ON CONFLICT DO NOTHING",
        subject.0,
        branch_key_id,
        wrapped
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Subject keys still wrapped by a branch key other than `branch_key_id`, a batch at a time.
pub async fn subject_keys_not_under(
    db: &PgPool,
    branch_key_id: Uuid,
    limit: i64,
) -> Result<Vec<SubjectRow>, CryptoError> {
    let rows = sqlx::query_as!(SubjectDb, "SELECT s.subject_id, s.version, s.wrapped, s.branch_key_id, d.version AS branch_version FROM subject_keys s JOIN data_keys d ON d.id = s.branch_key_id WHERE s.branch_key_id <> $1 AND s.wrapped IS NOT NULL ORDER BY s.subject_id, s.version LIMIT $2", branch_key_id, limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(SubjectRow::from).collect())
}

pub async fn rewrap_subject_key(
    db: &PgPool,
    row: &SubjectRow,
    wrapped: &[u8],
    branch_key_id: Uuid,
) -> Result<(), CryptoError> {
    // Guarded on the old wrapping: a concurrent destroy or rewrap wins.
    sqlx::query!(
        "UPDATE subject_keys SET wrapped = $4, branch_key_id = $5 \
         WHERE subject_id = $1 AND version = $2 AND branch_key_id = $3 AND wrapped IS NOT NULL",
        row.subject.0,
        to_i32(row.version),
        row.branch_key_id,
        wrapped,
        branch_key_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Destroys every live key of `subject`; returns the versions destroyed, in order.
pub async fn destroy_subject_keys(
    conn: &mut PgConnection,
    subject: SubjectId,
) -> Result<Vec<u32>, CryptoError> {
    let mut versions = sqlx::query_scalar!(
        "UPDATE subject_keys SET wrapped = NULL, status = 'destroyed', destroyed_at = now() \
         WHERE subject_id = $1 AND status <> 'destroyed' RETURNING version",
        subject.0
    )
    .fetch_all(conn)
    .await?;
    versions.sort_unstable();
    Ok(versions
        .into_iter()
        .filter_map(|v| u32::try_from(v).ok())
        .collect())
}

/// Per branch key: how many subject keys it still wraps.
pub async fn subject_key_counts(db: &PgPool) -> Result<Vec<(Uuid, i64)>, CryptoError> {
    Ok(sqlx::query!(
        r#"SELECT branch_key_id, count(*) AS "count!" FROM subject_keys
           WHERE wrapped IS NOT NULL GROUP BY branch_key_id"#
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|row| (row.branch_key_id, row.count))
    .collect())
}

/// Retires a subject's active key `version` and inserts `next` as active, in one transaction.
pub async fn replace_subject_key(
    conn: &mut PgConnection,
    subject: SubjectId,
    version: u32,
    next: u32,
    wrapped: &[u8],
    branch_key_id: Uuid,
) -> Result<(), CryptoError> {
    let retired = sqlx::query!("UPDATE subject_keys SET status = 'retired' WHERE subject_id = $1 AND version = $2 AND status = 'active'", subject.0, to_i32(version))
    .execute(&mut *conn)
    .await?;
    if retired.rows_affected() != 1 {
        // Destroyed or already replaced meanwhile: nothing to do.
        return Ok(());
    }
    sqlx::query!("INSERT INTO subject_keys (subject_id, version, branch_key_id, wrapped, status) VALUES ($1, $2, $3, $4, 'active')", subject.0, to_i32(next), branch_key_id, wrapped)
    .execute(conn)
    .await?;
    Ok(())
}

//! The `files` table: one row per complete object, with its wrapped data key. Rows are
//! inserted only after the object is complete, so a row always names a whole object.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use clinicd_crypto::{BlindIndexSpec, Encrypted, FieldLocation, Normalizer};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::sniff::ContentType;

pub const TABLE: &str = "files";

/// The field-encrypted columns of `files` (for `clinicd keys rekey`): re-keying rewrites them
/// and leaves every object as it is.
pub const ENCRYPTED_COLUMNS: &[&str] = &["data_key", "sha256", "name"];

/// A 64-bit keyed hash of (patient, content digest) marking a file brought in by
/// `clinicd files import`, so a re-run skips what is already stored.
pub const IMPORT_KEY: BlindIndexSpec = BlindIndexSpec {
    table: TABLE,
    column: "import_key",
    bits: 64,
    normalizer: Normalizer::Exact,
};

pub fn location(id: Uuid, column: &'static str) -> FieldLocation<'static> {
    FieldLocation::new(TABLE, column, id)
}

/// What a document is, chosen by the uploader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    InsuranceCardFront,
    InsuranceCardBack,
    PhotoId,
    Referral,
    LabResult,
    Other,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Self::InsuranceCardFront,
        Self::InsuranceCardBack,
        Self::PhotoId,
        Self::Referral,
        Self::LabResult,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InsuranceCardFront => "insurance_card_front",
            Self::InsuranceCardBack => "insurance_card_back",
            Self::PhotoId => "photo_id",
            Self::Referral => "referral",
            Self::LabResult => "lab_result",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or(())
    }
}

/// A stored file's row, with its encrypted columns still sealed.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub uploaded_by: Option<Uuid>,
    pub category: Category,
    pub content_type: ContentType,
    pub size: u64,
    /// The plaintext's SHA-256, sealed.
    pub sha256: Vec<u8>,
    pub name: Option<Encrypted<String>>,
    pub data_key: Vec<u8>,
    pub object_key: String,
    pub created_at: DateTime<Utc>,
    pub label: StoredLabel,
}

/// A file's sensitivity label as stored: HL7 confidentiality and sensitivity codes, checked by
/// the table. What they mean (who reads what) is the domain's `Label`; this crate only keeps
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLabel {
    pub confidentiality: String,
    pub sensitivity: Vec<String>,
}

impl Default for StoredLabel {
    /// Normal, no codes.
    fn default() -> Self {
        Self {
            confidentiality: "N".to_owned(),
            sensitivity: Vec::new(),
        }
    }
}

/// A `files` row as the checked queries return it, before its text columns are parsed.
struct FileRow {
    id: Uuid,
    patient_id: Uuid,
    uploaded_by: Option<Uuid>,
    category: String,
    content_type: String,
    size_bytes: i64,
    sha256: Vec<u8>,
    name: Option<Encrypted<String>>,
    data_key: Vec<u8>,
    object_key: String,
    created_at: DateTime<Utc>,
    confidentiality: String,
    sensitivity: Vec<String>,
}

impl TryFrom<FileRow> for StoredFile {
    type Error = sqlx::Error;

    fn try_from(row: FileRow) -> Result<Self, sqlx::Error> {
        let corrupt = |column: &str| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: "a value the table's CHECK does not allow".into(),
        };
        Ok(StoredFile {
            id: row.id,
            patient_id: row.patient_id,
            uploaded_by: row.uploaded_by,
            category: row.category.parse().map_err(|()| corrupt("category"))?,
            content_type: ContentType::from_mime(&row.content_type)
                .ok_or_else(|| corrupt("content_type"))?,
            size: u64::try_from(row.size_bytes).map_err(|_| corrupt("size_bytes"))?,
            sha256: row.sha256,
            name: row.name,
            data_key: row.data_key,
            object_key: row.object_key,
            created_at: row.created_at,
            label: StoredLabel {
                confidentiality: row.confidentiality,
                sensitivity: row.sensitivity,
            },
        })
    }
}

/// A live (not deleted) file by id.
pub async fn get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<StoredFile>, sqlx::Error> {
    sqlx::query_as!(
        FileRow,
        r#"SELECT id, patient_id, uploaded_by, category, content_type, size_bytes, sha256,
                  name AS "name: Encrypted<String>", data_key, object_key, created_at,
                  confidentiality, sensitivity
           FROM files WHERE id = $1 AND deleted_at IS NULL"#,
        id
    )
    .fetch_optional(db)
    .await?
    .map(StoredFile::try_from)
    .transpose()
}

/// A patient's live files, oldest first.
pub async fn for_patient(
    db: impl PgExecutor<'_>,
    patient: Uuid,
) -> Result<Vec<StoredFile>, sqlx::Error> {
    sqlx::query_as!(
        FileRow,
        r#"SELECT id, patient_id, uploaded_by, category, content_type, size_bytes, sha256,
                  name AS "name: Encrypted<String>", data_key, object_key, created_at,
                  confidentiality, sensitivity
           FROM files WHERE patient_id = $1 AND deleted_at IS NULL
           ORDER BY created_at, id"#,
        patient
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(StoredFile::try_from)
    .collect()
}

/// A complete object's row. `false` if `import_key` is already present (the object is then
/// the caller's to delete).
pub async fn insert(
    db: impl PgExecutor<'_>,
    file: &StoredFile,
    import_key: Option<&[u8]>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!("INSERT INTO files (id, patient_id, uploaded_by, category, content_type, size_bytes, sha256, \
         name, data_key, object_key, format, import_key, created_at, confidentiality, sensitivity) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (import_key) DO NOTHING", file.id, file.patient_id, file.uploaded_by, file.category.as_str(), file.content_type.mime(), i64::try_from(file.size).unwrap_or(i64::MAX), &file.sha256, file.name.as_ref() as _, &file.data_key, &file.object_key, i16::from(crate::format::VERSION), import_key, file.created_at, &file.label.confidentiality, &file.label.sensitivity)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Changes a live file's label. `false` if there is no such live file.
pub async fn relabel(
    db: impl PgExecutor<'_>,
    id: Uuid,
    label: &StoredLabel,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        "UPDATE files SET confidentiality = $2, sensitivity = $3 WHERE id = $1 AND deleted_at IS NULL",
        id,
        &label.confidentiality,
        &label.sensitivity
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Raises every file of a patient to at least `floor` (the patient's label); returns how many
/// changed. 'N' < 'R' < 'V' as text, so GREATEST is the higher level.
pub async fn raise_labels(
    db: impl PgExecutor<'_>,
    patient: Uuid,
    floor: &StoredLabel,
) -> Result<u64, sqlx::Error> {
    let raised = sqlx::query!(
        "UPDATE files SET confidentiality = GREATEST(confidentiality, $2), \
           sensitivity = ARRAY(SELECT DISTINCT c FROM unnest(sensitivity || $3::text[]) AS c ORDER BY c) \
         WHERE patient_id = $1 AND (confidentiality < $2 OR NOT sensitivity @> $3::text[])",
        patient,
        &floor.confidentiality,
        &floor.sensitivity
    )
    .execute(db)
    .await?;
    Ok(raised.rows_affected())
}

/// The file already imported under any of `keys`, if any (deleted or not).
pub async fn by_import_key(
    db: impl PgExecutor<'_>,
    keys: &[Vec<u8>],
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM files WHERE import_key = ANY($1) LIMIT 1",
        keys
    )
    .fetch_optional(db)
    .await
}

/// Marks a live file deleted, kept until `purge_after`. `false` if there was no live file.
pub async fn soft_delete(
    db: impl PgExecutor<'_>,
    id: Uuid,
    by: Uuid,
    now: DateTime<Utc>,
    purge_after: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE files SET deleted_at = $3, deleted_by = $2, purge_after = $4 \
         WHERE id = $1 AND deleted_at IS NULL",
        id,
        by,
        now,
        purge_after
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The legal hold that covers the file's patient, if any (`legal_hold_for` takes the lifecycle
/// lock shared, so a hold placed meanwhile waits for this transaction); `Err(RowNotFound)` for
/// no such file.
pub async fn hold_on(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT legal_hold_for(patient_id) AS hold FROM files WHERE id = $1",
        id
    )
    .fetch_one(db)
    .await
}

/// Deletes every file row of a patient being erased, returning their object keys.
pub async fn erase_patient(
    db: impl PgExecutor<'_>,
    patient: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "DELETE FROM files WHERE patient_id = $1 RETURNING object_key",
        patient
    )
    .fetch_all(db)
    .await
}

/// Deleted files whose retention has run out and whose patient is not held: `(id, patient,
/// object key)`.
pub async fn due_for_purge(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT id, patient_id, object_key FROM files WHERE purge_after <= $1 AND legal_hold_for(patient_id) IS NULL \
         ORDER BY purge_after LIMIT $2",
        now,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.patient_id, r.object_key))
        .collect())
}

/// Deletes a row outright, returning its object key.
pub async fn discard(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!("DELETE FROM files WHERE id = $1 RETURNING object_key", id)
        .fetch_optional(db)
        .await
}

pub async fn remove(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM files WHERE id = $1 AND purge_after IS NOT NULL",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

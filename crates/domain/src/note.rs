//! Clinical notes. A note is a draft its author may change until they sign it; a signed note
//! never changes (a database trigger refuses it too). Corrections are amendments: new notes
//! pointing at the original, signed in their turn; the original and its amendments are the
//! note's history. Bodies are field ciphertexts under the patient's subject key.

use chrono::{DateTime, NaiveDate, Utc};
use clinicd_crypto::{FieldLocation, Keyring, Owner, SubjectId};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::label::Label;
use crate::patient_store::StoreError;
use crate::types::{FieldError, bounded_text, refuse};

pub const MAX_BODY_CHARS: usize = 50_000;

/// A note body: 1 to 50,000 characters.
pub fn body(value: &str) -> Result<String, FieldError> {
    bounded_text("body", value, MAX_BODY_CHARS)
}

/// An encounter date: not after today, not more than 150 years ago.
pub fn encounter_date(value: &str, today: NaiveDate) -> Result<NaiveDate, FieldError> {
    let Some(date) = crate::types::iso_date(value) else {
        return refuse("encounter_date", "must be a date as YYYY-MM-DD");
    };
    if date > today {
        return refuse("encounter_date", "is in the future");
    }
    if today.signed_duration_since(date).num_days() > 150 * 366 {
        return refuse("encounter_date", "is more than 150 years ago");
    }
    Ok(date)
}

#[derive(Clone, PartialEq, Eq)]
pub struct Note {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub author_id: Uuid,
    pub encounter_date: NaiveDate,
    pub body: String,
    /// The original this note corrects.
    pub amends: Option<Uuid>,
    pub signed_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its sensitivity label (docs/lifecycle.md).
    pub label: Label,
}

impl Note {
    pub fn signed(&self) -> bool {
        self.signed_at.is_some()
    }
}

impl std::fmt::Debug for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Note")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("only the author may change or sign a draft")]
    NotAuthor,
    #[error("the note is signed and cannot change: amend it")]
    Signed,
    #[error("only a signed note can be amended")]
    NotSigned,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for NoteError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(error))
    }
}

impl From<clinicd_crypto::CryptoError> for NoteError {
    fn from(error: clinicd_crypto::CryptoError) -> Self {
        Self::Store(StoreError::Crypto(error))
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    patient_id: Uuid,
    author_id: Uuid,
    encounter_date: NaiveDate,
    body: Vec<u8>,
    amends: Option<Uuid>,
    signed_at: Option<DateTime<Utc>>,
    version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    confidentiality: String,
    sensitivity: Vec<String>,
}

/// What a write to a draft does besides changing its date and body.
#[derive(Debug, Clone, Copy)]
enum Write {
    Edit,
    Sign,
}

fn location(note: Uuid) -> FieldLocation<'static> {
    FieldLocation::new("clinical_notes", "body", note)
}

/// What a new note is made of.
#[derive(Debug, Clone, Copy)]
pub struct Draft<'a> {
    pub patient: Uuid,
    pub author: Uuid,
    pub encounter_date: NaiveDate,
    pub body: &'a str,
    pub label: &'a Label,
}

#[derive(Debug, Clone)]
pub struct NoteStore {
    db: PgPool,
    keyring: std::sync::Arc<Keyring>,
}

impl NoteStore {
    pub fn new(db: PgPool, keyring: std::sync::Arc<Keyring>) -> Self {
        Self { db, keyring }
    }

    async fn seal(&self, patient: Uuid, note: Uuid, body: &str) -> Result<Vec<u8>, NoteError> {
        Ok(self
            .keyring
            .encrypt(
                Owner::Subject(SubjectId(patient)),
                &location(note),
                body.as_bytes(),
            )
            .await?)
    }

    async fn open(&self, row: Row) -> Result<Note, NoteError> {
        let plain = self.keyring.decrypt(&location(row.id), &row.body).await?;
        let body = String::from_utf8(plain.to_vec()).map_err(|_| StoreError::Corrupt)?;
        Ok(Note {
            id: row.id,
            patient_id: row.patient_id,
            author_id: row.author_id,
            encounter_date: row.encounter_date,
            body,
            amends: row.amends,
            signed_at: row.signed_at,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
            label: Label::from_stored(&row.confidentiality, &row.sensitivity),
        })
    }

    /// A new draft, in the caller's transaction; for an amendment, `amends` is the signed
    /// original.
    pub async fn create(
        &self,
        tx: &mut PgConnection,
        draft: Draft<'_>,
        amends: Option<&Note>,
    ) -> Result<Note, NoteError> {
        let Draft {
            patient,
            author,
            encounter_date,
            body,
            label,
        } = draft;
        if amends.is_some_and(|original| !original.signed()) {
            return Err(NoteError::NotSigned);
        }
        let id = Uuid::now_v7();
        let sealed = self.seal(patient, id, body).await?;
        // An amendment of an amendment points at the same original, so history is one list.
        let original = amends.map(|n| n.amends.unwrap_or(n.id));
        let row: Row = sqlx::query_as!(Row, "INSERT INTO clinical_notes (id, patient_id, author_id, encounter_date, body, amends, confidentiality, sensitivity) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id, patient_id, author_id, encounter_date, body, amends, signed_at, version, created_at, updated_at, confidentiality, sensitivity", id, patient, author, encounter_date, &sealed, original, label.confidentiality.as_str(), &label.codes())
        .fetch_one(tx)
        .await?;
        Ok(opened(row, body))
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Note>, NoteError> {
        let row: Option<Row> = sqlx::query_as!(Row, "SELECT id, patient_id, author_id, encounter_date, body, amends, signed_at, version, created_at, updated_at, confidentiality, sensitivity FROM clinical_notes WHERE id = $1", id)
        .fetch_optional(&self.db)
        .await?;
        match row {
            Some(row) => Ok(Some(self.open(row).await?)),
            None => Ok(None),
        }
    }

    /// A patient's notes, newest encounter first.
    pub async fn for_patient(&self, patient: Uuid) -> Result<Vec<Note>, NoteError> {
        let rows: Vec<Row> = sqlx::query_as!(Row, "SELECT id, patient_id, author_id, encounter_date, body, amends, signed_at, version, created_at, updated_at, confidentiality, sensitivity FROM clinical_notes WHERE patient_id = $1 ORDER BY encounter_date DESC, id DESC", patient)
        .fetch_all(&self.db)
        .await?;
        let mut notes = Vec::with_capacity(rows.len());
        for row in rows {
            notes.push(self.open(row).await?);
        }
        Ok(notes)
    }

    /// The original of `note` and every amendment of it, oldest first.
    pub async fn history(&self, note: &Note) -> Result<Vec<Note>, NoteError> {
        let original = note.amends.unwrap_or(note.id);
        let rows: Vec<Row> = sqlx::query_as!(Row, "SELECT id, patient_id, author_id, encounter_date, body, amends, signed_at, version, created_at, updated_at, confidentiality, sensitivity FROM clinical_notes WHERE id = $1 OR amends = $1 ORDER BY created_at, id", original)
        .fetch_all(&self.db)
        .await?;
        let mut notes = Vec::with_capacity(rows.len());
        for row in rows {
            notes.push(self.open(row).await?);
        }
        Ok(notes)
    }

    /// Changes a draft (its author only, at the expected version), in the caller's transaction.
    pub async fn edit(
        &self,
        tx: &mut PgConnection,
        note: &Note,
        author: Uuid,
        expected_version: i32,
        encounter_date: Option<NaiveDate>,
        body: Option<&str>,
    ) -> Result<Note, NoteError> {
        check_draft(note, author, expected_version)?;
        let sealed = match body {
            Some(body) => Some(self.seal(note.patient_id, note.id, body).await?),
            None => None,
        };
        let row = self
            .write(
                tx,
                note,
                expected_version,
                Write::Edit,
                encounter_date,
                sealed,
            )
            .await?;
        Ok(opened(row, body.unwrap_or(&note.body)))
    }

    /// Signs a draft, in the caller's transaction: from then on it never changes.
    pub async fn sign(
        &self,
        tx: &mut PgConnection,
        note: &Note,
        author: Uuid,
        expected_version: i32,
    ) -> Result<Note, NoteError> {
        check_draft(note, author, expected_version)?;
        let row = self
            .write(tx, note, expected_version, Write::Sign, None, None)
            .await?;
        Ok(opened(row, &note.body))
    }

    /// Changes a note's label (signed or not), in the caller's transaction; the version stays
    /// (the content did not change).
    pub async fn relabel(
        &self,
        tx: &mut PgConnection,
        note: &Note,
        label: &Label,
    ) -> Result<Note, NoteError> {
        let row: Option<Row> = sqlx::query_as!(Row, "UPDATE clinical_notes SET confidentiality = $2, sensitivity = $3, updated_at = now() \
             WHERE id = $1 RETURNING id, patient_id, author_id, encounter_date, body, amends, signed_at, version, created_at, updated_at, confidentiality, sensitivity", note.id, label.confidentiality.as_str(), &label.codes())
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        Ok(opened(row, &note.body))
    }

    async fn write(
        &self,
        tx: &mut PgConnection,
        note: &Note,
        expected_version: i32,
        write: Write,
        encounter_date: Option<NaiveDate>,
        body: Option<Vec<u8>>,
    ) -> Result<Row, NoteError> {
        let sign = matches!(write, Write::Sign);
        let row: Option<Row> = sqlx::query_as!(Row, "UPDATE clinical_notes \
             SET status = CASE WHEN $5 THEN 'signed' ELSE status END, \
                 signed_at = CASE WHEN $5 THEN now() ELSE signed_at END, \
                 encounter_date = coalesce($3, encounter_date), body = coalesce($4, body), \
                 version = version + 1, updated_at = now() \
             WHERE id = $1 AND version = $2 AND status = 'draft' \
             RETURNING id, patient_id, author_id, encounter_date, body, amends, signed_at, version, created_at, updated_at, confidentiality, sensitivity", note.id, expected_version, encounter_date, body, sign)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            return Ok(row);
        }
        // Why not: read in the same transaction (a request holds one connection at a time).
        let now = sqlx::query!(
            r#"SELECT signed_at IS NOT NULL AS "signed!", version FROM clinical_notes WHERE id = $1"#,
            note.id
        )
        .fetch_optional(tx)
        .await?
        .map(|row| (row.signed, row.version));
        match now {
            Some((true, _)) => Err(NoteError::Signed),
            Some((false, version)) => Err(StoreError::VersionMismatch(version).into()),
            None => Err(StoreError::NotFound.into()),
        }
    }
}

/// A row just written, with the body the writer knows in clear (not decrypted again: the
/// transaction that wrote it is still open, and key work may need a connection of its own).
fn opened(row: Row, body: &str) -> Note {
    Note {
        id: row.id,
        patient_id: row.patient_id,
        author_id: row.author_id,
        encounter_date: row.encounter_date,
        body: body.to_owned(),
        amends: row.amends,
        signed_at: row.signed_at,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        label: Label::from_stored(&row.confidentiality, &row.sensitivity),
    }
}

fn check_draft(note: &Note, author: Uuid, expected_version: i32) -> Result<(), NoteError> {
    if note.author_id != author {
        return Err(NoteError::NotAuthor);
    }
    if note.signed() {
        return Err(NoteError::Signed);
    }
    if note.version != expected_version {
        return Err(StoreError::VersionMismatch(note.version).into());
    }
    Ok(())
}

//! Storing and reading files: each upload gets a fresh random data key, wrapped under the
//! patient's subject key (itself under the `field` branch key, under KMS) and kept in the
//! file's row; the object holds only the encrypted format. Plaintext exists only in memory, a
//! segment at a time, in both directions.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use chrono::{DateTime, Utc};
use clinicd_crypto::{CryptoError, Keyring, Owner, SubjectId};
use futures_util::{Stream, StreamExt};
use sqlx::PgPool;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::format::{Context, DEFAULT_SEGMENT_SIZE, Decryptor, Encryptor, FormatError};
use crate::record::{self, Category, StoredFile, location};
use crate::sniff::{self, ContentType, SNIFF_LEN, TextCheck};
use crate::store::{ObjectReader, ObjectStore, ObjectStoreError, ObjectWriter};

pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;
/// Six years, the HIPAA documentation retention period.
pub const DEFAULT_RETENTION_DAYS: u32 = 6 * 366;

#[derive(Debug, Clone)]
pub struct FileSettings {
    pub max_bytes: u64,
    pub allowed: HashSet<ContentType>,
    /// How long a deleted file's object and key are kept before `clinicd files purge`.
    pub retention_days: u32,
    pub segment_size: u32,
    /// An upload that delivers no bytes for this long is abandoned (slow or stalled clients
    /// would otherwise hold a handler and an unfinished object indefinitely).
    pub idle_timeout: std::time::Duration,
}

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            allowed: ContentType::ALL.into_iter().collect(),
            retention_days: DEFAULT_RETENTION_DAYS,
            segment_size: DEFAULT_SEGMENT_SIZE,
            idle_timeout: std::time::Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// Not one of the allowed types by its bytes (`None`: not a type we know at all).
    #[error("the file's content is not an allowed type")]
    TypeNotAllowed(Option<ContentType>),
    /// The client's body failed or ended early.
    #[error("the upload did not arrive whole: {0}")]
    Incomplete(String),
    /// A stored object failed authentication: tampered, truncated, reordered or swapped.
    #[error("the stored object failed verification: {0}")]
    Integrity(FormatError),
    #[error("the stored object is missing")]
    ObjectMissing,
    #[error(transparent)]
    Store(ObjectStoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("encryption failed: {0}")]
    Encrypt(FormatError),
}

impl From<ObjectStoreError> for FileError {
    fn from(e: ObjectStoreError) -> Self {
        match e {
            ObjectStoreError::NotFound => Self::ObjectMissing,
            other => Self::Store(other),
        }
    }
}

/// What is known about an upload before its bytes arrive.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub patient_id: Uuid,
    /// `None` for an import.
    pub uploaded_by: Option<Uuid>,
    pub category: Category,
    /// The original file name, without any directory; kept encrypted.
    pub name: Option<String>,
    pub now: DateTime<Utc>,
}

/// A stored file, its sealed columns opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub uploaded_by: Option<Uuid>,
    pub category: Category,
    pub content_type: ContentType,
    pub size: u64,
    pub sha256: [u8; 32],
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The encryption context bound into a file's header: an object copied into another file's
/// place, or another patient's, does not open.
fn context(file: Uuid, patient: Uuid) -> Context {
    Context::new([
        ("clinicd", "file".to_owned()),
        ("file_id", file.to_string()),
        ("patient_id", patient.to_string()),
    ])
}

fn object_key(id: Uuid) -> String {
    format!("files/{id}")
}

#[derive(Clone)]
pub struct Files {
    db: PgPool,
    keyring: Arc<Keyring>,
    store: Arc<dyn ObjectStore>,
    settings: Arc<FileSettings>,
    rng: SystemRandom,
}

impl fmt::Debug for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Files")
            .field("store", &self.store)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What the body stream produced, once it is all in the object.
struct Sealed {
    size: u64,
    sha256: [u8; 32],
    content_type: ContentType,
}

impl Files {
    pub fn new(
        db: PgPool,
        keyring: Arc<Keyring>,
        store: Arc<dyn ObjectStore>,
        settings: FileSettings,
    ) -> Self {
        Self {
            db,
            keyring,
            store,
            settings: Arc::new(settings),
            rng: SystemRandom::new(),
        }
    }

    pub fn settings(&self) -> &FileSettings {
        &self.settings
    }

    /// Encrypts `body` into a new object and records it. Nothing is left behind on failure:
    /// the object is aborted (or deleted, if the row cannot be written) and no row exists.
    pub async fn upload<S, B, E>(&self, new: NewFile, body: S) -> Result<FileInfo, FileError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: fmt::Display,
    {
        self.store_file(new, body, None)
            .await?
            .ok_or(FileError::Database(sqlx::Error::RowNotFound))
    }

    /// Like [`Files::upload`] for `clinicd files import`: `None` if a file with this
    /// `import_key` was stored meanwhile (its object is then removed again).
    pub async fn store_file<S, B, E>(
        &self,
        new: NewFile,
        mut body: S,
        import_key: Option<&[u8]>,
    ) -> Result<Option<FileInfo>, FileError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: fmt::Display,
    {
        let id = Uuid::now_v7();
        let owner = Owner::Subject(SubjectId(new.patient_id));
        let mut data_key = Zeroizing::new([0u8; 32]);
        self.rng
            .fill(data_key.as_mut())
            .map_err(|_| CryptoError::Random)?;
        let wrapped = self
            .keyring
            .encrypt(owner, &location(id, "data_key"), data_key.as_ref())
            .await?;
        let encryptor = Encryptor::new(
            &data_key,
            &context(id, new.patient_id),
            self.settings.segment_size,
        )
        .map_err(FileError::Encrypt)?;
        drop(data_key);

        let object_key = object_key(id);
        let mut writer = self.store.create(&object_key).await?;
        let sealed = match self.encrypt_into(encryptor, &mut body, &mut *writer).await {
            Ok(sealed) => sealed,
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, "could not abort a failed upload");
                }
                return Err(e);
            }
        };
        writer.complete().await?;

        let row = async {
            let name = match &new.name {
                Some(name) => Some(
                    self.keyring
                        .seal(owner, &location(id, "name"), name)
                        .await?,
                ),
                None => None,
            };
            let sha256 = self
                .keyring
                .encrypt(owner, &location(id, "sha256"), &sealed.sha256)
                .await?;
            let file = StoredFile {
                id,
                patient_id: new.patient_id,
                uploaded_by: new.uploaded_by,
                category: new.category,
                content_type: sealed.content_type,
                size: sealed.size,
                sha256,
                name: name.clone(),
                data_key: wrapped,
                object_key: object_key.clone(),
                created_at: new.now,
                deleted_at: None,
            };
            Ok::<_, FileError>(record::insert(&self.db, &file, import_key).await?)
        }
        .await;
        match row {
            Ok(true) => Ok(Some(FileInfo {
                id,
                patient_id: new.patient_id,
                uploaded_by: new.uploaded_by,
                category: new.category,
                content_type: sealed.content_type,
                size: sealed.size,
                sha256: sealed.sha256,
                name: new.name,
                created_at: new.now,
            })),
            outcome => {
                // No row names the object: remove it so nothing is left behind.
                if let Err(e) = self.store.delete(&object_key).await {
                    tracing::error!(object = %object_key, error = %e, "could not remove an unrecorded object");
                }
                outcome.map(|_| None)
            }
        }
    }

    /// Streams the body through the size limit, the type check, the digest and the encryptor
    /// into the writer.
    async fn encrypt_into<S, B, E>(
        &self,
        mut encryptor: Encryptor,
        body: &mut S,
        writer: &mut dyn ObjectWriter,
    ) -> Result<Sealed, FileError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: fmt::Display,
    {
        let limit = self.settings.max_bytes;
        let mut size: u64 = 0;
        let mut digest = digest::Context::new(&digest::SHA256);
        // Bytes held back until the type is known (at most SNIFF_LEN).
        let mut head: Vec<u8> = Vec::with_capacity(SNIFF_LEN);
        let mut kind: Option<ContentType> = None;
        let mut text = TextCheck::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FileError::Incomplete(e.to_string()))?;
            let mut bytes = chunk.as_ref();
            size += bytes.len() as u64;
            if size > limit {
                return Err(FileError::TooLarge { limit });
            }
            if kind.is_none() {
                let take = (SNIFF_LEN - head.len()).min(bytes.len());
                head.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if head.len() < SNIFF_LEN {
                    continue;
                }
                kind = Some(self.decide(&head)?);
                self.absorb(&head, kind, &mut text, &mut digest, &mut encryptor, writer)
                    .await?;
            }
            self.absorb(bytes, kind, &mut text, &mut digest, &mut encryptor, writer)
                .await?;
        }
        if kind.is_none() {
            // A file shorter than the longest magic number.
            kind = Some(self.decide(&head)?);
            self.absorb(&head, kind, &mut text, &mut digest, &mut encryptor, writer)
                .await?;
        }
        let content_type = kind.unwrap_or(ContentType::Text);
        if content_type == ContentType::Text && !text.finish() {
            return Err(FileError::TypeNotAllowed(None));
        }
        writer
            .write(&encryptor.finish().map_err(FileError::Encrypt)?)
            .await?;
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.finish().as_ref());
        Ok(Sealed {
            size,
            sha256,
            content_type,
        })
    }

    /// The type of a file from its first bytes, if allowed.
    fn decide(&self, head: &[u8]) -> Result<ContentType, FileError> {
        let kind = sniff::by_magic(head).unwrap_or(ContentType::Text);
        if self.settings.allowed.contains(&kind) {
            Ok(kind)
        } else {
            Err(FileError::TypeNotAllowed(Some(kind)))
        }
    }

    async fn absorb(
        &self,
        bytes: &[u8],
        kind: Option<ContentType>,
        text: &mut TextCheck,
        digest: &mut digest::Context,
        encryptor: &mut Encryptor,
        writer: &mut dyn ObjectWriter,
    ) -> Result<(), FileError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if kind == Some(ContentType::Text) && !text.push(bytes) {
            return Err(FileError::TypeNotAllowed(None));
        }
        digest.update(bytes);
        let out = encryptor.push(bytes).map_err(FileError::Encrypt)?;
        if !out.is_empty() {
            writer.write(&out).await?;
        }
        Ok(())
    }

    /// The import key of a file with this content for this patient (a keyed hash: the table
    /// shows no digest of any document).
    pub async fn import_key(&self, patient: Uuid, sha256: &[u8; 32]) -> Result<Vec<u8>, FileError> {
        let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
        let index = self
            .keyring
            .blind_index(&record::IMPORT_KEY, &format!("{patient}:{hex}"))
            .await?
            .ok_or(CryptoError::InvalidPlaintext)?;
        Ok(index.value)
    }

    /// The file stored under an import key, if any.
    pub async fn imported(&self, import_key: &[u8]) -> Result<Option<Uuid>, FileError> {
        Ok(record::by_import_key(&self.db, import_key).await?)
    }

    /// Reads a stored file back whole, verifying every segment: its size and SHA-256.
    pub async fn read_back(&self, id: Uuid) -> Result<(u64, [u8; 32]), FileError> {
        let row = self.find(id).await?.ok_or(FileError::ObjectMissing)?;
        self.open(&row).await?.verify().await
    }

    /// A live file's row, or `None` (also for a deleted file).
    pub async fn find(&self, id: Uuid) -> Result<Option<StoredFile>, FileError> {
        Ok(record::get(&self.db, id).await?)
    }

    /// The live files of a patient, names and digests opened.
    pub async fn list(&self, patient: Uuid) -> Result<Vec<FileInfo>, FileError> {
        let mut files = Vec::new();
        for row in record::for_patient(&self.db, patient).await? {
            files.push(self.info(&row).await?);
        }
        Ok(files)
    }

    /// Opens a row's sealed columns (not the object).
    pub async fn info(&self, row: &StoredFile) -> Result<FileInfo, FileError> {
        let name = match &row.name {
            Some(name) => Some(self.keyring.open(&location(row.id, "name"), name).await?),
            None => None,
        };
        let digest = self
            .keyring
            .decrypt(&location(row.id, "sha256"), &row.sha256)
            .await?;
        let sha256: [u8; 32] = digest
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::InvalidPlaintext)?;
        Ok(FileInfo {
            id: row.id,
            patient_id: row.patient_id,
            uploaded_by: row.uploaded_by,
            category: row.category,
            content_type: row.content_type,
            size: row.size,
            sha256,
            name,
            created_at: row.created_at,
        })
    }

    /// Starts reading a file: unwraps its data key and opens its object. Nothing is released
    /// until it authenticates.
    pub async fn open(&self, row: &StoredFile) -> Result<Download, FileError> {
        let key = self
            .keyring
            .decrypt(&location(row.id, "data_key"), &row.data_key)
            .await?;
        let key: &[u8; 32] = key
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::MalformedKey)?;
        let decryptor = Decryptor::new(key, context(row.id, row.patient_id));
        let reader = self.store.open(&row.object_key).await?;
        Ok(Download {
            reader,
            decryptor: Some(decryptor),
        })
    }

    /// Removes a file that was never handed to anyone (an upload voided after it was stored):
    /// the row, then the object.
    pub async fn discard(&self, id: Uuid) -> Result<(), FileError> {
        if let Some(object_key) = record::discard(&self.db, id).await? {
            self.store.delete(&object_key).await?;
        }
        Ok(())
    }

    /// Soft-deletes a live file; its object and key stay until the retention period ends.
    pub async fn delete(&self, id: Uuid, by: Uuid, now: DateTime<Utc>) -> Result<bool, FileError> {
        let purge_after = now + chrono::Duration::days(i64::from(self.settings.retention_days));
        Ok(record::soft_delete(&self.db, id, by, now, purge_after).await?)
    }

    /// Removes deleted files whose retention has ended: the object first, then the row (a
    /// crash in between leaves a row whose object is gone, which the next run removes).
    pub async fn purge(&self, now: DateTime<Utc>) -> Result<u64, FileError> {
        let mut purged = 0;
        loop {
            let due = record::due_for_purge(&self.db, now, 100).await?;
            if due.is_empty() {
                return Ok(purged);
            }
            for (id, object_key) in due {
                match self.store.delete(&object_key).await {
                    Ok(()) | Err(ObjectStoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
                record::remove(&self.db, id).await?;
                purged += 1;
            }
        }
    }
}

/// A file being read: pull plaintext with [`Download::next`] until `None`. Each piece has been
/// authenticated; an error ends the file (tampered, truncated or reordered bytes).
pub struct Download {
    reader: Box<dyn ObjectReader>,
    decryptor: Option<Decryptor>,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download").finish_non_exhaustive()
    }
}

impl Download {
    /// The next verified plaintext (possibly empty only at the end), or `None` when done.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, FileError>> {
        loop {
            let decryptor = self.decryptor.as_mut()?;
            match self.reader.next_chunk().await {
                Err(e) => {
                    self.decryptor = None;
                    return Some(Err(e.into()));
                }
                Ok(Some(chunk)) => match decryptor.push(&chunk) {
                    Ok(plain) if plain.is_empty() => continue,
                    Ok(plain) => return Some(Ok(plain)),
                    Err(e) => {
                        self.decryptor = None;
                        return Some(Err(FileError::Integrity(e)));
                    }
                },
                Ok(None) => {
                    let decryptor = self.decryptor.take()?;
                    return Some(decryptor.finish().map_err(FileError::Integrity));
                }
            }
        }
    }

    /// Reads and verifies the whole file, returning its size and SHA-256 (for checks, not for
    /// serving: it holds nothing but the digest).
    pub async fn verify(mut self) -> Result<(u64, [u8; 32]), FileError> {
        let mut size = 0u64;
        let mut digest = digest::Context::new(&digest::SHA256);
        while let Some(piece) = self.next().await {
            let piece = piece?;
            size += piece.len() as u64;
            digest.update(&piece);
        }
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.finish().as_ref());
        Ok((size, sha256))
    }
}

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
use clinicd_audit::{AuditError, Note, Recorder};
use clinicd_crypto::{CryptoError, Keyring, Owner, SubjectId};
use futures_util::{Stream, StreamExt};
use sqlx::PgPool;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::format::{Context, DEFAULT_SEGMENT_SIZE, Decryptor, Encryptor, FormatError};
use crate::record::{self, Category, StoredFile, StoredLabel, location};
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
    /// The file's patient is under this legal hold: nothing of theirs may be deleted.
    #[error("the patient is under legal hold {0}")]
    Held(Uuid),
    #[error(transparent)]
    Store(ObjectStoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("encryption failed: {0}")]
    Encrypt(FormatError),
    /// The audit trail could not take the upload's event: nothing was stored.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl From<ObjectStoreError> for FileError {
    fn from(e: ObjectStoreError) -> Self {
        match e {
            ObjectStoreError::NotFound => Self::ObjectMissing,
            other => Self::Store(other),
        }
    }
}

/// What a file's import key is the keyed hash of: the patient and the content.
fn import_source(patient: Uuid, sha256: &[u8; 32]) -> String {
    format!("{patient}:{}", hex::encode(sha256))
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
    pub label: StoredLabel,
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
    pub label: StoredLabel,
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

/// Plaintext handed to the blocking pool at a time: large enough that the hand-off costs
/// little, small enough that a transfer holds a few MiB at most (one batch arriving, one in
/// the pool, one leaving).
const BATCH: usize = 512 * 1024;

/// An upload's running state: the encryptor, the digest and, for text, the text check.
struct Sealing {
    encryptor: Encryptor,
    digest: digest::Context,
    text: Option<TextCheck>,
}

impl Sealing {
    fn absorb(&mut self, batch: &[u8]) -> Result<Vec<u8>, FileError> {
        if let Some(text) = &mut self.text
            && !text.push(batch)
        {
            return Err(FileError::TypeNotAllowed(None));
        }
        self.digest.update(batch);
        self.encryptor.push(batch).map_err(FileError::Encrypt)
    }
}

type Job<T> = tokio::task::JoinHandle<(T, Result<Vec<u8>, FileError>)>;

/// One batch at a time in the blocking pool, its output written before the next is
/// submitted; the state travels with the job and comes back with its output.
struct Pipeline {
    idle: Option<Sealing>,
    running: Option<Job<Sealing>>,
}

impl Pipeline {
    fn new(sealing: Sealing) -> Self {
        Self {
            idle: Some(sealing),
            running: None,
        }
    }

    /// The state, when no job holds it (before the first batch is submitted).
    fn state_mut(&mut self) -> Option<&mut Sealing> {
        self.idle.as_mut()
    }

    /// Starts on `batch` as soon as the previous batch is done, then writes the previous
    /// batch's output while this one is hashed and encrypted.
    async fn submit(
        &mut self,
        batch: Vec<u8>,
        writer: &mut dyn ObjectWriter,
    ) -> Result<(), FileError> {
        let (mut sealing, out) = self.settle().await?;
        self.running = Some(tokio::task::spawn_blocking(move || {
            let out = sealing.absorb(&batch);
            (sealing, out)
        }));
        write(writer, &out).await
    }

    /// Waits for the running job: the state, and the job's output still to be written.
    async fn settle(&mut self) -> Result<(Sealing, Vec<u8>), FileError> {
        if let Some(job) = self.running.take() {
            let (sealing, out) = job
                .await
                .map_err(|_| FileError::Encrypt(FormatError::Crypto))?;
            return Ok((sealing, out?));
        }
        let sealing = self
            .idle
            .take()
            .ok_or(FileError::Encrypt(FormatError::Crypto))?;
        Ok((sealing, Vec::new()))
    }

    async fn finish(mut self, writer: &mut dyn ObjectWriter) -> Result<Sealing, FileError> {
        let (sealing, out) = self.settle().await?;
        write(writer, &out).await?;
        Ok(sealing)
    }
}

/// An upload whose bytes are all encrypted into an object that is not yet visible. Nothing
/// exists until [`Staged::commit`]; dropping it (or [`Staged::abort`]) discards the object.
/// This lets the API check the rest of a form before anything is stored.
pub struct Staged {
    files: Files,
    id: Uuid,
    new: NewFile,
    sealed: Sealed,
    wrapped: Vec<u8>,
    writer: Box<dyn ObjectWriter>,
}

impl fmt::Debug for Staged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staged")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How a staged file is recorded: with the audit event of its upload, in the row's
/// transaction, so the file and its event exist together or not at all.
#[derive(Debug)]
pub struct Audited {
    pub recorder: Recorder,
    /// The answer the caller will give (201 for an upload; `None` for a command).
    pub status: Option<u16>,
    pub note: Note,
}

impl Staged {
    /// What the file will be once committed (its id, size, type and digest are known now).
    pub fn info(&self) -> FileInfo {
        FileInfo {
            id: self.id,
            patient_id: self.new.patient_id,
            uploaded_by: self.new.uploaded_by,
            category: self.new.category,
            content_type: self.sealed.content_type,
            size: self.sealed.size,
            sha256: self.sealed.sha256,
            name: self.new.name.clone(),
            created_at: self.new.now,
            label: self.new.label.clone(),
        }
    }

    /// Makes the object visible and writes its row with its audit event. Nothing is left
    /// behind on failure: the object is deleted again if the row and event cannot be written.
    pub async fn commit(self, audit: Audited) -> Result<FileInfo, FileError> {
        self.finish(None, audit)
            .await?
            .ok_or(FileError::Database(sqlx::Error::RowNotFound))
    }

    /// [`Self::commit`] for `clinicd files import`: `None` if a file with this `import_key` was
    /// stored meanwhile (this object is then removed, and no event written).
    pub async fn commit_import(
        self,
        import_key: &[u8],
        audit: Audited,
    ) -> Result<Option<FileInfo>, FileError> {
        self.finish(Some(import_key.to_vec()), audit).await
    }

    /// Completes the object and writes its row and event (`None` if `import_key` is taken).
    ///
    /// Both steps run in a task of their own, so a caller cancelled meanwhile (a client gone
    /// after its last byte, whose handler the server drops) cannot leave an object without a
    /// row. If the caller is gone by the time the row is written, nobody learns of the file:
    /// the task removes it again (its event stays, naming a file that was then discarded).
    async fn finish(
        self,
        import_key: Option<Vec<u8>>,
        audit: Audited,
    ) -> Result<Option<FileInfo>, FileError> {
        let files = self.files.clone();
        let (reply, outcome) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let recorded = files.record(self, import_key, audit).await;
            if let Err(Ok(Some(unheard))) = reply.send(recorded) {
                tracing::warn!(file = %unheard.id, "upload cancelled while being recorded; removed");
                if let Err(e) = files.discard(unheard.id).await {
                    tracing::error!(file = %unheard.id, error = %e, "could not remove a cancelled upload");
                }
            }
        });
        outcome.await.map_err(|_| {
            FileError::Store(ObjectStoreError::Remote("the recording task failed".into()))
        })?
    }

    /// Discards the object now (rather than when dropped, which for S3 aborts in the
    /// background).
    pub async fn abort(self) {
        abort(self.writer).await;
    }
}

async fn abort(writer: Box<dyn ObjectWriter>) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(error = %e, "could not abort a failed upload");
    }
}

async fn write(writer: &mut dyn ObjectWriter, bytes: &[u8]) -> Result<(), FileError> {
    if !bytes.is_empty() {
        writer.write(bytes).await?;
    }
    Ok(())
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

    /// Encrypts `body` into a new object that stays invisible until [`Staged::commit`]; on
    /// failure the object is aborted.
    pub async fn stage<S, B, E>(&self, new: NewFile, mut body: S) -> Result<Staged, FileError>
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

        let mut writer = self.store.create(&object_key(id)).await?;
        match self.encrypt_into(encryptor, &mut body, &mut *writer).await {
            Ok(sealed) => Ok(Staged {
                files: self.clone(),
                id,
                new,
                sealed,
                wrapped,
                writer,
            }),
            Err(e) => {
                abort(writer).await;
                Err(e)
            }
        }
    }

    /// Completes a staged object and writes its row with its audit event; `None` if
    /// `import_key` is taken.
    async fn record(
        &self,
        staged: Staged,
        import_key: Option<Vec<u8>>,
        audit: Audited,
    ) -> Result<Option<FileInfo>, FileError> {
        let info = staged.info();
        let Staged {
            id,
            new,
            sealed,
            wrapped,
            writer,
            ..
        } = staged;
        writer.complete().await?;
        let object_key = object_key(id);
        let owner = Owner::Subject(SubjectId(new.patient_id));
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
                name,
                data_key: wrapped,
                object_key: object_key.clone(),
                created_at: new.now,
                label: new.label.clone(),
            };
            let mut tx = self.db.begin().await?;
            if !record::insert(&mut *tx, &file, import_key.as_deref()).await? {
                return Ok(false);
            }
            audit.recorder.commit(tx, audit.status, audit.note).await?;
            Ok::<_, FileError>(true)
        }
        .await;
        match row {
            Ok(true) => Ok(Some(info)),
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
    /// into the writer. The hashing and encryption of one batch run on the blocking pool
    /// while the next batch arrives, so the two cores share the work with TLS and parsing.
    async fn encrypt_into<S, B, E>(
        &self,
        encryptor: Encryptor,
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
        let mut kind: Option<ContentType> = None;
        let mut pipeline = Pipeline::new(Sealing {
            encryptor,
            digest: digest::Context::new(&digest::SHA256),
            text: None,
        });
        let mut batch: Vec<u8> = Vec::with_capacity(BATCH);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FileError::Incomplete(e.to_string()))?;
            let bytes = chunk.as_ref();
            size += bytes.len() as u64;
            if size > limit {
                return Err(FileError::TooLarge { limit });
            }
            batch.extend_from_slice(bytes);
            if kind.is_none() && batch.len() >= SNIFF_LEN {
                kind = Some(self.decide(&batch, pipeline.state_mut())?);
            }
            if batch.len() >= BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                pipeline.submit(full, writer).await?;
            }
        }
        if kind.is_none() {
            // A file shorter than the longest magic number.
            kind = Some(self.decide(&batch, pipeline.state_mut())?);
        }
        if !batch.is_empty() {
            pipeline.submit(batch, writer).await?;
        }
        let sealing = pipeline.finish(writer).await?;
        if sealing.text.is_some_and(|text| !text.finish()) {
            return Err(FileError::TypeNotAllowed(None));
        }
        writer
            .write(&sealing.encryptor.finish().map_err(FileError::Encrypt)?)
            .await?;
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(sealing.digest.finish().as_ref());
        Ok(Sealed {
            size,
            sha256,
            content_type: kind.unwrap_or(ContentType::Text),
        })
    }

    /// The type of a file from its first bytes, if allowed; plain text is then checked
    /// throughout.
    fn decide(&self, head: &[u8], sealing: Option<&mut Sealing>) -> Result<ContentType, FileError> {
        let (start, _) = head.split_at(head.len().min(SNIFF_LEN));
        let kind = sniff::by_magic(start).unwrap_or(ContentType::Text);
        if !self.settings.allowed.contains(&kind) {
            return Err(FileError::TypeNotAllowed(Some(kind)));
        }
        if kind == ContentType::Text
            && let Some(sealing) = sealing
        {
            sealing.text = Some(TextCheck::default());
        }
        Ok(kind)
    }

    /// The import key of a file with this content for this patient (a keyed hash: the table
    /// shows no digest of any document).
    pub async fn import_key(&self, patient: Uuid, sha256: &[u8; 32]) -> Result<Vec<u8>, FileError> {
        let index = self
            .keyring
            .blind_index(&record::IMPORT_KEY, &import_source(patient, sha256))
            .await?
            .ok_or(CryptoError::InvalidPlaintext)?;
        Ok(index.value)
    }

    /// The file already imported for this patient with this content, if any: looked up under
    /// every live blind-index key, so a re-run after a key rotation still recognises what an
    /// earlier run stored.
    pub async fn imported(
        &self,
        patient: Uuid,
        sha256: &[u8; 32],
    ) -> Result<Option<Uuid>, FileError> {
        let keys: Vec<Vec<u8>> = self
            .keyring
            .blind_index_candidates(&record::IMPORT_KEY, &import_source(patient, sha256))
            .await?
            .into_iter()
            .map(|index| index.value)
            .collect();
        Ok(record::by_import_key(&self.db, &keys).await?)
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
            label: row.label.clone(),
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
        Ok(Download::new(reader, decryptor))
    }

    /// Removes a file that was never handed to anyone (an upload cancelled while it was
    /// recorded): the row, then the object.
    async fn discard(&self, id: Uuid) -> Result<(), FileError> {
        if let Some(object_key) = record::discard(&self.db, id).await? {
            self.store.delete(&object_key).await?;
        }
        Ok(())
    }

    /// Soft-deletes a live file; its object and key stay until the retention period ends.
    pub async fn delete(
        &self,
        tx: &mut sqlx::PgConnection,
        id: Uuid,
        by: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, FileError> {
        if let Some(hold) = record::hold_on(&mut *tx, id).await? {
            return Err(FileError::Held(hold));
        }
        let purge_after = now + chrono::Duration::days(i64::from(self.settings.retention_days));
        Ok(record::soft_delete(tx, id, by, now, purge_after).await?)
    }

    /// Changes a live file's label, in the caller's transaction (its audit event commits with
    /// it). `false` if there is no such live file.
    pub async fn relabel(
        &self,
        tx: &mut sqlx::PgConnection,
        id: Uuid,
        label: &StoredLabel,
    ) -> Result<bool, FileError> {
        Ok(record::relabel(tx, id, label).await?)
    }

    /// Raises every file of `patient` to at least `floor`, in the caller's transaction.
    pub async fn raise_labels(
        &self,
        tx: &mut sqlx::PgConnection,
        patient: Uuid,
        floor: &StoredLabel,
    ) -> Result<u64, FileError> {
        Ok(record::raise_labels(tx, patient, floor).await?)
    }

    /// Removes deleted files whose retention has ended: the object first, then the row (a
    /// crash in between leaves a row whose object is gone, which the next run removes).
    /// Each file's row goes with its audit event, `audit(file, patient)`, in one transaction.
    pub async fn purge(
        &self,
        now: DateTime<Utc>,
        audit: &(dyn Fn(Uuid, Uuid) -> Audited + Sync),
    ) -> Result<u64, FileError> {
        let mut purged = 0;
        loop {
            let due = record::due_for_purge(&self.db, now, 100).await?;
            if due.is_empty() {
                return Ok(purged);
            }
            let mut progressed = false;
            for (id, patient, object_key) in due {
                // The hold is asked in the transaction that removes the row, after which the
                // object goes: a hold placed meanwhile waits for the lifecycle lock, and a held
                // file is left exactly as it is (the next run asks again).
                let mut tx = self.db.begin().await?;
                if let Some(hold) = record::hold_on(&mut *tx, id).await? {
                    tracing::info!(file_id = %id, hold_id = %hold, "purge skipped: legal hold");
                    continue;
                }
                match self.store.delete(&object_key).await {
                    Ok(()) | Err(ObjectStoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
                progressed = true;
                record::remove(&mut *tx, id).await?;
                let Audited {
                    recorder,
                    status,
                    note,
                } = audit(id, patient);
                recorder.commit(tx, status, note).await?;
                purged += 1;
            }
            if !progressed {
                return Ok(purged);
            }
        }
    }

    /// Deletes every file row of a patient being erased, inside the erasing transaction;
    /// returns the object keys, for [`FileService::delete_objects`].
    pub async fn erase_patient_rows(
        &self,
        tx: &mut sqlx::PgConnection,
        patient: Uuid,
    ) -> Result<Vec<String>, FileError> {
        Ok(record::erase_patient(tx, patient).await?)
    }

    /// Deletes objects from the store (one already gone counts as deleted); returns how many.
    pub async fn delete_objects(&self, keys: &[String]) -> Result<usize, FileError> {
        for key in keys {
            match self.store.delete(key).await {
                Ok(()) | Err(ObjectStoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(keys.len())
    }
}

/// A file being read: pull plaintext with [`Download::next`] until `None`. Each piece has been
/// authenticated; an error ends the file (tampered, truncated or reordered bytes). One batch
/// is decrypted on the blocking pool while the previous one is sent and the next one read.
pub struct Download {
    reader: Box<dyn ObjectReader>,
    decryptor: Option<Decryptor>,
    running: Option<Job<Decryptor>>,
    /// The next ciphertext batch, read while a job runs (`Ok(None)`: the object ended).
    prefetched: Option<Result<Option<Vec<u8>>, FileError>>,
    /// Results to hand out before anything else (the final piece, or an error).
    ready: Option<Result<Vec<u8>, FileError>>,
    done: bool,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download").finish_non_exhaustive()
    }
}

impl Download {
    fn new(reader: Box<dyn ObjectReader>, decryptor: Decryptor) -> Self {
        Self {
            reader,
            decryptor: Some(decryptor),
            running: None,
            prefetched: None,
            ready: None,
            done: false,
        }
    }

    /// The next verified plaintext (possibly empty only at the end), or `None` when done.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, FileError>> {
        loop {
            if let Some(result) = self.ready.take() {
                return Some(result);
            }
            let Some(job) = self.running.take() else {
                if self.done {
                    return None;
                }
                let batch = match self.prefetched.take() {
                    Some(batch) => batch,
                    None => self.read_batch().await,
                };
                self.launch(batch);
                continue;
            };
            if self.prefetched.is_none() {
                self.prefetched = Some(self.read_batch().await);
            }
            let Ok((decryptor, result)) = job.await else {
                self.done = true;
                return Some(Err(FileError::Encrypt(FormatError::Crypto)));
            };
            self.decryptor = Some(decryptor);
            match result {
                Err(e) => {
                    self.done = true;
                    self.prefetched = None;
                    return Some(Err(e));
                }
                Ok(plain) => {
                    // Start on the next batch now, so it decrypts while this one is sent.
                    if let Some(batch) = self.prefetched.take() {
                        self.launch(batch);
                    }
                    if !plain.is_empty() {
                        return Some(Ok(plain));
                    }
                }
            }
        }
    }

    /// Decrypts a batch in the blocking pool, or at the end of the object opens the final
    /// segment.
    fn launch(&mut self, batch: Result<Option<Vec<u8>>, FileError>) {
        let Some(mut decryptor) = self.decryptor.take() else {
            self.done = true;
            return;
        };
        match batch {
            Err(e) => {
                self.done = true;
                self.ready = Some(Err(e));
            }
            Ok(None) => {
                self.done = true;
                self.ready = Some(decryptor.finish().map_err(FileError::Integrity));
            }
            Ok(Some(batch)) => {
                self.running = Some(tokio::task::spawn_blocking(move || {
                    let out = decryptor.push(&batch).map_err(FileError::Integrity);
                    (decryptor, out)
                }));
            }
        }
    }

    /// Up to about a batch of ciphertext; `Ok(None)` at the end of the object.
    async fn read_batch(&mut self) -> Result<Option<Vec<u8>>, FileError> {
        Ok(self.reader.next_block(BATCH).await?)
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

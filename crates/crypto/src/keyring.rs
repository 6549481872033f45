//! The key hierarchy at run time: unwraps branch keys through the provider once, unwraps
//! subject keys locally, derives column keys, and caches all of them so that the hot path
//! (encrypting or decrypting a field whose keys are cached) makes no provider call and no
//! database query.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::blind_index::{self, BlindIndex, BlindIndexSpec};
use crate::cache::TtlCache;
use crate::context::EncryptionContext;
use crate::error::CryptoError;
use crate::field::{self, FieldLocation};
use crate::keys::{KeyRef, Purpose, SecretKey, SubjectId};
use crate::plaintext::Plaintext;
use crate::provider::KeyProvider;
use crate::store::{self, BranchRow, SubjectRow};

/// Serialises key administration (bootstrap, rotation) across instances.
const KEY_ADMIN_LOCK: i64 = 0x636c_696e_6b65_7973; // "clinkeys"
const REWRAP_BATCH: i64 = 500;

/// Who a field belongs to: a patient (their subject key), or no patient (a purpose's branch key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Subject(SubjectId),
    Purpose(Purpose),
}

#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub capacity: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            capacity: 10_000,
        }
    }
}

type ColumnKeyId = (KeyRef, &'static str, &'static str);

/// Column keys cached per cached subject key: a patient has ten encrypted columns, a note one.
const COLUMN_KEYS_PER_SUBJECT: usize = 8;

pub struct Keyring {
    db: PgPool,
    provider: Arc<dyn KeyProvider>,
    rng: SystemRandom,
    branch_keys: TtlCache<(Purpose, u32), SecretKey>,
    active_branch: TtlCache<Purpose, u32>,
    subject_keys: TtlCache<(SubjectId, u32), SecretKey>,
    active_subject: TtlCache<SubjectId, u32>,
    column_keys: TtlCache<ColumnKeyId, LessSafeKey>,
    index_keys: TtlCache<(u32, &'static str, &'static str), hmac::Key>,
    /// The blind-index key versions last read on this instance: a hint that a search checks
    /// in its own statement (see `reindex.rs`), never trusted alone.
    pub(crate) index_versions_seen: std::sync::RwLock<Option<Vec<u32>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// The channel on which a destroyed subject key is announced to every instance.
pub const DESTROYED_CHANNEL: &str = "clinicd_subject_key_destroyed";

/// Connections of the keyring's own pool (see [`Keyring::new`]); one of them follows
/// key destruction ([`Keyring::follow_destroyed_keys`]) on a server.
const KEY_POOL_CONNECTIONS: u32 = 5;

impl Keyring {
    /// A keyring over the database of `db`. Key lookups get a small pool of their own: they
    /// happen inside requests that already hold a connection for their transaction (a change
    /// seals its audit values, or a note, under a key), and a shared pool emptied by such
    /// requests, each waiting for a second connection, would stall them all.
    pub fn new(db: PgPool, provider: Arc<dyn KeyProvider>, cache: CacheSettings) -> Self {
        let db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(KEY_POOL_CONNECTIONS)
            .acquire_timeout(db.options().get_acquire_timeout())
            .connect_lazy_with((*db.connect_options()).clone());
        Self {
            db,
            provider,
            rng: SystemRandom::new(),
            branch_keys: TtlCache::new(cache.ttl, cache.capacity),
            active_branch: TtlCache::new(cache.ttl, cache.capacity),
            subject_keys: TtlCache::new(cache.ttl, cache.capacity),
            active_subject: TtlCache::new(cache.ttl, cache.capacity),
            // A subject's record spans several columns, each with its own key: with one entry
            // per subject this cache held the columns of a fifth of the subjects, so reading
            // across more patients than that derived nearly every column key again.
            column_keys: TtlCache::new(
                cache.ttl,
                cache.capacity.saturating_mul(COLUMN_KEYS_PER_SUBJECT),
            ),
            index_keys: TtlCache::new(cache.ttl, cache.capacity),
            index_versions_seen: std::sync::RwLock::new(None),
        }
    }

    /// Makes sure every purpose has an active branch key, generating missing ones through the
    /// provider. Safe to run from several instances at once.
    pub async fn bootstrap(&self) -> Result<(), CryptoError> {
        let mut conn = self.db.acquire().await?;
        lock(&mut conn).await?;
        let result = self.bootstrap_locked(&mut conn).await;
        unlock(&mut conn).await?;
        result
    }

    async fn bootstrap_locked(&self, conn: &mut PgConnection) -> Result<(), CryptoError> {
        for purpose in Purpose::ALL {
            if store::active_branch(&mut *conn, purpose).await?.is_none() {
                self.create_branch(conn, purpose).await?;
            }
        }
        Ok(())
    }

    /// A new active branch key for `purpose`; the previous one, if any, becomes retired.
    async fn create_branch(
        &self,
        conn: &mut PgConnection,
        purpose: Purpose,
    ) -> Result<BranchRow, CryptoError> {
        let id = Uuid::now_v7();
        let version = store::next_branch_version(conn, purpose).await?;
        let kek_version = store::current_kek_version(&mut *conn).await?;
        let generated = self
            .provider
            .generate_data_key(&branch_context(purpose, id, version), kek_version)
            .await?;
        let row = BranchRow {
            id,
            purpose,
            version,
            wrapped: Some(generated.wrapped.bytes),
            kek_id: generated.wrapped.kek_id,
            kek_version,
            status: "active".into(),
        };
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        store::retire_active_branch(&mut tx, purpose).await?;
        store::insert_branch(&mut tx, &row).await?;
        tx.commit().await?;
        self.branch_keys
            .insert((purpose, version), Arc::new(generated.plaintext));
        self.active_branch.insert(purpose, Arc::new(version));
        tracing::info!(purpose = %purpose, version, "created branch key");
        Ok(row)
    }

    /// A branch key in clear: from the cache, or unwrapped once through the provider.
    async fn branch_key(
        &self,
        purpose: Purpose,
        version: u32,
    ) -> Result<Arc<SecretKey>, CryptoError> {
        if let Some(key) = self.branch_keys.get(&(purpose, version)) {
            return Ok(key);
        }
        let row = store::branch_by_version(&self.db, purpose, version)
            .await?
            .ok_or_else(|| CryptoError::KeyNotFound(format!("{purpose} branch key v{version}")))?;
        let wrapped = row.wrapped.ok_or(CryptoError::KeyDestroyed)?;
        let key = Arc::new(
            self.provider
                .decrypt(&wrapped, &branch_context(purpose, row.id, version))
                .await?,
        );
        self.branch_keys
            .insert((purpose, version), Arc::clone(&key));
        Ok(key)
    }

    async fn active_branch_version(&self, purpose: Purpose) -> Result<u32, CryptoError> {
        if let Some(version) = self.active_branch.get_with(&purpose, |version| **version) {
            return Ok(version);
        }
        let row = store::active_branch(&self.db, purpose)
            .await?
            .ok_or_else(|| {
                CryptoError::KeyNotFound(format!("active {purpose} branch key (run bootstrap)"))
            })?;
        self.active_branch.insert(purpose, Arc::new(row.version));
        Ok(row.version)
    }

    /// A subject key in clear, by version (for decryption).
    async fn subject_key(
        &self,
        subject: SubjectId,
        version: u32,
    ) -> Result<Arc<SecretKey>, CryptoError> {
        if let Some(key) = self.subject_keys.get(&(subject, version)) {
            return Ok(key);
        }
        let row = store::subject_key(&self.db, subject, version)
            .await?
            .ok_or_else(|| CryptoError::KeyNotFound(format!("subject key v{version}")))?;
        self.unwrap_subject(&row).await
    }

    async fn unwrap_subject(&self, row: &SubjectRow) -> Result<Arc<SecretKey>, CryptoError> {
        let wrapped = row.wrapped.as_deref().ok_or(CryptoError::KeyDestroyed)?;
        let branch = self.branch_key(Purpose::Field, row.branch_version).await?;
        let key = Arc::new(unwrap_local(
            &branch,
            wrapped,
            &subject_aad(row.subject, row.version, row.branch_key_id),
        )?);
        self.subject_keys
            .insert((row.subject, row.version), Arc::clone(&key));
        Ok(key)
    }

    /// The version of the subject's active key, creating the subject's first key if needed.
    async fn active_subject_version(&self, subject: SubjectId) -> Result<u32, CryptoError> {
        if let Some(version) = self.active_subject.get_with(&subject, |version| **version) {
            return Ok(version);
        }
        for _ in 0..2 {
            if let Some(row) = store::active_subject_key(&self.db, subject).await? {
                self.unwrap_subject(&row).await?;
                self.active_subject.insert(subject, Arc::new(row.version));
                return Ok(row.version);
            }
            if store::subject_has_destroyed_key(&self.db, subject).await? {
                return Err(CryptoError::KeyDestroyed);
            }
            self.create_subject_key(subject).await?;
        }
        Err(CryptoError::KeyNotFound("subject key".into()))
    }

    async fn create_subject_key(&self, subject: SubjectId) -> Result<(), CryptoError> {
        // Read the active branch from the database, not the cache: right after a rotation a
        // new subject key must go under the new branch key.
        let branch = store::active_branch(&self.db, Purpose::Field)
            .await?
            .ok_or_else(|| {
                CryptoError::KeyNotFound("active field branch key (run bootstrap)".into())
            })?;
        let branch_key = self.branch_key(Purpose::Field, branch.version).await?;
        let key = SecretKey::random(&self.rng)?;
        let wrapped = wrap_local(
            &branch_key,
            &key,
            &subject_aad(subject, 1, branch.id),
            &self.rng,
        )?;
        store::insert_subject_key(&self.db, subject, &wrapped, branch.id).await?;
        Ok(())
    }

    async fn root_key(&self, key: KeyRef) -> Result<Arc<SecretKey>, CryptoError> {
        match key {
            KeyRef::Subject(subject, version) => self.subject_key(subject, version).await,
            KeyRef::Purpose(purpose, version) => self.branch_key(purpose, version).await,
        }
    }

    async fn column_key(
        &self,
        key: KeyRef,
        table: &'static str,
        column: &'static str,
    ) -> Result<Arc<LessSafeKey>, CryptoError> {
        let id = (key, table, column);
        if let Some(cipher) = self.column_keys.get(&id) {
            return Ok(cipher);
        }
        let root = self.root_key(key).await?;
        let cipher = Arc::new(field::derive_column_key(&root, table, column)?);
        self.column_keys.insert(id, Arc::clone(&cipher));
        Ok(cipher)
    }

    /// Encrypts a field value for its location under its owner's current key.
    pub async fn encrypt(
        &self,
        owner: Owner,
        location: &FieldLocation<'static>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if let Some(sealed) = self.seal_cached(owner, location, plaintext) {
            return sealed;
        }
        // Boxed for the reason given in `decrypt`.
        Box::pin(self.encrypt_uncached(owner, location, plaintext)).await
    }

    /// Seals under the owner's active key if both its version and its column key are cached.
    fn seal_cached(
        &self,
        owner: Owner,
        location: &FieldLocation<'static>,
        plaintext: &[u8],
    ) -> Option<Result<Vec<u8>, CryptoError>> {
        let key = match owner {
            Owner::Subject(subject) => self
                .active_subject
                .get_with(&subject, |version| KeyRef::Subject(subject, **version)),
            Owner::Purpose(purpose) => self
                .active_branch
                .get_with(&purpose, |version| KeyRef::Purpose(purpose, **version)),
        }?;
        let id = (key, location.table, location.column);
        self.column_keys.get_with(&id, |cipher| {
            field::seal(cipher, key, location, plaintext, &self.rng)
        })
    }

    async fn encrypt_uncached(
        &self,
        owner: Owner,
        location: &FieldLocation<'static>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let key = match owner {
            Owner::Subject(subject) => {
                KeyRef::Subject(subject, self.active_subject_version(subject).await?)
            }
            Owner::Purpose(purpose) => {
                KeyRef::Purpose(purpose, self.active_branch_version(purpose).await?)
            }
        };
        // `column_key` looks in the cache first: the version may have been the missing part.
        let cipher = self
            .column_key(key, location.table, location.column)
            .await?;
        field::seal(&cipher, key, location, plaintext, &self.rng)
    }

    /// Decrypts a field value read from `location`. Fails with [`CryptoError::Integrity`] if it
    /// was tampered with or belongs elsewhere, [`CryptoError::KeyDestroyed`] if shredded.
    pub async fn decrypt(
        &self,
        location: &FieldLocation<'static>,
        ciphertext: &[u8],
    ) -> Result<Plaintext, CryptoError> {
        let parsed = field::parse(ciphertext)?;
        // The hot path: the cached column key, lent under the cache's read lock.
        let id = (parsed.key, location.table, location.column);
        if let Some(opened) = self.column_keys.get_with(&id, |cipher| {
            field::open(cipher, parsed, location, ciphertext)
        }) {
            return opened;
        }
        // A miss reads and derives keys: its future is boxed, so that every call's future stays
        // the size of this fast path (about a tenth) instead of being set up and moved at the
        // size of the database and provider calls it never makes.
        Box::pin(self.decrypt_uncached(parsed, location, ciphertext)).await
    }

    async fn decrypt_uncached(
        &self,
        parsed: field::Parsed,
        location: &FieldLocation<'static>,
        ciphertext: &[u8],
    ) -> Result<Plaintext, CryptoError> {
        let cipher = self
            .column_key(parsed.key, location.table, location.column)
            .await?;
        field::open(&cipher, parsed, location, ciphertext)
    }

    /// The blind index of `value` for `spec` under the active blind-index key, or `None` if the
    /// value has no normal form (it cannot match anything).
    pub async fn blind_index(
        &self,
        spec: &BlindIndexSpec,
        value: &str,
    ) -> Result<Option<BlindIndex>, CryptoError> {
        let version = self.active_branch_version(Purpose::BlindIndex).await?;
        self.blind_index_at(spec, value, version).await
    }

    /// The blind index under a given key version (searches during an index rebuild use both).
    pub async fn blind_index_at(
        &self,
        spec: &BlindIndexSpec,
        value: &str,
        version: u32,
    ) -> Result<Option<BlindIndex>, CryptoError> {
        let Some(normalized) = blind_index::normalize(spec.normalizer, value) else {
            return Ok(None);
        };
        let normalized = Zeroizing::new(normalized);
        let id = (version, spec.table, spec.column);
        let compute = |key: &hmac::Key| -> Result<Option<BlindIndex>, CryptoError> {
            Ok(Some(BlindIndex {
                key_version: version,
                value: blind_index::compute(key, spec.bits, &normalized)?,
            }))
        };
        if let Some(index) = self.index_keys.get_with(&id, |key| compute(key)) {
            return index;
        }
        let root = self.branch_key(Purpose::BlindIndex, version).await?;
        let key = Arc::new(blind_index::derive_index_key(
            &root,
            spec.table,
            spec.column,
        ));
        self.index_keys.insert(id, Arc::clone(&key));
        compute(&key)
    }

    /// The HMAC key that authenticates the audit chain, derived from the active audit branch
    /// key, with that key's version (recorded with each chain head, so verification finds the
    /// right key after a rotation).
    pub async fn audit_chain_key(&self) -> Result<(u32, aws_lc_rs::hmac::Key), CryptoError> {
        let version = self.active_branch_version(Purpose::Audit).await?;
        Ok((version, self.audit_chain_key_at(version).await?))
    }

    pub async fn audit_chain_key_at(
        &self,
        version: u32,
    ) -> Result<aws_lc_rs::hmac::Key, CryptoError> {
        let root = self.branch_key(Purpose::Audit, version).await?;
        Ok(blind_index::derive_hmac_key(
            &root,
            b"clinicd-audit-chain-v1",
            "audit_heads",
            "mac",
        ))
    }

    /// Crypto-shredding: erases every key of `subject` inside the caller's transaction (which
    /// also clears the subject's blind indexes), so every encrypted field of theirs becomes
    /// unrecoverable. This instance forgets the keys at once; other instances within the
    /// cache time-to-live.
    pub async fn destroy_subject(
        &self,
        conn: &mut PgConnection,
        subject: SubjectId,
    ) -> Result<u64, CryptoError> {
        Ok(self.destroy_subject_versions(conn, subject).await?.len() as u64)
    }

    /// As [`Keyring::destroy_subject`], returning the versions of the keys destroyed (for a
    /// certificate of destruction).
    pub async fn destroy_subject_versions(
        &self,
        conn: &mut PgConnection,
        subject: SubjectId,
    ) -> Result<Vec<u32>, CryptoError> {
        let destroyed = store::destroy_subject_keys(&mut *conn, subject).await?;
        // Every instance drops its cached copy when this commits (see `follow_destroyed_keys`).
        sqlx::query!(
            "SELECT pg_notify($1, $2)",
            DESTROYED_CHANNEL,
            subject.0.to_string()
        )
        .execute(&mut *conn)
        .await?;
        self.forget_subject(subject);
        tracing::warn!(subject_id = %subject, keys = destroyed.len(), "subject keys destroyed");
        Ok(destroyed)
    }

    /// Follows other instances' crypto-shredding: on each notice of a destroyed subject key
    /// (sent in the transaction that destroys it, so it arrives once that commits), the cached
    /// copy is dropped at once rather than when its cache entry would have expired. If the
    /// listening connection drops, every cached subject key is dropped (a notice may have been
    /// missed) and listening resumes. Runs until the process ends.
    pub async fn follow_destroyed_keys(self: std::sync::Arc<Self>) {
        loop {
            if let Err(error) = self.listen_for_destroyed().await {
                tracing::warn!(error = %error, "lost the key-destruction channel: dropping cached subject keys");
            }
            self.subject_keys.clear();
            self.active_subject.clear();
            self.column_keys
                .remove_where(|(key, _, _)| matches!(key, KeyRef::Subject(..)));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn listen_for_destroyed(&self) -> Result<(), CryptoError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.db).await?;
        listener.ignore_pool_close_event(false);
        listener.listen(DESTROYED_CHANNEL).await?;
        loop {
            // `try_recv` reports a dropped connection instead of reconnecting silently.
            let Some(notice) = listener.try_recv().await? else {
                return Ok(());
            };
            match notice.payload().parse() {
                Ok(subject) => self.forget_subject(SubjectId(subject)),
                Err(_) => tracing::warn!("a key-destruction notice without a subject id"),
            }
        }
    }

    fn forget_subject(&self, subject: SubjectId) {
        self.subject_keys.remove_where(|(s, _)| *s == subject);
        self.active_subject.remove_where(|s| *s == subject);
        self.column_keys
            .remove_where(|(key, _, _)| matches!(key, KeyRef::Subject(s, _) if *s == subject));
    }

    /// Rewraps every branch key under the root key's current material (KMS ReEncrypt), as KEK
    /// generation `max + 1`. Touches no data and no subject key.
    pub async fn rotate_kek(&self) -> Result<KekRotation, CryptoError> {
        let mut conn = self.db.acquire().await?;
        lock(&mut conn).await?;
        let result = self.rotate_kek_locked(&mut conn).await;
        unlock(&mut conn).await?;
        result
    }

    async fn rotate_kek_locked(&self, conn: &mut PgConnection) -> Result<KekRotation, CryptoError> {
        let kek_version = store::current_kek_version(&mut *conn).await? + 1;
        let mut rewrapped = 0;
        for row in store::all_branches(&mut *conn).await? {
            let Some(wrapped) = row.wrapped.as_deref() else {
                continue;
            };
            let context = branch_context(row.purpose, row.id, row.version);
            let new = self
                .provider
                .re_encrypt(wrapped, &context, kek_version)
                .await?;
            store::rewrap_branch(&self.db, row.id, &new.bytes, &new.kek_id, kek_version).await?;
            rewrapped += 1;
        }
        tracing::info!(
            kek_version,
            rewrapped,
            "rewrapped branch keys under the new KEK"
        );
        Ok(KekRotation {
            kek_version,
            rewrapped,
        })
    }

    /// Makes a new branch key for `purpose` and retires the old one. For `field`, rewraps every
    /// subject key under the new branch key (no field value is touched).
    pub async fn rotate_branch(&self, purpose: Purpose) -> Result<BranchRotation, CryptoError> {
        let mut conn = self.db.acquire().await?;
        lock(&mut conn).await?;
        let result = self.rotate_branch_locked(&mut conn, purpose).await;
        unlock(&mut conn).await?;
        result
    }

    async fn rotate_branch_locked(
        &self,
        conn: &mut PgConnection,
        purpose: Purpose,
    ) -> Result<BranchRotation, CryptoError> {
        let new = self.create_branch(conn, purpose).await?;
        let mut rewrapped = 0;
        if purpose == Purpose::Field {
            let new_key = self.branch_key(Purpose::Field, new.version).await?;
            loop {
                let batch = store::subject_keys_not_under(&self.db, new.id, REWRAP_BATCH).await?;
                if batch.is_empty() {
                    break;
                }
                for row in &batch {
                    let key = self.unwrap_subject(row).await?;
                    let wrapped = wrap_local(
                        &new_key,
                        &key,
                        &subject_aad(row.subject, row.version, new.id),
                        &self.rng,
                    )?;
                    store::rewrap_subject_key(&self.db, row, &wrapped, new.id).await?;
                    rewrapped += 1;
                }
                tracing::info!(rewrapped, "rewrapping subject keys");
            }
        }
        Ok(BranchRotation {
            purpose,
            version: new.version,
            rewrapped_subject_keys: rewrapped,
        })
    }

    /// Every branch key with its state and how many subject keys it still wraps.
    pub async fn status(&self) -> Result<Vec<BranchStatus>, CryptoError> {
        let counts = store::subject_key_counts(&self.db).await?;
        let branches = store::all_branches(&self.db).await?;
        Ok(branches
            .into_iter()
            .map(|row| BranchStatus {
                subject_keys: counts
                    .iter()
                    .find(|(id, _)| *id == row.id)
                    .map_or(0, |(_, n)| *n),
                id: row.id,
                purpose: row.purpose,
                version: row.version,
                kek_id: row.kek_id,
                kek_version: row.kek_version,
                status: row.status,
            })
            .collect())
    }

    pub(crate) fn db(&self) -> &PgPool {
        &self.db
    }

    /// Forgets which versions are active, so the next use reads them from the database.
    pub(crate) fn forget_active_versions(&self) {
        self.active_branch.clear();
        self.active_subject.clear();
    }

    pub(crate) async fn is_active_subject_version(
        &self,
        subject: SubjectId,
        version: u32,
    ) -> Result<bool, CryptoError> {
        Ok(self.active_subject_version(subject).await? == version)
    }

    pub(crate) async fn active_blind_index_version(&self) -> Result<u32, CryptoError> {
        self.active_branch_version(Purpose::BlindIndex).await
    }

    pub(crate) async fn is_active_branch_version(
        &self,
        purpose: Purpose,
        version: u32,
    ) -> Result<bool, CryptoError> {
        Ok(self.active_branch_version(purpose).await? == version)
    }

    /// Retires a subject's key `version` and makes version + 1, under the active field branch key.
    pub(crate) async fn replace_subject_key(
        &self,
        subject: SubjectId,
        version: u32,
    ) -> Result<(), CryptoError> {
        let branch = store::active_branch(&self.db, Purpose::Field)
            .await?
            .ok_or_else(|| CryptoError::KeyNotFound("active field branch key".into()))?;
        let branch_key = self.branch_key(Purpose::Field, branch.version).await?;
        let key = SecretKey::random(&self.rng)?;
        let next = version + 1;
        let wrapped = wrap_local(
            &branch_key,
            &key,
            &subject_aad(subject, next, branch.id),
            &self.rng,
        )?;
        let mut tx = self.db.begin().await?;
        store::replace_subject_key(&mut tx, subject, version, next, &wrapped, branch.id).await?;
        tx.commit().await?;
        self.subject_keys.insert((subject, next), Arc::new(key));
        Ok(())
    }

    /// Forgets every cached key (tests use this to prove where keys come from).
    pub fn clear_caches(&self) {
        self.branch_keys.clear();
        self.active_branch.clear();
        self.subject_keys.clear();
        self.active_subject.clear();
        self.column_keys.clear();
        self.index_keys.clear();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekRotation {
    pub kek_version: u32,
    pub rewrapped: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchRotation {
    pub purpose: Purpose,
    pub version: u32,
    pub rewrapped_subject_keys: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchStatus {
    pub id: Uuid,
    pub purpose: Purpose,
    pub version: u32,
    pub kek_id: String,
    pub kek_version: u32,
    pub status: String,
    pub subject_keys: i64,
}

/// The encryption context a branch key is wrapped with: which key it is, so a wrapped key
/// copied to another row does not unwrap there.
pub fn branch_context(purpose: Purpose, id: Uuid, version: u32) -> EncryptionContext {
    EncryptionContext::new([
        ("app", "clinicd".to_owned()),
        ("purpose", purpose.as_str().to_owned()),
        ("key_id", id.to_string()),
        ("version", version.to_string()),
    ])
}

fn subject_aad(subject: SubjectId, version: u32, branch_key_id: Uuid) -> Vec<u8> {
    [
        b"clinicd-subject-key-v1".as_slice(),
        subject.0.as_bytes(),
        &version.to_be_bytes(),
        branch_key_id.as_bytes(),
    ]
    .concat()
}

/// AES-256-GCM key wrapping under a branch key: `nonce | ciphertext | tag`.
fn wrap_local(
    kek: &SecretKey,
    key: &SecretKey,
    aad: &[u8],
    rng: &SystemRandom,
) -> Result<Vec<u8>, CryptoError> {
    let cipher = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, kek.expose()).map_err(|_| CryptoError::MalformedKey)?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let mut body = key.expose().to_vec();
    cipher
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| CryptoError::Integrity)?;
    Ok([nonce.as_slice(), &body].concat())
}

fn unwrap_local(kek: &SecretKey, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, CryptoError> {
    if wrapped.len() != NONCE_LEN + 32 + 16 {
        return Err(CryptoError::Malformed("wrapped subject key"));
    }
    let cipher = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, kek.expose()).map_err(|_| CryptoError::MalformedKey)?,
    );
    let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
    let nonce =
        Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Malformed("nonce"))?;
    let mut body = Zeroizing::new(sealed.to_vec());
    let plaintext = cipher
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| CryptoError::Integrity)?;
    SecretKey::from_bytes(plaintext)
}

async fn lock(conn: &mut PgConnection) -> Result<(), CryptoError> {
    sqlx::query_scalar!(
        r#"SELECT true AS "locked!" FROM pg_advisory_lock($1)"#,
        KEY_ADMIN_LOCK
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

async fn unlock(conn: &mut PgConnection) -> Result<(), CryptoError> {
    sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", KEY_ADMIN_LOCK)
        .fetch_one(conn)
        .await?;
    Ok(())
}

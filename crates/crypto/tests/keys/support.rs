use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clinicd_crypto::provider::{GeneratedKey, WrappedKey};
use clinicd_crypto::{
    CacheSettings, CryptoError, EncryptionContext, FieldLocation, KeyProvider, Keyring,
    LocalKeyProvider, Owner, ProviderError, SecretKey, SubjectId,
};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Counts calls to the provider it wraps: the hot path must make none.
#[derive(Debug)]
pub struct Counting<P> {
    pub inner: P,
    pub generated: AtomicUsize,
    pub decrypted: AtomicUsize,
    pub re_encrypted: AtomicUsize,
}

impl<P> Counting<P> {
    pub fn new(inner: P) -> Arc<Self> {
        Arc::new(Self {
            inner,
            generated: AtomicUsize::new(0),
            decrypted: AtomicUsize::new(0),
            re_encrypted: AtomicUsize::new(0),
        })
    }

    pub fn calls(&self) -> usize {
        self.generated.load(Ordering::SeqCst)
            + self.decrypted.load(Ordering::SeqCst)
            + self.re_encrypted.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl<P: KeyProvider> KeyProvider for Counting<P> {
    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
        kek_version: u32,
    ) -> Result<GeneratedKey, ProviderError> {
        self.generated.fetch_add(1, Ordering::SeqCst);
        self.inner.generate_data_key(context, kek_version).await
    }

    async fn decrypt(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretKey, ProviderError> {
        self.decrypted.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt(wrapped, context).await
    }

    async fn re_encrypt(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
        kek_version: u32,
    ) -> Result<WrappedKey, ProviderError> {
        self.re_encrypted.fetch_add(1, Ordering::SeqCst);
        self.inner.re_encrypt(wrapped, context, kek_version).await
    }
}

pub fn local_provider() -> LocalKeyProvider {
    LocalKeyProvider::new(SecretKey::random(&aws_lc_rs::rand::SystemRandom::new()).unwrap())
}

pub async fn keyring(db: PgPool, provider: Arc<dyn KeyProvider>) -> Keyring {
    let keyring = Keyring::new(db, provider, CacheSettings::default());
    keyring.bootstrap().await.unwrap();
    keyring
}

pub fn ssn_at(row: uuid::Uuid) -> FieldLocation<'static> {
    FieldLocation::new("secrets_under_test", "secret", row)
}

/// A table of the shape a repository would have, for moving ciphertexts around in SQL.
pub async fn create_table(db: &PgPool) {
    sqlx::query("CREATE TABLE secrets_under_test (id uuid PRIMARY KEY, subject uuid NOT NULL, secret bytea NOT NULL, other bytea)")
        .execute(db)
        .await
        .unwrap();
}

/// Two rows of one patient; the first row's ciphertext is copied over the second's in SQL. The
/// copy must not decrypt at its new row, nor when read as another column.
pub async fn copied_values_do_not_decrypt(db: &PgPool, keyring: &Keyring) {
    create_table(db).await;
    let subject = SubjectId(Uuid::now_v7());
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    for (row, value) in [(a, "111-11-1111"), (b, "222-22-2222")] {
        let sealed = keyring
            .encrypt(Owner::Subject(subject), &ssn_at(row), value.as_bytes())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO secrets_under_test (id, subject, secret, other) VALUES ($1, $2, $3, $3)",
        )
        .bind(row)
        .bind(subject.0)
        .bind(&sealed)
        .execute(db)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE secrets_under_test SET secret = (SELECT secret FROM secrets_under_test WHERE id = $1) WHERE id = $2")
        .bind(a)
        .bind(b)
        .execute(db)
        .await
        .unwrap();
    let read = |id: Uuid, column: &'static str| {
        let db = db.clone();
        async move {
            let row = sqlx::query("SELECT secret, other FROM secrets_under_test WHERE id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap();
            row.get::<Vec<u8>, _>(column)
        }
    };
    assert_eq!(
        keyring
            .decrypt(&ssn_at(a), &read(a, "secret").await)
            .await
            .unwrap()
            .as_slice(),
        b"111-11-1111"
    );
    let moved = read(b, "secret").await;
    // With cold caches too: nothing cached can make a moved value decrypt.
    keyring.clear_caches();
    assert!(matches!(
        keyring.decrypt(&ssn_at(b), &moved).await,
        Err(CryptoError::Integrity)
    ));
    // The same bytes read as if they lived in another column fail too.
    let other_column = FieldLocation::new("secrets_under_test", "other", a);
    assert!(matches!(
        keyring
            .decrypt(&other_column, &read(a, "secret").await)
            .await,
        Err(CryptoError::Integrity)
    ));
}

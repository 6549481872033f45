use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use clinicd_crypto::provider::{GeneratedKey, WrappedKey};
use clinicd_crypto::{
    CacheSettings, EncryptionContext, FieldLocation, KeyProvider, Keyring, LocalKeyProvider,
    ProviderError, SecretKey,
};
use sqlx::PgPool;

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

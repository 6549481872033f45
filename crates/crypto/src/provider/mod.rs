//! Key providers: whatever holds the root key. Two implementations behind one trait, chosen
//! by configuration: AWS KMS, and a local master key file for development and small installs.

mod kms;
mod local;

use std::fmt::Debug;

pub use kms::{KeyProtection, KmsKeyProvider};
pub use local::{LocalKeyProvider, fingerprint, read_master_key};

use crate::context::EncryptionContext;
use crate::error::ProviderError;
use crate::keys::SecretKey;

/// A data key as the provider returns it.
#[derive(Debug)]
pub struct GeneratedKey {
    pub plaintext: SecretKey,
    pub wrapped: WrappedKey,
}

/// A key encrypted under the root key (KEK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub bytes: Vec<u8>,
    /// Which root key wrapped it: the KMS key ARN, or `local:<fingerprint>`.
    pub kek_id: String,
}

/// The root of the key hierarchy. Calls are rare (branch keys are unwrapped once and cached)
/// so they may be slow; they must never be on a request's hot path.
#[async_trait::async_trait]
pub trait KeyProvider: Send + Sync + Debug {
    /// A fresh 256-bit data key, returned in clear and wrapped under the root key with
    /// `context` bound to it. `kek_version` is our rotation generation: the local provider
    /// derives its KEK from it; KMS always uses the key's current backing material.
    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
        kek_version: u32,
    ) -> Result<GeneratedKey, ProviderError>;

    /// Unwraps a key; fails with [`ProviderError::Unwrap`] unless `context` is the one it was
    /// wrapped with.
    async fn decrypt(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretKey, ProviderError>;

    /// Rewraps a key under the current root key material (generation `kek_version`) without
    /// exposing it to the caller where the provider allows (KMS ReEncrypt).
    async fn re_encrypt(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
        kek_version: u32,
    ) -> Result<WrappedKey, ProviderError>;
}

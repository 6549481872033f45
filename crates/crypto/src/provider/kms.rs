//! AWS KMS as the root of the key hierarchy: GenerateDataKey, Decrypt and ReEncrypt, each
//! with an encryption context. The endpoint, region and credentials come from the standard
//! AWS configuration (`AWS_ENDPOINT_URL` points tests at moto).

use std::collections::HashMap;

use aws_sdk_kms::Client;
use aws_sdk_kms::error::{DisplayErrorContext, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroize;

use super::{GeneratedKey, KeyProvider, WrappedKey};
use crate::context::EncryptionContext;
use crate::error::ProviderError;
use crate::keys::SecretKey;

#[derive(Debug, Clone)]
pub struct KmsKeyProvider {
    client: Client,
    key_id: String,
}

impl KmsKeyProvider {
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }

    /// What protects the root key, as KMS reports it (`clinicd backup check`,
    /// docs/backup.md): its state (a key pending deletion makes every backup unreadable once
    /// deleted), whether it is multi-Region, and whether KMS rotates its material.
    pub async fn protection(&self) -> Result<KeyProtection, ProviderError> {
        let described = self
            .client
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(unavailable)?;
        let metadata = described.key_metadata().ok_or(ProviderError::Malformed)?;
        // Rotation status is not readable for every key type; unknown reads as off.
        let rotation = self
            .client
            .get_key_rotation_status()
            .key_id(&self.key_id)
            .send()
            .await
            .map(|out| out.key_rotation_enabled())
            .unwrap_or(false);
        Ok(KeyProtection {
            key_id: self.key_id.clone(),
            state: metadata
                .key_state()
                .map_or("unknown", |s| s.as_str())
                .to_owned(),
            deletion_date: metadata
                .deletion_date()
                .and_then(|d| chrono::DateTime::from_timestamp(d.secs(), 0))
                .map(|d| d.to_rfc3339()),
            multi_region: metadata.multi_region().unwrap_or(false),
            rotation,
        })
    }

    /// A client from the environment's AWS configuration.
    pub async fn from_env(key_id: impl Into<String>) -> Self {
        let config = aws_config::load_from_env().await;
        Self::new(Client::new(&config), key_id)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn context_map(context: &EncryptionContext) -> HashMap<String, String> {
    context
        .pairs()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Takes the plaintext out of the SDK's buffer and wipes the buffer.
fn take_plaintext(blob: Option<Blob>) -> Result<SecretKey, ProviderError> {
    let mut bytes = blob.ok_or(ProviderError::Malformed)?.into_inner();
    let key = SecretKey::from_bytes(&bytes).map_err(|_| ProviderError::Malformed);
    bytes.zeroize();
    key
}

fn unavailable<E: std::error::Error + 'static, R: std::fmt::Debug>(
    error: SdkError<E, R>,
) -> ProviderError {
    ProviderError::Unavailable(DisplayErrorContext(&error).to_string())
}

/// What KMS says protects the root key (see [`KmsKeyProvider::protection`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProtection {
    pub key_id: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, ...
    pub state: String,
    pub deletion_date: Option<String>,
    pub multi_region: bool,
    pub rotation: bool,
}

#[async_trait::async_trait]
impl KeyProvider for KmsKeyProvider {
    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
        _kek_version: u32,
    ) -> Result<GeneratedKey, ProviderError> {
        let mut output = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(unavailable)?;
        let plaintext = take_plaintext(output.plaintext.take())?;
        let bytes = output
            .ciphertext_blob
            .take()
            .ok_or(ProviderError::Malformed)?
            .into_inner();
        let kek_id = output.key_id.take().unwrap_or_else(|| self.key_id.clone());
        Ok(GeneratedKey {
            plaintext,
            wrapped: WrappedKey { bytes, kek_id },
        })
    }

    async fn decrypt(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretKey, ProviderError> {
        let mut output = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|error| match error.as_service_error() {
                Some(e)
                    if e.is_invalid_ciphertext_exception() || e.is_incorrect_key_exception() =>
                {
                    ProviderError::Unwrap
                }
                _ => unavailable(error),
            })?;
        take_plaintext(output.plaintext.take())
    }

    async fn re_encrypt(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
        _kek_version: u32,
    ) -> Result<WrappedKey, ProviderError> {
        let map = context_map(context);
        let output = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .source_key_id(&self.key_id)
            .set_source_encryption_context(Some(map.clone()))
            .destination_key_id(&self.key_id)
            .set_destination_encryption_context(Some(map))
            .send()
            .await
            .map_err(|error| match error.as_service_error() {
                Some(e)
                    if e.is_invalid_ciphertext_exception() || e.is_incorrect_key_exception() =>
                {
                    ProviderError::Unwrap
                }
                _ => unavailable(error),
            })?;
        let bytes = output
            .ciphertext_blob
            .ok_or(ProviderError::Malformed)?
            .into_inner();
        Ok(WrappedKey {
            bytes,
            kek_id: output.key_id.unwrap_or_else(|| self.key_id.clone()),
        })
    }
}

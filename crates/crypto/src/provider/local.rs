//! The local key provider: a 256-bit master key in a file readable by its owner only, standing
//! in for KMS on a developer's machine and in small installs.
//!
//! Wrapping is AES-256-GCM under a KEK derived from the master key for each rotation
//! generation (HKDF-SHA256, info `kek v<N>`), with the encryption context as associated data,
//! so the same context semantics as KMS hold: a wrong context fails. Deriving generations from
//! one master key limits how much each KEK protects, but a leaked master key exposes every
//! generation: installs that need a root key that never leaves its hardware use KMS.
//!
//! Wrapped format: `"CLK1" | kek_version u32 | nonce (12) | ciphertext (32) | tag (16)`.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::{GeneratedKey, KeyProvider, WrappedKey};
use crate::context::EncryptionContext;
use crate::error::ProviderError;
use crate::keys::{KEY_LEN, SecretKey};

const MAGIC: &[u8; 4] = b"CLK1";
const HEADER_LEN: usize = 4 + 4;
const WRAPPED_LEN: usize = HEADER_LEN + NONCE_LEN + KEY_LEN + 16;

pub struct LocalKeyProvider {
    master: SecretKey,
    kek_id: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

impl LocalKeyProvider {
    pub fn new(master: SecretKey) -> Self {
        let kek_id = format!("local:{}", fingerprint(&master));
        Self {
            master,
            kek_id,
            rng: SystemRandom::new(),
        }
    }

    /// Reads the master key file: exactly 32 bytes (permissions are checked by configuration).
    pub fn from_file(path: &Path) -> Result<Self, ProviderError> {
        Ok(Self::new(read_master_key(path)?))
    }

    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    fn kek(&self, version: u32) -> Result<LessSafeKey, ProviderError> {
        let info = format!("kek v{version}");
        let info_parts = [info.as_bytes()];
        let prk = Salt::new(HKDF_SHA256, b"clinicd-local-kek").extract(self.master.expose());
        let okm = prk
            .expand(&info_parts, &AES_256_GCM)
            .map_err(|_| ProviderError::Malformed)?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    }

    fn wrap(
        &self,
        key: &SecretKey,
        context: &EncryptionContext,
        version: u32,
    ) -> Result<WrappedKey, ProviderError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| ProviderError::Unavailable("random".into()))?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&version.to_be_bytes());
        let header_aad = aad(&out, context);
        out.extend_from_slice(&nonce);
        let mut body = key.expose().to_vec();
        self.kek(version)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header_aad),
                &mut body,
            )
            .map_err(|_| ProviderError::Malformed)?;
        out.extend_from_slice(&body);
        Ok(WrappedKey {
            bytes: out,
            kek_id: self.kek_id.clone(),
        })
    }
}

/// Reads a master key file: exactly 32 bytes.
pub fn read_master_key(path: &Path) -> Result<SecretKey, ProviderError> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| ProviderError::Unavailable(format!("master key file: {e}")))?,
    );
    SecretKey::from_bytes(&bytes).map_err(|_| ProviderError::Malformed)
}

/// Names a master key without revealing anything usable about it: 8 bytes of SHA-256 over a
/// label and the key, in hex (the `local:` KEK id, and the key id of escrow shares).
pub fn fingerprint(master: &SecretKey) -> String {
    let digest = digest(
        &SHA256,
        &[b"clinicd-local-kek-id".as_slice(), master.expose()].concat(),
    );
    hex::encode(digest.as_ref().get(..8).unwrap_or_default())
}

fn aad(header: &[u8], context: &EncryptionContext) -> Vec<u8> {
    [
        b"clinicd-local-wrap-v1".as_slice(),
        header,
        &context.canonical(),
    ]
    .concat()
}

#[async_trait::async_trait]
impl KeyProvider for LocalKeyProvider {
    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
        kek_version: u32,
    ) -> Result<GeneratedKey, ProviderError> {
        let plaintext = SecretKey::random(&self.rng)
            .map_err(|_| ProviderError::Unavailable("random".into()))?;
        let wrapped = self.wrap(&plaintext, context, kek_version)?;
        Ok(GeneratedKey { plaintext, wrapped })
    }

    async fn decrypt(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<SecretKey, ProviderError> {
        // Untrusted bytes (read from the database): every read is checked.
        if wrapped.len() != WRAPPED_LEN {
            return Err(ProviderError::Unwrap);
        }
        let (header, rest) = wrapped
            .split_at_checked(HEADER_LEN)
            .ok_or(ProviderError::Unwrap)?;
        let (magic, version) = header.split_at_checked(4).ok_or(ProviderError::Unwrap)?;
        if magic != MAGIC {
            return Err(ProviderError::Unwrap);
        }
        let version = u32::from_be_bytes(version.try_into().map_err(|_| ProviderError::Unwrap)?);
        let (nonce, body) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(ProviderError::Unwrap)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| ProviderError::Unwrap)?;
        let mut body = Zeroizing::new(body.to_vec());
        let plaintext = self
            .kek(version)?
            .open_in_place(nonce, Aad::from(aad(header, context)), &mut body)
            .map_err(|_| ProviderError::Unwrap)?;
        SecretKey::from_bytes(plaintext).map_err(|_| ProviderError::Malformed)
    }

    async fn re_encrypt(
        &self,
        wrapped: &[u8],
        context: &EncryptionContext,
        kek_version: u32,
    ) -> Result<WrappedKey, ProviderError> {
        let key = self.decrypt(wrapped, context).await?;
        self.wrap(&key, context, kek_version)
    }
}

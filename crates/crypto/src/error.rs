//! The crypto crate's errors. None carries key material or plaintext.

/// Errors from the key provider (KMS or the local master key).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The wrapped key does not open under this context (wrong or missing encryption context,
    /// wrong KEK, or tampered bytes).
    #[error("the wrapped key cannot be unwrapped with this encryption context")]
    Unwrap,
    /// The provider cannot be reached or refused the call.
    #[error("the key provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the key provider returned a malformed key")]
    Malformed,
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the ciphertext is malformed: {0}")]
    Malformed(&'static str),
    #[error("the ciphertext uses format version {0}, which this build does not know")]
    UnknownVersion(u8),
    /// Authentication failed: tampered bytes, or a value moved to another row or column.
    #[error("the ciphertext does not authenticate at this location")]
    Integrity,
    /// The key was destroyed (crypto-shredding): the value is gone for good.
    #[error("the key for this value was destroyed; the value cannot be recovered")]
    KeyDestroyed,
    #[error("no such key: {0}")]
    KeyNotFound(String),
    #[error("a key has the wrong length")]
    MalformedKey,
    #[error("unknown key purpose `{0}`")]
    UnknownPurpose(String),
    #[error("the random number generator failed")]
    Random,
    #[error("the decrypted value is not valid for its type")]
    InvalidPlaintext,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

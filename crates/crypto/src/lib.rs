//! Keys and field encryption: key providers (AWS KMS, local master key), the key hierarchy
//! (KMS root, per-purpose branch keys, per-patient subject keys), authenticated field
//! ciphertexts, blind indexes, rotation and crypto-shredding. `docs/field-encryption.md`
//! describes the design and the formats.
//!
//! Owns: the `data_keys` and `subject_keys` tables and every plaintext key in memory.
//!
//! Must not: import actix; log or `Debug`-print key material or plaintext; let any other crate
//! hold a raw key (they get ciphertexts, plaintexts and index values only).

pub mod blind_index;
pub mod cache;
mod clock;
pub mod context;
pub mod encrypted;
pub mod error;
pub mod escrow;
pub mod field;
pub mod keyring;
pub mod keys;
pub mod plaintext;
pub mod provider;
pub mod reindex;
pub mod rekey;
mod store;

pub use blind_index::{BlindIndex, BlindIndexSpec, Normalizer};
pub use context::EncryptionContext;
pub use encrypted::{Encrypted, FieldValue};
pub use error::{CryptoError, ProviderError};
pub use field::FieldLocation;
pub use keyring::{CacheSettings, Keyring, Owner};
pub use keys::{KeyRef, Purpose, SecretKey, SubjectId};
pub use plaintext::Plaintext;
pub use provider::{KeyProvider, KmsKeyProvider, LocalKeyProvider};
pub use reindex::{Batch, DerivedIndex, IndexedColumn};
pub use rekey::{EncryptedColumn, RekeyOptions, RekeyOutcome, RekeyReport};

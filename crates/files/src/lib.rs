//! Encrypted file storage: object stores (S3, local disk) behind one trait, the streaming,
//! segmented, key-committing encrypted object format, content sniffing, and the `files` table
//! that records each complete object with its wrapped data key. `docs/files.md` describes the
//! design and the format.
//!
//! Owns: the `files` table and every byte written to the object store.
//!
//! Must not: import actix (the API crate adapts multipart streams to a byte stream); write
//! plaintext to disk; hold a raw data key beyond one upload or download.

pub mod format;
pub mod record;
pub mod s3;
pub mod service;
pub mod sniff;
pub mod store;

pub use record::{Category, StoredFile, StoredLabel};
pub use service::{Download, FileError, FileInfo, FileSettings, Files, NewFile, Staged};
pub use sniff::ContentType;
pub use store::{LocalStore, ObjectStore, ObjectStoreError};

/// The field-encrypted columns of `files`, for `clinicd keys rekey`.
pub fn encrypted_columns() -> Vec<clinicd_crypto::EncryptedColumn> {
    record::ENCRYPTED_COLUMNS
        .iter()
        .map(|column| clinicd_crypto::EncryptedColumn {
            table: record::TABLE,
            column,
        })
        .collect()
}

//! Encrypted file storage: object stores (S3, local disk) behind one trait and the streaming,
//! segmented, key-committing encrypted object format.
//!
//! Owns: the `files` table and every byte written to the object store.
//!
//! Must not: import actix (the API crate adapts multipart streams to it); write plaintext to disk.
//!
//! Status: the object format (`format`) and the object stores (`store`, `s3`) are built and
//! tested; the `files` table, key wrapping and the endpoints come with the rest of the encrypted-files issue. The server already
//! validates the storage settings (`CLINICD_STORAGE`, `CLINICD_STORAGE_DIR`, `CLINICD_S3_BUCKET`).

pub mod format;
pub mod s3;
pub mod store;

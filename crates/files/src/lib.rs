//! Encrypted file storage: object stores (S3, local disk) behind one trait and the streaming,
//! segmented, key-committing encrypted object format.
//!
//! Owns: the `files` table and every byte written to the object store.
//!
//! Must not: import actix (the API crate adapts multipart streams to it); write plaintext to disk.
//!
//! Status: scaffold. The encrypted-files issue fills it in. The server already validates the
//! storage settings (`CLINICD_STORAGE`, `CLINICD_STORAGE_DIR`, `CLINICD_S3_BUCKET`).

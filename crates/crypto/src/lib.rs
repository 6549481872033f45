//! Keys and field encryption: key providers (AWS KMS, local master key), the key hierarchy
//! (KMS root, per-purpose branch keys, per-patient subject keys), authenticated field
//! ciphertexts, blind indexes and rotation.
//!
//! Owns: the `data_keys` and `subject_keys` tables and every plaintext key in memory.
//!
//! Must not: import actix; log or `Debug`-print key material; let any other crate hold a raw key.
//!
//! Status: scaffold. The keys issue fills it in. The server already validates the key-provider
//! settings (`CLINICD_KEY_PROVIDER`, `CLINICD_MASTER_KEY_FILE`, `CLINICD_KMS_KEY_ID`).

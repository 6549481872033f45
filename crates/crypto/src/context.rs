//! Encryption contexts: the name-value pairs bound to a wrapped key as associated data, as
//! AWS KMS does. Unwrapping with any other context fails.

use std::collections::BTreeMap;

use crate::keys::encode_parts;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// A canonical byte encoding (sorted, length-prefixed) used as associated data.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in &self.0 {
            encode_parts(&mut out, &[key.as_bytes(), value.as_bytes()]);
        }
        out
    }
}

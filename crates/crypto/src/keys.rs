//! Key material and the names of keys.

use std::fmt;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::CryptoError;

pub const KEY_LEN: usize = 32;

/// 256 bits of key material. Zeroized on drop; `Debug` never shows it; not `Clone` (share it
/// behind an `Arc` so there is one copy to zeroize).
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl SecretKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; KEY_LEN] = bytes.try_into().map_err(|_| CryptoError::MalformedKey)?;
        Ok(Self(Zeroizing::new(array)))
    }

    pub fn random(rng: &SystemRandom) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill(key.as_mut()).map_err(|_| CryptoError::Random)?;
        Ok(Self(key))
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

/// What a branch key is for. Each purpose has its own branch key below the KMS root, so a
/// compromise or rotation of one does not touch the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// Wraps per-patient subject keys, and encrypts fields that belong to no patient.
    Field,
    /// Keys the HMACs of blind indexes.
    BlindIndex,
    /// Authenticates the audit chain and encrypts audit before/after values.
    Audit,
    /// Wraps the per-file data keys of uploads.
    File,
}

impl Purpose {
    pub const ALL: [Purpose; 4] = [Self::Field, Self::BlindIndex, Self::Audit, Self::File];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Field => "field",
            Self::BlindIndex => "blind_index",
            Self::Audit => "audit",
            Self::File => "file",
        }
    }

    /// The byte that names the purpose inside a field ciphertext.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Field => 1,
            Self::BlindIndex => 2,
            Self::Audit => 3,
            Self::File => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }
}

impl std::str::FromStr for Purpose {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| CryptoError::UnknownPurpose(s.chars().take(32).collect()))
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The subject (patient) a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectId(pub uuid::Uuid);

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which key encrypted a field: a subject's key at a version, or a purpose's branch key at a
/// version (for records that belong to no patient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRef {
    Subject(SubjectId, u32),
    Purpose(Purpose, u32),
}

/// Length-prefixed concatenation, so that no two different lists encode the same bytes.
pub(crate) fn encode_parts(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for part in parts {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
}

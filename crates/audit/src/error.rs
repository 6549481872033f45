//! The one error of the audit trail: it is unavailable (the database, the key, or the writer
//! task), and whatever was being recorded was not. Callers fail closed on it.

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit trail is unavailable: {0}")]
    Unavailable(String),
    /// Archiving stops while a legal hold is in force (docs/lifecycle.md): the trail a case
    /// may need stays in the database, verifiable as it is.
    #[error("legal hold {0} is in force: the audit trail is not archived while a hold lasts")]
    Held(uuid::Uuid),
    /// The sealed values' key was destroyed (the patient was erased): gone for good.
    #[error("the values were destroyed with their patient's key")]
    Destroyed,
}

impl From<sqlx::Error> for AuditError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<clinicd_crypto::CryptoError> for AuditError {
    fn from(error: clinicd_crypto::CryptoError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

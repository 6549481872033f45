//! The one error of the audit trail: it is unavailable (the database, the key, or the writer
//! task), and whatever was being recorded was not. Callers fail closed on it.

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit trail is unavailable: {0}")]
    Unavailable(String),
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

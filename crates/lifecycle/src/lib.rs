//! The data lifecycle (docs/lifecycle.md): how long records are kept, legal holds that stop
//! every destruction, erasure by crypto-shredding with a second person's approval and a
//! certificate of destruction, and the erasure ledger that a restored backup replays so that an
//! erased patient never comes back.
//!
//! Every destructive path asks the database's `legal_hold_for(patient)` in the transaction that
//! destroys (it takes the lifecycle lock shared; placing a hold takes it exclusively), so a hold
//! and a destruction never pass each other. The files crate and the audit trail's archiving ask
//! the same function; this crate owns it.

pub mod erasure;
pub mod holds;
pub mod ledger;
pub mod retention;

use std::sync::Arc;

use clinicd_crypto::Keyring;
use clinicd_domain::PatientStore;
use clinicd_files::Files;
use sqlx::PgPool;
use uuid::Uuid;

pub use erasure::{Basis, Certificate, ErasureRequest, RequestState};
pub use holds::{Hold, HoldScope, NewHold};
pub use ledger::{LedgerEntry, LedgerStore, LocalLedger, S3Ledger};
pub use retention::{Due, RetentionPolicy};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("no such record")]
    NotFound,
    /// A legal hold covers the patient (or everything).
    #[error("legal hold {0} is in force")]
    Held(Uuid),
    /// The retention rules still keep the record, and the basis does not override them.
    #[error("{0}")]
    Retained(String),
    #[error("an erasure is approved by another person than the one who asked for it")]
    OwnRequest,
    #[error("the request has already been decided")]
    Decided,
    #[error("the patient has already been erased")]
    AlreadyErased,
    #[error("an erasure of this patient is already pending")]
    PendingExists,
    #[error("the hold has already been released")]
    Released,
    /// A field failed validation; never names a value.
    #[error("`{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The erasure ledger outside the database is unreachable, or it and the database's copy
    /// do not agree: nothing is erased, and a starting server does not report ready.
    #[error("erasure ledger: {0}")]
    Ledger(String),
    #[error(transparent)]
    Store(#[from] clinicd_domain::StoreError),
    #[error(transparent)]
    Files(#[from] clinicd_files::FileError),
    #[error(transparent)]
    Crypto(#[from] clinicd_crypto::CryptoError),
    #[error(transparent)]
    Audit(#[from] clinicd_audit::AuditError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// What the lifecycle acts through: the records it erases, the files whose objects it deletes,
/// the keys it destroys, the ledger it appends to and the retention rules it applies.
#[derive(Clone)]
pub struct Lifecycle {
    pub db: PgPool,
    pub keyring: Arc<Keyring>,
    pub patients: PatientStore,
    pub files: Files,
    pub ledger: Arc<dyn LedgerStore>,
    pub policy: RetentionPolicy,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("ledger", &self.ledger)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Text a person typed (a reason, a case reference): trimmed, within `max` characters, no
/// control characters. The API tells users not to put PHI in it; it is stored as it is.
pub fn checked_text(
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<String, LifecycleError> {
    let value = value.trim();
    let length = value.chars().count();
    if length == 0 || length > max {
        return Err(LifecycleError::Invalid {
            field,
            reason: format!("must be 1 to {max} characters"),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(LifecycleError::Invalid {
            field,
            reason: "must not hold control characters".into(),
        });
    }
    Ok(value.to_owned())
}

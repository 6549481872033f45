//! Role-based access control: the closed set of permissions, roles, role assignments,
//! care-team assignments, break-the-glass grants and identifier masking.
//!
//! Owns: the permission columns of `roles`, `user_roles` changes, `patient_assignments`,
//! `break_glass_grants` and `access_proposals` (dual control), and the decision "may this user
//! do this to that patient".
//!
//! Must not: import actix; authenticate anyone (identity does); write audit rows itself
//! (the API audits every request and attaches what this crate returns).

pub mod administration;
pub mod break_glass;
pub mod care_team;
pub mod error;
pub mod grants;
pub mod masking;
pub mod permission;
pub mod proposals;
pub mod roles;

use std::sync::Arc;

use clinicd_crypto::Keyring;
use clinicd_identity::clock::Clock;
use sqlx::PgPool;

pub use care_team::Reach;
pub use error::RbacError;
pub use grants::{Decision, Grants};
pub use masking::Identifiers;
pub use permission::{Permission, Permissions};

/// How long a break-the-glass grant lasts unless configured otherwise.
pub const DEFAULT_BREAK_GLASS_MINUTES: u32 = 60;

/// The RBAC services as one handle.
#[derive(Debug, Clone)]
pub struct Rbac {
    pub db: PgPool,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    break_glass_lifetime: chrono::Duration,
    grants_cache: Arc<grants::GrantsCache>,
}

impl Rbac {
    pub fn new(
        db: PgPool,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        break_glass_minutes: u32,
    ) -> Self {
        Self {
            db,
            keyring,
            clock,
            break_glass_lifetime: chrono::Duration::minutes(i64::from(break_glass_minutes)),
            grants_cache: Arc::new(grants::GrantsCache::default()),
        }
    }

    pub async fn grants(&self, user: clinicd_identity::users::UserId) -> Result<Grants, RbacError> {
        Ok(grants::load(&self.db, user).await?)
    }

    /// The grants of an authenticated caller whose session check read `access_version` (see
    /// [`grants::GrantsCache`]): from memory while the version is unchanged, else loaded.
    pub async fn grants_at(
        &self,
        user: clinicd_identity::users::UserId,
        access_version: i64,
    ) -> Result<Grants, RbacError> {
        if let Some(grants) = self.grants_cache.get(user, access_version) {
            return Ok(grants);
        }
        let grants = grants::load(&self.db, user).await?;
        self.grants_cache.put(access_version, &grants);
        Ok(grants)
    }

    /// How `user` reaches `patient` now.
    pub async fn reach(
        &self,
        user: clinicd_identity::users::UserId,
        patient: uuid::Uuid,
    ) -> Result<Reach, RbacError> {
        care_team::reach(&self.db, user, patient, self.clock.now()).await
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

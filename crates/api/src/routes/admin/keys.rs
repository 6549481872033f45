//! Key status (`keys:manage`): which branch keys exist, which is active per purpose, under which
//! KEK generation, and how many subject keys each still wraps. Rotation stays a CLI operation
//! (`clinicd keys rotate-kek | rotate-branch`), run by an operator on a host with the key
//! provider's credentials.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

/// One branch key. Never key material: ids, versions and counts only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BranchKeyView {
    pub id: Uuid,
    /// `field`, `blind_index`, `audit` or `file`.
    pub purpose: String,
    pub version: u32,
    /// `active` or `retired`.
    pub status: String,
    /// The key provider's key id (a KMS ARN, or `local:` and a fingerprint of the local master key).
    pub kek_id: String,
    pub kek_version: u32,
    /// Subject (per-patient) keys this branch key still wraps.
    pub subject_keys: i64,
}

/// The state of the key hierarchy.
#[utoipa::path(
    get,
    path = "/api/admin/keys",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every branch key", body = [BranchKeyView]),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `keys:manage` (permission_denied), or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn status(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let status = state
        .identity
        .keyring
        .status()
        .await
        .map_err(ApiError::unexpected)?;
    let view: Vec<BranchKeyView> = status
        .into_iter()
        .map(|k| BranchKeyView {
            id: k.id,
            purpose: k.purpose.as_str().to_owned(),
            version: k.version,
            status: k.status,
            kek_id: k.kek_id,
            kek_version: k.kek_version,
            subject_keys: k.subject_keys,
        })
        .collect();
    Ok(HttpResponse::Ok().json(view))
}

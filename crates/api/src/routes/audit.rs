//! The audit trail's administrative endpoints. Administrators only until RBAC turns this into
//! the `audit:read` permission; each use is itself audited.

use actix_web::{HttpResponse, web};
use clinicd_identity::users;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::Authenticated;
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

/// The built-in role that may read and verify the trail (until RBAC's `audit:read`).
const ADMIN_ROLE: &str = "Admin";

/// The outcome of recomputing the chain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// No event was changed, removed, inserted or reordered, and every head is authentic.
    pub intact: bool,
    pub events_checked: i64,
    pub heads_checked: i64,
    pub last_seq: i64,
    /// The first sequence number that is not what the writer wrote.
    pub first_broken_seq: Option<i64>,
    pub problem: Option<String>,
}

async fn require_admin(state: &ApiState, caller: &Authenticated) -> Result<(), ApiError> {
    let admin = users::has_role(&state.db, caller.0.user_id, ADMIN_ROLE)
        .await
        .map_err(ApiError::unexpected)?;
    if admin {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied)
    }
}

/// Recomputes the audit chain and checks every authenticated head.
#[utoipa::path(
    get,
    path = "/api/audit/verify",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The verification report (intact or not)", body = AuditVerification),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator (permission_denied), or a pending password change", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The trail cannot be read", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify(
    caller: Authenticated,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&state, &caller).await?;
    let report = state.audit.verify().await.map_err(|error| {
        tracing::error!(error = %error, "audit verification could not run");
        ApiError::Unavailable
    })?;
    Ok(HttpResponse::Ok().json(AuditVerification {
        intact: report.first_broken_seq.is_none(),
        events_checked: report.events_checked,
        heads_checked: report.heads_checked,
        last_seq: report.last_seq,
        first_broken_seq: report.first_broken_seq,
        problem: report.problem,
    }))
}

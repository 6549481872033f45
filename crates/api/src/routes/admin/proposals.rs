//! Dual control (`user:manage`): the changes waiting for a second administrator, and their
//! approval or rejection. Who proposed a change cannot approve it, nobody approves a change to
//! their own account, and an approver must be able to make the change themselves (a role's
//! content also needs `role:manage`). Approval applies the change, in the transaction that
//! records the decision and its audit event.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use clinicd_rbac::Permission;
use clinicd_rbac::administration::{self, Applied};
use clinicd_rbac::proposals::{self, ProposalKind};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::Granted;
use crate::problem::{ApiError, Problem};
use crate::routes::admin::dual_control::{PasswordReset, ProposalView};
use crate::routes::admin::users::reset_answer;
use crate::state::ApiState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProposalQuery {
    /// Only proposals still waiting (default true).
    pub pending: Option<bool>,
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// An approved proposal, and for a password reset how its one-time password went out.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub proposal: ProposalView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<PasswordReset>,
}

/// Proposals, newest first.
#[utoipa::path(
    get,
    path = "/api/admin/proposals",
    tag = "admin",
    security(("bearer" = [])),
    params(ProposalQuery),
    responses(
        (status = 200, description = "Proposals", body = [ProposalView]),
        (status = 400, description = "A malformed query (invalid_parameters)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage` (permission_denied), or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    query: web::Query<ProposalQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::InvalidParameters);
    }
    let now = state.rbac.now();
    let found = proposals::list(&state.db, query.pending.unwrap_or(true), now, limit).await?;
    let ids: Vec<Uuid> = found.iter().map(|p| p.id).collect();
    let mut response = HttpResponse::Ok().json(
        found
            .iter()
            .map(|p| ProposalView::of(p, now))
            .collect::<Vec<_>>(),
    );
    AuditNote {
        metadata: Some(serde_json::json!({ "returned": ids.len(), "ids": ids })),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// One proposal.
#[utoipa::path(
    get,
    path = "/api/admin/proposals/{id}",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Proposal id")),
    responses(
        (status = 200, description = "The proposal", body = ProposalView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage` (permission_denied), or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such proposal", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    state: web::Data<ApiState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let proposal = proposals::get(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut response = HttpResponse::Ok().json(ProposalView::of(&proposal, state.rbac.now()));
    AuditNote {
        resource_id: Some(id.to_string()),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// Approves a proposal and applies its change.
#[utoipa::path(
    post,
    path = "/api/admin/proposals/{id}/approve",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Proposal id")),
    responses(
        (status = 200, description = "Approved and applied", body = Approval),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage` (or `role:manage` for a role's content), the caller's own proposal (own_proposal), a change to the caller's own account (own_account), or one the caller could not make (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such proposal, or its target is gone", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Expired (proposal_expired), already decided (proposal_decided), or it would leave no active administrator (last_administrator)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A reset's password could not be delivered; nothing changed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn approve(
    state: web::Data<ApiState>,
    granted: Granted,
    audit: Audit,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let now = state.rbac.now();
    let pending = proposals::get(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if pending.kind == ProposalKind::RolePermissions && !granted.0.has(Permission::RoleManage) {
        return Err(ApiError::MissingPermission(Permission::RoleManage.as_str()));
    }
    let mut tx = audit.begin().await?;
    let (
        proposal,
        Applied {
            before,
            after,
            credential,
        },
    ) = administration::approve(&mut tx, &state.identity, Some(&granted.0), id, now).await?;
    let reset = match (proposal.kind, proposal.target_user()) {
        (ProposalKind::UserResetPassword, Some(user)) => {
            Some(reset_answer(&state, &mut tx, user, credential.as_ref()).await?)
        }
        _ => None,
    };
    let note = AuditNote {
        resource_id: Some(id.to_string()),
        metadata: Some(serde_json::json!({
            "kind": proposal.kind.as_str(),
            "target": proposal.target,
            "proposed_by": proposal.proposed_by,
        })),
        values: Some((before, after)),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::OK, note).await?;
    let decided = proposals::get(&state.db, id).await?.unwrap_or(proposal);
    Ok(HttpResponse::Ok().json(Approval {
        proposal: ProposalView::of(&decided, now),
        reset,
    }))
}

/// Rejects a proposal (its proposer may withdraw it this way).
#[utoipa::path(
    post,
    path = "/api/admin/proposals/{id}/reject",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Proposal id")),
    responses(
        (status = 200, description = "Rejected", body = ProposalView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage` (permission_denied), or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such proposal", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Expired (proposal_expired) or already decided (proposal_decided)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reject(
    state: web::Data<ApiState>,
    granted: Granted,
    audit: Audit,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let now = state.rbac.now();
    let mut tx = audit.begin().await?;
    let proposal = administration::reject(&mut tx, granted.0.user, id, now).await?;
    let note = AuditNote {
        resource_id: Some(id.to_string()),
        metadata: Some(serde_json::json!({
            "kind": proposal.kind.as_str(),
            "target": proposal.target,
        })),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::OK, note).await?;
    let decided = proposals::get(&state.db, id).await?.unwrap_or(proposal);
    Ok(HttpResponse::Ok().json(ProposalView::of(&decided, now)))
}

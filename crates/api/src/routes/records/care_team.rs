//! Care teams (`care_team:manage`) and break-the-glass (`break_glass` to use it,
//! `security:read` to review it).
//!
//! Clinical routes answer 404 for a patient outside the caller's care team, exactly as for a
//! patient that does not exist. The care-team routes themselves serve those who manage teams
//! across the clinic, so they tell the two apart. Nobody puts themselves on a team; every
//! assignment names its reason, and each assignment and removal is audited with the
//! assignment before and after.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use clinicd_identity::users::UserId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::client_info;
use crate::extract::{Authenticated, Json};
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CareTeamMember {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub assigned_by: Option<Uuid>,
    pub assigned_at: DateTime<Utc>,
    /// Why they were assigned (absent for the patient's registrant and older assignments).
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    /// Another active user: nobody puts themselves on a care team.
    pub user_id: Uuid,
    /// Why they join the team: 10 to 500 printable characters. Stored encrypted.
    #[schema(min_length = 10, max_length = 500)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassRequest {
    /// Why the emergency access is needed: 20 to 1000 characters. Stored encrypted, shown to
    /// reviewers.
    pub reason: String,
}

/// Access granted until `expires_at`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BreakGlassGrant {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// An emergency access as a reviewer sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BreakGlassReview {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub patient_id: Uuid,
    pub reason: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The grant has not expired yet.
    pub active: bool,
    pub reviewed_by: Option<Uuid>,
    pub reviewed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// Only grants no one has reviewed yet (default true).
    pub pending: Option<bool>,
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

fn noted(mut response: HttpResponse, patient: Uuid, resource: Option<String>) -> HttpResponse {
    AuditNote {
        patient_id: Some(patient),
        resource_id: resource,
        ..AuditNote::default()
    }
    .attach(&mut response);
    response
}

/// The members of a patient's care team.
#[utoipa::path(
    get,
    path = "/api/patients/{id}/care-team",
    tag = "access",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, description = "The care team", body = [CareTeamMember]),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `care_team:manage` (permission_denied) or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let patient = id.into_inner();
    let members = state.rbac.members(patient).await?;
    let view: Vec<CareTeamMember> = members
        .into_iter()
        .map(|m| CareTeamMember {
            user_id: m.user_id,
            username: m.username,
            display_name: m.display_name,
            assigned_by: m.assigned_by,
            assigned_at: m.assigned_at,
            reason: m.reason,
        })
        .collect();
    Ok(noted(HttpResponse::Ok().json(view), patient, None))
}

/// Puts a user on a patient's care team (201; 200 if they already were).
#[utoipa::path(
    post,
    path = "/api/patients/{id}/care-team",
    tag = "access",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    request_body = AssignRequest,
    responses(
        (status = 201, description = "Assigned"),
        (status = 200, description = "Already on the team"),
        (status = 400, description = "Malformed JSON, an unknown field or a malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `care_team:manage` (permission_denied) or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such active user (invalid_field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn assign(
    state: web::Data<ApiState>,
    caller: Authenticated,
    audit: Audit,
    id: web::Path<Uuid>,
    body: Json<AssignRequest>,
) -> Result<HttpResponse, ApiError> {
    let patient = id.into_inner();
    let mut tx = audit.begin().await?;
    let added = state
        .rbac
        .assign(
            &mut tx,
            patient,
            UserId(body.user_id),
            caller.0.user_id,
            &body.reason,
        )
        .await?;
    let Some(added) = added else {
        // Already on the team: nothing changed (the layer records the request).
        drop(tx);
        return Ok(noted(
            HttpResponse::Ok().finish(),
            patient,
            Some(body.user_id.to_string()),
        ));
    };
    let note = AuditNote {
        patient_id: Some(patient),
        resource_id: Some(body.user_id.to_string()),
        values: Some((
            serde_json::Value::Null,
            serde_json::to_value(&added).unwrap_or_default(),
        )),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::CREATED, note).await?;
    Ok(HttpResponse::Created().finish())
}

/// Takes a user off a patient's care team.
#[utoipa::path(
    delete,
    path = "/api/patients/{id}/care-team/{user_id}",
    tag = "access",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id"), ("user_id" = Uuid, Path, description = "User id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `care_team:manage` (permission_denied) or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or the user is not on the team", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unassign(
    state: web::Data<ApiState>,
    audit: Audit,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (patient, user) = path.into_inner();
    let mut tx = audit.begin().await?;
    let removed = state
        .rbac
        .unassign(&mut tx, patient, UserId(user))
        .await?
        .ok_or(ApiError::NotFound)?;
    let note = AuditNote {
        patient_id: Some(patient),
        resource_id: Some(user.to_string()),
        values: Some((
            serde_json::to_value(&removed).unwrap_or_default(),
            serde_json::Value::Null,
        )),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::NO_CONTENT, note).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Emergency access to a patient outside the caller's care team, for a limited time. Recorded
/// as its own audit action, raised as a security event, and listed for review.
#[utoipa::path(
    post,
    path = "/api/patients/{id}/break-glass",
    tag = "access",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    request_body = BreakGlassRequest,
    responses(
        (status = 201, description = "Access granted until `expires_at`", body = BreakGlassGrant),
        (status = 400, description = "Malformed JSON, an unknown field or a malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `break_glass` (permission_denied) or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A reason shorter than 20 or longer than 1000 characters (invalid_field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn break_glass(
    req: HttpRequest,
    state: web::Data<ApiState>,
    caller: Authenticated,
    audit: Audit,
    id: web::Path<Uuid>,
    body: Json<BreakGlassRequest>,
) -> Result<HttpResponse, ApiError> {
    let patient = id.into_inner();
    let mut tx = audit.begin().await?;
    let grant = state
        .rbac
        .break_glass(
            &mut tx,
            caller.0.user_id,
            Some(caller.0.session_id),
            patient,
            &body.reason,
            &client_info(&req),
        )
        .await?;
    let note = AuditNote {
        patient_id: Some(patient),
        resource_id: Some(grant.id.to_string()),
        metadata: Some(serde_json::json!({ "expires_at": grant.expires_at })),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::CREATED, note).await?;
    Ok(HttpResponse::Created().json(BreakGlassGrant {
        id: grant.id,
        patient_id: grant.patient_id,
        granted_at: grant.granted_at,
        expires_at: grant.expires_at,
    }))
}

/// Emergency accesses for review, newest first.
#[utoipa::path(
    get,
    path = "/api/security/break-glass",
    tag = "access",
    security(("bearer" = [])),
    params(ReviewQuery),
    responses(
        (status = 200, description = "Grants with their reasons", body = [BreakGlassReview]),
        (status = 400, description = "A malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `security:read` (permission_denied) or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reviews(
    state: web::Data<ApiState>,
    query: web::Query<ReviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::InvalidParameters);
    }
    let grants = state
        .rbac
        .break_glass_reviews(query.pending.unwrap_or(true), limit)
        .await?;
    let ids: Vec<Uuid> = grants.iter().map(|g| g.id).collect();
    let patients: Vec<Uuid> = grants.iter().map(|g| g.patient_id).collect();
    let view: Vec<BreakGlassReview> = grants
        .into_iter()
        .map(|g| BreakGlassReview {
            id: g.id,
            user_id: g.user_id,
            username: g.username,
            patient_id: g.patient_id,
            reason: g.reason,
            granted_at: g.granted_at,
            expires_at: g.expires_at,
            active: g.active,
            reviewed_by: g.reviewed_by,
            reviewed_at: g.reviewed_at,
        })
        .collect();
    let mut response = HttpResponse::Ok().json(view);
    AuditNote {
        metadata: Some(serde_json::json!({ "returned": ids.len(), "ids": ids })),
        patients,
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// Marks an emergency access reviewed (not by the person who made it).
#[utoipa::path(
    post,
    path = "/api/security/break-glass/{id}/review",
    tag = "access",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Grant id")),
    responses(
        (status = 204, description = "Reviewed"),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `security:read`, or the reviewer's own access (own_review)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such grant", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn review(
    state: web::Data<ApiState>,
    caller: Authenticated,
    audit: Audit,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let grant = id.into_inner();
    let mut tx = audit.begin().await?;
    state
        .rbac
        .review_break_glass(&mut tx, grant, caller.0.user_id)
        .await?;
    let note = AuditNote {
        resource_id: Some(grant.to_string()),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::NO_CONTENT, note).await?;
    Ok(HttpResponse::NoContent().finish())
}

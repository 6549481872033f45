//! The data lifecycle (docs/lifecycle.md): legal holds (`lifecycle:hold`) and erasure requests
//! with their second-person approval and certificate of destruction (`lifecycle:erase`). Every
//! read and change is audited; changes commit with their event.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use clinicd_lifecycle::{Basis, HoldScope, LifecycleError, NewHold, erasure, holds};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::{Authenticated, Json};
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

impl From<LifecycleError> for ApiError {
    fn from(error: LifecycleError) -> Self {
        use LifecycleError as E;
        match error {
            E::NotFound => Self::NotFound,
            E::Held(hold) => Self::LegalHold(hold),
            E::Retained(why) => Self::RetentionApplies(why),
            E::OwnRequest => Self::OwnErasure,
            E::Decided => Self::Conflict("the request has already been decided"),
            E::AlreadyErased => Self::DataDestroyed,
            E::PendingExists => Self::Conflict("an erasure of this patient is already pending"),
            E::Released => Self::Conflict("the hold has already been released"),
            E::Invalid { field, reason } => Self::InvalidField { field, reason },
            E::Store(error) => error.into(),
            E::Files(error) => error.into(),
            E::Audit(_) => Self::Unavailable,
            E::Ledger(_) | E::Crypto(_) | E::Database(_) => Self::unexpected(error),
        }
    }
}

/// A legal hold. The reason and case reference must not name a patient.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HoldView {
    pub id: Uuid,
    /// `patients` or `all`.
    pub scope: String,
    pub patient_ids: Vec<Uuid>,
    pub reason: String,
    pub case_reference: String,
    pub placed_by: Uuid,
    pub placed_at: DateTime<Utc>,
    pub released_by: Option<Uuid>,
    pub released_at: Option<DateTime<Utc>>,
    pub release_reason: Option<String>,
}

impl From<holds::Hold> for HoldView {
    fn from(h: holds::Hold) -> Self {
        Self {
            id: h.id,
            scope: h.scope.as_str().into(),
            patient_ids: h.patients,
            reason: h.reason,
            case_reference: h.case_reference,
            placed_by: h.placed_by,
            placed_at: h.placed_at,
            released_by: h.released_by,
            released_at: h.released_at,
            release_reason: h.release_reason,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHoldRequest {
    /// `patients` (name them in `patient_ids`) or `all`.
    pub scope: String,
    /// 1 to 1000 patients for scope `patients`; none for `all`.
    #[serde(default)]
    pub patient_ids: Vec<Uuid>,
    /// Why (1 to 500 characters, no PHI).
    pub reason: String,
    /// The matter's reference (1 to 100 characters), e.g. a docket number.
    pub case_reference: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why (1 to 500 characters, no PHI).
    pub reason: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HoldQuery {
    /// Only holds in force (default true); false adds released ones.
    pub active: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ErasureQuery {
    /// Only pending requests (default false).
    pub pending: Option<bool>,
}

/// An erasure request and, once completed, its certificate of destruction.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErasureView {
    pub id: Uuid,
    pub patient_id: Uuid,
    /// `retention_expired`, `patient_request`, `court_order` or `created_in_error`.
    pub basis: String,
    pub reason: String,
    /// Absent: filed by the retention policy.
    pub requested_by: Option<Uuid>,
    pub requested_at: DateTime<Utc>,
    /// `pending`, `rejected` or `completed`.
    pub state: String,
    pub decided_by: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_reason: Option<String>,
    /// The certificate of destruction: ids, counts, key ids and the ledger entry; no PHI.
    #[schema(value_type = Option<Object>)]
    pub certificate: Option<serde_json::Value>,
}

impl From<erasure::ErasureRequest> for ErasureView {
    fn from(r: erasure::ErasureRequest) -> Self {
        let state = match r.state {
            erasure::RequestState::Pending => "pending",
            erasure::RequestState::Rejected => "rejected",
            erasure::RequestState::Completed => "completed",
        };
        Self {
            id: r.id,
            patient_id: r.patient_id,
            basis: r.basis.as_str().into(),
            reason: r.reason,
            requested_by: r.requested_by,
            requested_at: r.requested_at,
            state: state.into(),
            decided_by: r.decided_by,
            decided_at: r.decided_at,
            decision_reason: r.decision_reason,
            certificate: r.certificate,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewErasureRequest {
    pub patient_id: Uuid,
    /// `retention_expired`, `patient_request`, `court_order` (overrides retention) or
    /// `created_in_error` (overrides retention for a record without clinical notes). None
    /// overrides a legal hold.
    pub basis: String,
    /// Why (1 to 500 characters, no PHI).
    pub reason: String,
}

/// Legal holds, newest first.
#[utoipa::path(
    get,
    path = "/api/lifecycle/holds",
    tag = "lifecycle",
    security(("bearer" = [])),
    params(HoldQuery),
    responses(
        (status = 200, description = "Holds", body = Vec<HoldView>),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `lifecycle:hold`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_holds(
    state: web::Data<ApiState>,
    query: web::Query<HoldQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.db.acquire().await.map_err(ApiError::unexpected)?;
    let found = holds::list(&mut conn, query.active.unwrap_or(true)).await?;
    let view: Vec<HoldView> = found.into_iter().map(HoldView::from).collect();
    let mut response = HttpResponse::Ok().json(&view);
    AuditNote::with_metadata(serde_json::json!({ "returned": view.len() })).attach(&mut response);
    Ok(response)
}

/// Places a legal hold on patients or on everything: from then on nothing of theirs is deleted,
/// purged, archived or erased by any path until it is released.
#[utoipa::path(
    post,
    path = "/api/lifecycle/holds",
    tag = "lifecycle",
    security(("bearer" = [])),
    request_body = NewHoldRequest,
    responses(
        (status = 201, description = "Placed", body = HoldView),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `lifecycle:hold`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad scope, patients missing, unknown or given for `all`, a bad reason or case reference", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn place_hold(
    caller: Authenticated,
    audit: Audit,
    body: Json<NewHoldRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let scope = HoldScope::parse(&body.scope).ok_or_else(|| ApiError::InvalidField {
        field: "scope",
        reason: "must be `patients` or `all`".into(),
    })?;
    let hold = NewHold {
        scope,
        patients: body.patient_ids,
        reason: body.reason,
        case_reference: body.case_reference,
    };
    let mut tx = audit.begin().await?;
    let placed = holds::place(&mut tx, hold, caller.0.user_id.0, Utc::now()).await?;
    let note = AuditNote {
        resource_id: Some(placed.id.to_string()),
        patients: placed.patients.clone(),
        metadata: Some(
            serde_json::json!({ "scope": placed.scope, "patients": placed.patients.len() }),
        ),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::CREATED, note).await?;
    Ok(HttpResponse::Created().json(HoldView::from(placed)))
}

/// Releases a legal hold.
#[utoipa::path(
    post,
    path = "/api/lifecycle/holds/{id}/release",
    tag = "lifecycle",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Hold id")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "Released", body = HoldView),
        (status = 400, description = "Malformed body or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `lifecycle:hold`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such hold", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already released", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad reason", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn release_hold(
    caller: Authenticated,
    audit: Audit,
    id: web::Path<Uuid>,
    body: Json<ReasonRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut tx = audit.begin().await?;
    let released =
        holds::release(&mut tx, id, caller.0.user_id.0, &body.reason, Utc::now()).await?;
    let note = AuditNote {
        resource_id: Some(id.to_string()),
        metadata: Some(serde_json::json!({ "released": true })),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::OK, note).await?;
    Ok(HttpResponse::Ok().json(HoldView::from(released)))
}

/// Erasure requests, newest first.
#[utoipa::path(
    get,
    path = "/api/lifecycle/erasures",
    tag = "lifecycle",
    security(("bearer" = [])),
    params(ErasureQuery),
    responses(
        (status = 200, description = "Requests", body = Vec<ErasureView>),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `lifecycle:erase`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_erasures(
    state: web::Data<ApiState>,
    query: web::Query<ErasureQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.db.acquire().await.map_err(ApiError::unexpected)?;
    let found = erasure::list(&mut conn, query.pending.unwrap_or(false)).await?;
    let view: Vec<ErasureView> = found.into_iter().map(ErasureView::from).collect();
    let mut response = HttpResponse::Ok().json(&view);
    AuditNote::with_metadata(serde_json::json!({ "returned": view.len() })).attach(&mut response);
    Ok(response)
}

/// One erasure request, with its certificate once completed.
#[utoipa::path(
    get,
    path = "/api/lifecycle/erasures/{id}",
    tag = "lifecycle",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Request id")),
    responses(
        (status = 200, description = "The request", body = ErasureView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `lifecycle:erase`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_erasure(
    state: web::Data<ApiState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut conn = state.db.acquire().await.map_err(ApiError::unexpected)?;
    let found = erasure::get(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let mut response = HttpResponse::Ok().json(ErasureView::from(found));
    AuditNote {
        resource_id: Some(id.to_string()),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// Asks for a patient's erasure; another holder of `lifecycle:erase` approves it. Refused while
/// a legal hold covers the patient, and while retention keeps the record unless the basis
/// overrides retention.
#[utoipa::path(
    post,
    path = "/api/lifecycle/erasures",
    tag = "lifecycle",
    security(("bearer" = [])),
    request_body = NewErasureRequest,
    responses(
        (status = 201, description = "Filed, pending approval", body = ErasureView),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `lifecycle:erase`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A legal hold (legal_hold), retention (retention_applies) or a pending request (conflict)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Already erased", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad basis or reason", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn request_erasure(
    state: web::Data<ApiState>,
    caller: Authenticated,
    audit: Audit,
    body: Json<NewErasureRequest>,
) -> Result<HttpResponse, ApiError> {
    let basis = Basis::parse(&body.basis).ok_or_else(|| ApiError::InvalidField {
        field: "basis",
        reason: "must be retention_expired, patient_request, court_order or created_in_error"
            .into(),
    })?;
    let mut tx = audit.begin().await?;
    let filed = erasure::request(
        &state.lifecycle,
        &mut tx,
        body.patient_id,
        basis,
        &body.reason,
        Some(caller.0.user_id.0),
        Utc::now(),
    )
    .await?;
    let note = AuditNote {
        resource_id: Some(filed.id.to_string()),
        patient_id: Some(filed.patient_id),
        metadata: Some(serde_json::json!({ "basis": filed.basis })),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::CREATED, note).await?;
    Ok(HttpResponse::Created().json(ErasureView::from(filed)))
}

/// Approves a pending request and erases the patient at once: keys destroyed, indexes, notes,
/// appointments, files and objects deleted, the row reduced to a tombstone, the ledger
/// appended. Answers with the certificate of destruction.
#[utoipa::path(
    post,
    path = "/api/lifecycle/erasures/{id}/approve",
    tag = "lifecycle",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Request id")),
    responses(
        (status = 200, description = "Erased; the request carries its certificate", body = ErasureView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `lifecycle:erase`, or the caller asked for it (own_erasure)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A legal hold (legal_hold), retention (retention_applies), or already decided (conflict)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient is already erased", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The audit trail is unavailable: nothing was erased", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn approve_erasure(
    state: web::Data<ApiState>,
    caller: Authenticated,
    audit: Audit,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut tx = audit.begin().await?;
    let done = erasure::approve(
        &state.lifecycle,
        &mut tx,
        id,
        Some(caller.0.user_id.0),
        Utc::now(),
    )
    .await?;
    let note = AuditNote {
        resource_id: Some(id.to_string()),
        patient_id: Some(done.patient_id),
        metadata: Some(serde_json::json!({ "basis": done.basis, "certificate": done.certificate })),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::OK, note).await?;
    // Outside the database, after the commit: the ledger entry and the objects. A failure is
    // finished by the retention job or the next start; the erasure itself holds already.
    if let Err(error) = erasure::finish(&state.lifecycle).await {
        tracing::error!(%error, "an erasure's ledger entry or objects wait for the next run");
    }
    Ok(HttpResponse::Ok().json(ErasureView::from(done)))
}

/// Rejects a pending request (its requester may withdraw it the same way).
#[utoipa::path(
    post,
    path = "/api/lifecycle/erasures/{id}/reject",
    tag = "lifecycle",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Request id")),
    request_body = ReasonRequest,
    responses(
        (status = 200, description = "Rejected", body = ErasureView),
        (status = 400, description = "Malformed body or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `lifecycle:erase`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already decided", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad reason", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reject_erasure(
    caller: Authenticated,
    audit: Audit,
    id: web::Path<Uuid>,
    body: Json<ReasonRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut tx = audit.begin().await?;
    let done = erasure::reject(&mut tx, id, caller.0.user_id.0, &body.reason, Utc::now()).await?;
    let note = AuditNote {
        resource_id: Some(id.to_string()),
        patient_id: Some(done.patient_id),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::OK, note).await?;
    Ok(HttpResponse::Ok().json(ErasureView::from(done)))
}

//! Consents patients have signed (docs/lifecycle.md): today a 42 CFR Part 2 consent, which lets
//! an export to the recipient and for the purpose it names carry the patient's substance-use
//! notes until it expires or is revoked. Recorded, listed and revoked by the privacy office
//! (`export`, the permission that makes the disclosures), for any patient, like the export.
//! The terms are kept under the patient's key; the trail holds them only in sealed values.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use clinicd_domain::export::Purpose;
use clinicd_domain::{Consent, ConsentKind, Terms};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::{Authenticated, ExportablePatient, Json};
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

/// A consent as signed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    /// `part2_disclosure`: disclosure of substance-use treatment records (notes coded `ETH`).
    pub kind: String,
    /// Who may receive the records, as an export will name them (compared without case):
    /// 1 to 200 characters.
    pub recipient: String,
    /// `treatment`, `payment`, `operations`, `legal`, `public_health`, `research` or `other`
    /// (a patient's own access needs no consent).
    pub purpose: String,
    /// The day the patient signed, not in the future (YYYY-MM-DD).
    pub signed_on: String,
    /// The last day it is in force: on or after the signature and today, at most ten years on.
    pub expires_on: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeConsent {
    /// Why (the patient's written revocation, say): 5 to 500 printable characters. Kept in the
    /// sealed audit values.
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsentView {
    pub id: Uuid,
    pub patient_id: Uuid,
    /// `part2_disclosure`.
    pub kind: String,
    pub recipient: String,
    pub purpose: String,
    pub signed_on: NaiveDate,
    pub expires_on: NaiveDate,
    pub recorded_by: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub revoked_by: Option<Uuid>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Not revoked and not expired today.
    pub in_force: bool,
}

impl ConsentView {
    fn new(consent: &Consent, today: NaiveDate) -> Self {
        let terms = &consent.terms;
        Self {
            id: consent.id,
            patient_id: consent.patient_id,
            kind: kind_name(terms.kind).to_owned(),
            recipient: terms.recipient.clone(),
            purpose: terms.purpose.as_str().to_owned(),
            signed_on: terms.signed_on,
            expires_on: terms.expires_on,
            recorded_by: consent.recorded_by,
            recorded_at: consent.recorded_at,
            revoked_by: consent.revoked_by,
            revoked_at: consent.revoked_at,
            in_force: consent.revoked_at.is_none()
                && terms.signed_on <= today
                && today <= terms.expires_on,
        }
    }
}

fn kind_name(kind: ConsentKind) -> &'static str {
    match kind {
        ConsentKind::Part2Disclosure => "part2_disclosure",
    }
}

fn invalid(field: &'static str, reason: &str) -> ApiError {
    ApiError::InvalidField {
        field,
        reason: reason.to_owned(),
    }
}

/// The request's terms, each field checked (422 naming the field).
fn terms(body: &NewConsent, today: NaiveDate) -> Result<Terms, ApiError> {
    let kind = match body.kind.as_str() {
        "part2_disclosure" => ConsentKind::Part2Disclosure,
        _ => return Err(invalid("kind", "must be part2_disclosure")),
    };
    let recipient = clinicd_domain::export::recipient(&body.recipient)?;
    let purpose: Purpose = serde_json::from_value(serde_json::Value::String(body.purpose.clone()))
        .map_err(|_| {
            invalid(
                "purpose",
                "must be treatment, payment, operations, legal, public_health, research or other",
            )
        })?;
    let date = |field: &'static str, value: &str| {
        clinicd_domain::types::iso_date(value)
            .ok_or_else(|| invalid(field, "must be a date as YYYY-MM-DD"))
    };
    let terms = Terms {
        kind,
        recipient,
        purpose,
        signed_on: date("signed_on", &body.signed_on)?,
        expires_on: date("expires_on", &body.expires_on)?,
    };
    Ok(terms.validate(today)?)
}

/// Records a consent the patient signed.
#[utoipa::path(
    post,
    path = "/api/patients/{id}/consents",
    tag = "consents",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    request_body = NewConsent,
    responses(
        (status = 201, description = "Recorded", body = ConsentView),
        (status = 400, description = "A malformed id or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `export` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased (data_destroyed)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad kind, recipient, purpose or date (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn record(
    state: web::Data<ApiState>,
    audit: Audit,
    ExportablePatient(patient): ExportablePatient,
    caller: Authenticated,
    body: Json<NewConsent>,
) -> Result<HttpResponse, ApiError> {
    let now = state.rbac.now();
    let terms = terms(&body, now.date_naive())?;
    let mut tx = audit.begin().await?;
    let consent = state
        .consents
        .record(&mut tx, patient.id, terms, caller.0.user_id.0, now)
        .await?;
    let view = ConsentView::new(&consent, now.date_naive());
    let note = AuditNote {
        patient_id: Some(patient.id),
        resource_id: Some(consent.id.to_string()),
        values: Some((serde_json::Value::Null, serde_json::json!(&view))),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::CREATED, note).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/consents/{}", consent.id)))
        .json(view))
}

/// A patient's consents, oldest first, revoked and expired ones included.
#[utoipa::path(
    get,
    path = "/api/patients/{id}/consents",
    tag = "consents",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, description = "The consents", body = [ConsentView]),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `export` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased (data_destroyed)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    ExportablePatient(patient): ExportablePatient,
) -> Result<HttpResponse, ApiError> {
    let today = state.rbac.now().date_naive();
    let consents = state.consents.for_patient(patient.id).await?;
    let view: Vec<ConsentView> = consents
        .iter()
        .map(|c| ConsentView::new(c, today))
        .collect();
    let mut response = HttpResponse::Ok().json(&view);
    AuditNote {
        patient_id: Some(patient.id),
        metadata: Some(serde_json::json!({ "returned": view.len() })),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// Revokes a consent (the patient may revoke a Part 2 consent at any time, §2.31(a)(6)): from
/// now on no export carries substance-use notes under it.
#[utoipa::path(
    post,
    path = "/api/consents/{id}/revoke",
    tag = "consents",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Consent id")),
    request_body = RevokeConsent,
    responses(
        (status = 200, description = "Revoked", body = ConsentView),
        (status = 400, description = "A malformed id or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `export` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such consent", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already revoked (conflict)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The patient was erased (data_destroyed)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad reason (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    state: web::Data<ApiState>,
    audit: Audit,
    id: web::Path<Uuid>,
    caller: Authenticated,
    body: Json<RevokeConsent>,
) -> Result<HttpResponse, ApiError> {
    let reason = crate::routes::reason_text("reason", &body.reason)?;
    let consent = state
        .consents
        .get(id.into_inner())
        .await?
        .ok_or(ApiError::NotFound)?;
    let now = state.rbac.now();
    let mut tx = audit.begin().await?;
    let revoked = state
        .consents
        .revoke(&mut tx, &consent, caller.0.user_id.0, now)
        .await?;
    let view = ConsentView::new(&revoked, now.date_naive());
    let note = AuditNote {
        patient_id: Some(consent.patient_id),
        resource_id: Some(consent.id.to_string()),
        values: Some((
            serde_json::json!(ConsentView::new(&consent, now.date_naive())),
            serde_json::json!({ "consent": &view, "reason": reason }),
        )),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::OK, note).await?;
    Ok(HttpResponse::Ok().json(view))
}

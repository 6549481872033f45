//! Clinical notes: write a draft, edit it, sign it, amend a signed note, read a note, a
//! patient's notes and a note's history. A note is reached through its patient's care team;
//! outside it a note id answers like one that does not exist.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use clinicd_domain::Note;
use clinicd_domain::note::{body as note_body, encounter_date};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::{Json, ReachableNote, ReachablePatientId};
use crate::precondition::{etag, if_match};
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// `YYYY-MM-DD`, not in the future.
    pub encounter_date: String,
    /// 1 to 50,000 characters.
    pub body: String,
}

/// A draft change: fields left out stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteEdit {
    pub encounter_date: Option<String>,
    pub body: Option<String>,
}

/// An amendment; its encounter date defaults to the original's.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmendmentRequest {
    pub encounter_date: Option<String>,
    pub body: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NoteView {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub author_id: Uuid,
    pub encounter_date: NaiveDate,
    pub body: String,
    /// The signed note this one corrects.
    pub amends: Option<Uuid>,
    /// `draft` or `signed`.
    pub status: String,
    pub signed_at: Option<DateTime<Utc>>,
    /// Also the `ETag`.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Note> for NoteView {
    fn from(n: &Note) -> Self {
        Self {
            id: n.id,
            patient_id: n.patient_id,
            author_id: n.author_id,
            encounter_date: n.encounter_date,
            body: n.body.clone(),
            amends: n.amends,
            status: if n.signed() { "signed" } else { "draft" }.to_owned(),
            signed_at: n.signed_at,
            version: n.version,
            created_at: n.created_at,
            updated_at: n.updated_at,
        }
    }
}

fn one(mut response: HttpResponse, note: &Note) -> HttpResponse {
    set_etag(&mut response, note);
    AuditNote {
        patient_id: Some(note.patient_id),
        resource_id: Some(note.id.to_string()),
        ..AuditNote::default()
    }
    .attach(&mut response);
    response
}

fn set_etag(response: &mut HttpResponse, note: &Note) {
    if let Ok(value) = header::HeaderValue::from_str(&etag(note.version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

/// The note as an audit before/after value (sealed under the audit key).
fn value(note: &Note) -> serde_json::Value {
    serde_json::to_value(NoteView::from(note)).unwrap_or_default()
}

/// Commits a change to a note with its event (the note before and after) and answers it.
async fn committed(
    audit: &Audit,
    tx: Transaction<'static, Postgres>,
    status: StatusCode,
    before: Option<&Note>,
    after: &Note,
) -> Result<HttpResponse, ApiError> {
    let note = AuditNote {
        patient_id: Some(after.patient_id),
        resource_id: Some(after.id.to_string()),
        metadata: after
            .amends
            .map(|original| serde_json::json!({ "amends": original })),
        values: Some((before.map(value).unwrap_or_default(), value(after))),
        ..AuditNote::default()
    };
    audit.commit(tx, status, note).await?;
    let mut response = HttpResponse::build(status);
    if status == StatusCode::CREATED {
        response.insert_header((header::LOCATION, format!("/api/notes/{}", after.id)));
    }
    let mut response = response.json(NoteView::from(after));
    set_etag(&mut response, after);
    Ok(response)
}

fn many(notes: &[Note], patient: Uuid) -> HttpResponse {
    let ids: Vec<Uuid> = notes.iter().map(|n| n.id).collect();
    let mut response =
        HttpResponse::Ok().json(notes.iter().map(NoteView::from).collect::<Vec<_>>());
    AuditNote {
        patient_id: Some(patient),
        metadata: Some(serde_json::json!({ "returned": ids.len(), "ids": ids })),
        ..AuditNote::default()
    }
    .attach(&mut response);
    response
}

fn today(state: &ApiState) -> NaiveDate {
    state.rbac.now().date_naive()
}

/// Writes a draft note for a patient in the caller's care team.
#[utoipa::path(
    post,
    path = "/api/patients/{id}/notes",
    tag = "notes",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    request_body = NoteRequest,
    responses(
        (status = 201, description = "The draft", body = NoteView),
        (status = 400, description = "Malformed JSON, an unknown field or a malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `note:write` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad date or body (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<NoteRequest>,
    patient: ReachablePatientId,
) -> Result<HttpResponse, ApiError> {
    let date = encounter_date(&body.encounter_date, today(&state))?;
    let text = note_body(&body.body)?;
    let mut tx = audit.begin().await?;
    let note = state
        .notes
        .create(&mut tx, patient.0, patient.user().0, date, &text, None)
        .await?;
    committed(&audit, tx, StatusCode::CREATED, None, &note).await
}

/// A patient's notes, newest encounter first.
#[utoipa::path(
    get,
    path = "/api/patients/{id}/notes",
    tag = "notes",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, description = "The notes", body = [NoteView]),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `note:read` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    patient: ReachablePatientId,
) -> Result<HttpResponse, ApiError> {
    let notes = state.notes.for_patient(patient.0).await?;
    Ok(many(&notes, patient.0))
}

/// One note.
#[utoipa::path(
    get,
    path = "/api/notes/{id}",
    tag = "notes",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Note id")),
    responses(
        (status = 200, description = "The note; `ETag` is its version", body = NoteView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `note:read` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such note, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn read(note: ReachableNote) -> Result<HttpResponse, ApiError> {
    Ok(one(HttpResponse::Ok().json(NoteView::from(&*note)), &note))
}

/// Edits a draft (its author only). Needs `If-Match`.
#[utoipa::path(
    patch,
    path = "/api/notes/{id}",
    tag = "notes",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Note id"),
        ("If-Match" = String, Header, description = "The ETag of the version being changed"),
    ),
    request_body = NoteEdit,
    responses(
        (status = 200, description = "The draft after the change", body = NoteView),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `note:write`, or not the author (not_author)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such note, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The note is signed (note_signed)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (precondition_failed)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad date or body (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No If-Match (precondition_required)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn edit(
    req: HttpRequest,
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<NoteEdit>,
    note: ReachableNote,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match(&req)?;
    let date = body
        .encounter_date
        .as_deref()
        .map(|d| encounter_date(d, today(&state)))
        .transpose()?;
    let text = body.body.as_deref().map(note_body).transpose()?;
    let mut tx = audit.begin().await?;
    let edited = state
        .notes
        .edit(
            &mut tx,
            &note,
            note.user().0,
            expected,
            date,
            text.as_deref(),
        )
        .await?;
    committed(&audit, tx, StatusCode::OK, Some(&note), &edited).await
}

/// Signs a draft (its author only): from then on it never changes. Needs `If-Match`.
#[utoipa::path(
    post,
    path = "/api/notes/{id}/sign",
    tag = "notes",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Note id"),
        ("If-Match" = String, Header, description = "The ETag of the version being signed"),
    ),
    responses(
        (status = 200, description = "The signed note", body = NoteView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `note:write`, or not the author (not_author)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such note, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already signed (note_signed)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (precondition_failed)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No If-Match (precondition_required)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn sign(
    req: HttpRequest,
    state: web::Data<ApiState>,
    audit: Audit,
    note: ReachableNote,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match(&req)?;
    let mut tx = audit.begin().await?;
    let signed = state
        .notes
        .sign(&mut tx, &note, note.user().0, expected)
        .await?;
    committed(&audit, tx, StatusCode::OK, Some(&note), &signed).await
}

/// Amends a signed note: a new draft linked to the original, which stays as it was.
#[utoipa::path(
    post,
    path = "/api/notes/{id}/amendments",
    tag = "notes",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The note being amended")),
    request_body = AmendmentRequest,
    responses(
        (status = 201, description = "The amendment, a draft", body = NoteView),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `note:write` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such note, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The note is not signed yet: edit it instead (note_not_signed)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad date or body (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn amend(
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<AmendmentRequest>,
    original: ReachableNote,
) -> Result<HttpResponse, ApiError> {
    let date = match body.encounter_date.as_deref() {
        Some(d) => encounter_date(d, today(&state))?,
        None => original.encounter_date,
    };
    let text = note_body(&body.body)?;
    let mut tx = audit.begin().await?;
    let amendment = state
        .notes
        .create(
            &mut tx,
            original.patient_id,
            original.user().0,
            date,
            &text,
            Some(&original),
        )
        .await?;
    committed(&audit, tx, StatusCode::CREATED, None, &amendment).await
}

/// The original note and its amendments, oldest first.
#[utoipa::path(
    get,
    path = "/api/notes/{id}/history",
    tag = "notes",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Any note of the history")),
    responses(
        (status = 200, description = "Original first, then amendments", body = [NoteView]),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `note:read` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such note, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn history(
    state: web::Data<ApiState>,
    note: ReachableNote,
) -> Result<HttpResponse, ApiError> {
    let notes = state.notes.history(&note).await?;
    Ok(many(&notes, note.patient_id))
}

//! Clinical notes: write a draft, edit it, sign it, amend a signed note, read a note, a
//! patient's notes and a note's history, relabel a note. A note is reached through its
//! patient's care team; outside it a note id answers like one that does not exist. A note
//! labelled restricted (docs/lifecycle.md) shows its content only to a caller who holds the
//! permission of each of its codes and reaches the patient as the label allows: others get
//! `403 restricted_content` naming the label, and lists show its id and label without content.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use clinicd_domain::note::{body as note_body, encounter_date};
use clinicd_domain::{Draft, Label, Note};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::{Granted, Json, ReachableNote, ReachablePatientId};
use crate::precondition::{etag, if_match};
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

use super::{guard, readable};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// `YYYY-MM-DD`, not in the future.
    pub encounter_date: String,
    /// 1 to 50,000 characters.
    pub body: String,
    /// HL7 confidentiality: `N` (default), `R` or `V`.
    pub confidentiality: Option<String>,
    /// HL7 sensitivity codes: `PSY`, `PSYTHPN`, `ETH`, `HIV`, `STD`, `SEX`, `GDIS`, `SDV`
    /// (any of them makes the note at least `R`).
    #[serde(default)]
    pub sensitivity: Vec<String>,
}

/// A new label for a note, with the reason (kept sealed in the audit trail).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    /// `N`, `R` or `V`.
    pub confidentiality: String,
    #[serde(default)]
    pub sensitivity: Vec<String>,
    /// Why (5 to 500 characters).
    pub reason: String,
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
    /// Absent (null) when the label withholds the content from the caller (`withheld`).
    pub body: Option<String>,
    /// The content is withheld from the caller by the label.
    pub withheld: bool,
    /// HL7 confidentiality code: `N`, `R` or `V`.
    pub confidentiality: String,
    /// HL7 sensitivity codes.
    pub sensitivity: Vec<String>,
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
            body: Some(n.body.clone()),
            withheld: false,
            confidentiality: n.label.confidentiality.as_str().to_owned(),
            sensitivity: n.label.codes(),
            amends: n.amends,
            status: if n.signed() { "signed" } else { "draft" }.to_owned(),
            signed_at: n.signed_at,
            version: n.version,
            created_at: n.created_at,
            updated_at: n.updated_at,
        }
    }
}

impl NoteView {
    /// The note as a caller who may not read its content sees it: id, label, dates.
    fn withheld(n: &Note) -> Self {
        Self {
            body: None,
            withheld: true,
            ..Self::from(n)
        }
    }
}

fn one(mut response: HttpResponse, note: &Note) -> HttpResponse {
    set_etag(&mut response, note);
    // The trail keeps the confidentiality level only: a code such as HIV beside a patient id
    // is itself sensitive.
    AuditNote {
        patient_id: Some(note.patient_id),
        resource_id: Some(note.id.to_string()),
        metadata: Some(
            serde_json::json!({ "confidentiality": note.label.confidentiality.as_str() }),
        ),
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
        metadata: Some(match after.amends {
            Some(original) => serde_json::json!({ "amends": original,
                "confidentiality": after.label.confidentiality.as_str() }),
            None => serde_json::json!({ "confidentiality": after.label.confidentiality.as_str() }),
        }),
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

fn many(notes: &[Note], patient: Uuid, readable: impl Fn(&Note) -> bool) -> HttpResponse {
    let ids: Vec<Uuid> = notes.iter().map(|n| n.id).collect();
    let views: Vec<NoteView> = notes
        .iter()
        .map(|n| {
            if readable(n) {
                NoteView::from(n)
            } else {
                NoteView::withheld(n)
            }
        })
        .collect();
    let withheld = views.iter().filter(|v| v.withheld).count();
    let mut response = HttpResponse::Ok().json(views);
    AuditNote {
        patient_id: Some(patient),
        metadata: Some(
            serde_json::json!({ "returned": ids.len(), "ids": ids, "withheld": withheld }),
        ),
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
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    let date = encounter_date(&body.encounter_date, today(&state))?;
    let text = note_body(&body.body)?;
    // At least the patient's own label, the floor of their record.
    let label = Label::parse(body.confidentiality.as_deref(), &body.sensitivity)?
        .at_least(&state.patients.label(patient.0).await?);
    // No one labels a note so that they could not read it themselves.
    guard(&state, &grants, patient.reach(), &label)?;
    let mut tx = audit.begin().await?;
    let note = state
        .notes
        .create(
            &mut tx,
            Draft {
                patient: patient.0,
                author: patient.user().0,
                encounter_date: date,
                body: &text,
                label: &label,
            },
            None,
        )
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
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    let notes = state.notes.for_patient(patient.0).await?;
    let reach = patient.reach();
    Ok(many(&notes, patient.0, |n| {
        readable(&state, &grants, reach, &n.label)
    }))
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
pub async fn read(
    state: web::Data<ApiState>,
    note: ReachableNote,
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    guard(&state, &grants, note.reach(), &note.label)?;
    Ok(one(HttpResponse::Ok().json(NoteView::from(&*note)), &note))
}

/// Changes a note's label (signed notes too), with a reason. The caller must be able to read
/// the note under both labels.
#[utoipa::path(
    put,
    path = "/api/notes/{id}/label",
    tag = "notes",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Note id")),
    request_body = LabelRequest,
    responses(
        (status = 200, description = "The note with its new label", body = NoteView),
        (status = 400, description = "Malformed JSON, an unknown field or a malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `note:write`, or a label the caller could not read (restricted_content)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such note, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad code or reason (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn relabel(
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<LabelRequest>,
    note: ReachableNote,
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    let label = Label::parse(Some(&body.confidentiality), &body.sensitivity)?;
    let reason = crate::routes::reason_text("reason", &body.reason)?;
    guard(&state, &grants, note.reach(), &note.label)?;
    guard(&state, &grants, note.reach(), &label)?;
    let mut tx = audit.begin().await?;
    let relabelled = state.notes.relabel(&mut tx, &note, &label).await?;
    let audit_note = super::relabel_note(note.patient_id, note.id, &note.label, &label, reason);
    audit.commit(tx, StatusCode::OK, audit_note).await?;
    let mut response = HttpResponse::Ok().json(NoteView::from(&relabelled));
    set_etag(&mut response, &relabelled);
    Ok(response)
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
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    guard(&state, &grants, note.reach(), &note.label)?;
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
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    guard(&state, &grants, note.reach(), &note.label)?;
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
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    guard(&state, &grants, original.reach(), &original.label)?;
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
            Draft {
                patient: original.patient_id,
                author: original.user().0,
                encounter_date: date,
                body: &text,
                // An amendment carries its original's label.
                label: &original.label,
            },
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
    Granted(grants): Granted,
) -> Result<HttpResponse, ApiError> {
    let notes = state.notes.history(&note).await?;
    let reach = note.reach();
    Ok(many(&notes, note.patient_id, |n| {
        readable(&state, &grants, reach, &n.label)
    }))
}

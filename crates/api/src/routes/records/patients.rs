//! Patients: register, read, change (with `If-Match`) and search.
//!
//! Reads and searches reach only the caller's care team (and unexpired break-the-glass grants);
//! a patient outside it is answered exactly like one that does not exist (404, or absent from
//! results). Without `patient:read_identifiers` the SSN and insurance member numbers are
//! masked, and searching by SSN is refused. Searches take their criteria in a POST body, so
//! identifiers never appear in a URL (proxies and access logs keep URLs); the audit event of
//! a search names the ids it returned, never the criteria.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
pub use clinicd_domain::export::Purpose;
use clinicd_domain::export::{self, PatientRecord};
use clinicd_domain::patient_form::{self, SearchCriteria, body_of, parse};
pub use clinicd_domain::patient_form::{
    AddressBody, EmergencyContactBody, InsuranceBody, PatientBody, PatientPatch,
};
use clinicd_domain::{Patient, PatientData, Search, Viewer};
use clinicd_identity::sessions::{Principal, SessionCheck};
use clinicd_rbac::{Grants, Identifiers, Permission};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::caller::{self, Admitted};
use crate::extract::reachable::Confirming;
use crate::extract::{
    Authenticated, ExportablePatient, Granted, Json, ReachablePatient, ReachablePatientId,
};
use crate::precondition::{etag, if_match};
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

/// A patient as a caller sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PatientView {
    pub id: Uuid,
    /// Medical record number: 9 digits, the last a Luhn check digit.
    pub mrn: String,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: NaiveDate,
    pub sex: String,
    /// `AAA-GG-SSSS` for callers with `patient:read_identifiers`; otherwise masked as
    /// `***-**-` and the last four digits.
    pub ssn: Option<String>,
    pub address: Option<AddressBody>,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// The member number is masked without `patient:read_identifiers`.
    pub insurance_primary: Option<InsuranceBody>,
    /// The member number is masked without `patient:read_identifiers`.
    pub insurance_secondary: Option<InsuranceBody>,
    pub emergency_contact: Option<EmergencyContactBody>,
    pub status: String,
    /// Also the `ETag`; send it as `If-Match` to change the record.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Search criteria: exactly one of `mrn`, `ssn` (needs `patient:read_identifiers`),
/// `family_name` with `date_of_birth`, or `name` (1 to 3 words, each matching a word of the
/// given or family name, case- and accent-insensitively). With none, the caller's own patients.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub mrn: Option<String>,
    pub ssn: Option<String>,
    pub family_name: Option<String>,
    pub date_of_birth: Option<String>,
    pub name: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// 1 to 100 (default 20).
    pub limit: Option<usize>,
}

impl SearchRequest {
    fn criteria(&self) -> SearchCriteria<'_> {
        SearchCriteria {
            mrn: self.mrn.as_deref(),
            ssn: self.ssn.as_deref(),
            family_name: self.family_name.as_deref(),
            date_of_birth: self.date_of_birth.as_deref(),
            name: self.name.as_deref(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PatientPage {
    pub patients: Vec<PatientView>,
    /// Send as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<Uuid>,
}

// ---- views -----------------------------------------------------------------------------

pub fn view(patient: &Patient, identifiers: Identifiers) -> PatientView {
    let body = body_of(&patient.data);
    let mask = |i: InsuranceBody| InsuranceBody {
        member_number: identifiers.member_number(&i.member_number),
        payer: i.payer,
    };
    PatientView {
        id: patient.id,
        mrn: patient.mrn.clone(),
        given_name: body.given_name,
        family_name: body.family_name,
        date_of_birth: patient.data.date_of_birth.date(),
        sex: body.sex,
        ssn: body.ssn.map(|s| identifiers.ssn(&s)),
        address: body.address,
        phone: body.phone,
        email: body.email,
        insurance_primary: body.insurance_primary.map(mask),
        insurance_secondary: body.insurance_secondary.map(mask),
        emergency_contact: body.emergency_contact,
        status: body.status.unwrap_or_default(),
        version: patient.version,
        created_at: patient.created_at,
        updated_at: patient.updated_at,
    }
}

fn identifiers_name(identifiers: Identifiers) -> &'static str {
    match identifiers {
        Identifiers::Clear => "clear",
        Identifiers::Masked => "masked",
    }
}

/// Sets the ETag and the audit note of a one-patient response.
fn with_patient(
    response: HttpResponse,
    patient: &Patient,
    access: &'static str,
    identifiers: Identifiers,
) -> HttpResponse {
    let mut response = with_etag(response, patient);
    patient_note(patient, access, identifiers, None).attach(&mut response);
    response
}

fn with_etag(mut response: HttpResponse, patient: &Patient) -> HttpResponse {
    if let Ok(value) = header::HeaderValue::from_str(&etag(patient.version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The audit note of a one-patient request; `access` is how the caller reached the patient
/// (`care_team` or `break_glass`).
fn patient_note(
    patient: &Patient,
    access: &'static str,
    identifiers: Identifiers,
    values: Option<(serde_json::Value, serde_json::Value)>,
) -> AuditNote {
    AuditNote {
        patient_id: Some(patient.id),
        resource_id: Some(patient.id.to_string()),
        metadata: Some(serde_json::json!({
            "access": access,
            "identifiers": identifiers_name(identifiers),
        })),
        values,
        ..AuditNote::default()
    }
}

/// The record as an audit before/after value (sealed under the audit key by the audit layer).
fn sealed_value(data: &PatientData) -> serde_json::Value {
    serde_json::to_value(body_of(data)).unwrap_or_default()
}

// ---- handlers --------------------------------------------------------------------------

/// Registers a patient. The caller joins the patient's care team in the same transaction.
#[utoipa::path(
    post,
    path = "/api/patients",
    tag = "patients",
    security(("bearer" = [])),
    request_body = PatientBody,
    responses(
        (status = 201, description = "Registered; `Location` and `ETag` are set", body = PatientView),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `patient:write` (permission_denied) or a privileged role without MFA", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field fails validation; `field` names it (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<ApiState>,
    caller: Authenticated,
    granted: Granted,
    audit: Audit,
    body: Json<PatientBody>,
) -> Result<HttpResponse, ApiError> {
    let data = parse(&body, state.rbac.now().date_naive())?;
    let user = caller.0.user_id;
    let prepared = state.patients.prepare(&data).await?;
    let mut tx = audit.begin().await?;
    let patient = state.patients.register(&mut tx, &prepared, user).await?;
    let identifiers = Identifiers::for_caller(&granted.0);
    let note = patient_note(
        &patient,
        "care_team",
        identifiers,
        Some((serde_json::Value::Null, sealed_value(&data))),
    );
    audit.commit(tx, StatusCode::CREATED, note).await?;
    let response = HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/patients/{}", patient.id)))
        .json(view(&patient, identifiers));
    Ok(with_etag(response, &patient))
}

/// One patient, with identifiers masked unless the caller holds `patient:read_identifiers`.
#[utoipa::path(
    get,
    path = "/api/patients/{id}",
    tag = "patients",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, description = "The patient; `ETag` is its version", body = PatientView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `patient:read` (permission_denied) or a privileged role without MFA", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn read(granted: Granted, patient: ReachablePatient) -> Result<HttpResponse, ApiError> {
    let identifiers = Identifiers::for_caller(&granted.0);
    let response = HttpResponse::Ok().json(view(&patient, identifiers));
    Ok(with_patient(
        response,
        &patient,
        patient.reach().as_str(),
        identifiers,
    ))
}

/// Changes a patient: fields left out stay, `null` clears an optional one. Needs `If-Match`.
#[utoipa::path(
    patch,
    path = "/api/patients/{id}",
    tag = "patients",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Patient id"),
        ("If-Match" = String, Header, description = "The ETag of the version being changed"),
    ),
    request_body = PatientPatch,
    responses(
        (status = 200, description = "The patient after the change, with its new `ETag`", body = PatientView),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `patient:write` (permission_denied) or a privileged role without MFA", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The patient changed since that version (precondition_failed)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field fails validation; `field` names it (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No If-Match (precondition_required)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    req: HttpRequest,
    state: web::Data<ApiState>,
    granted: Granted,
    audit: Audit,
    patch: Json<PatientPatch>,
    current: ReachablePatient,
) -> Result<HttpResponse, ApiError> {
    let (id, reach) = (current.id, current.reach());
    // If-Match must be there (428), then the change is judged on its own (422), then the
    // version compared (412): a malformed change is refused as such whatever version it names.
    let expected = if_match(&req)?;
    let today = state.rbac.now().date_naive();
    patient_form::check_patch(&patch, today)?;
    if current.version != expected {
        return Err(ApiError::PreconditionFailed);
    }
    let data = patient_form::patched(&current.data, patch.into_inner(), today)?;
    let change = state.patients.prepare_change(id, &data).await?;
    let mut tx = audit.begin().await?;
    let patient = state.patients.update(&mut tx, &change, expected).await?;
    let identifiers = Identifiers::for_caller(&granted.0);
    let note = patient_note(
        &patient,
        reach.as_str(),
        identifiers,
        Some((sealed_value(&current.data), sealed_value(&data))),
    );
    audit.commit(tx, StatusCode::OK, note).await?;
    let response = HttpResponse::Ok().json(view(&patient, identifiers));
    Ok(with_etag(response, &patient))
}

fn mode_name(search: &Search) -> &'static str {
    match search {
        Search::Mrn(_) => "mrn",
        Search::Ssn(_) => "ssn",
        Search::FamilyNameAndBirth(..) => "family_name_and_date_of_birth",
        Search::NameTokens(_) => "name",
        Search::Mine => "care_team",
    }
}

/// Finds patients in the caller's care team.
#[utoipa::path(
    post,
    path = "/api/patients/search",
    tag = "patients",
    security(("bearer" = [])),
    request_body = SearchRequest,
    responses(
        (status = 200, description = "One page of matches, by id", body = PatientPage),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `patient:read`, or an SSN search without `patient:read_identifiers` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Criteria that do not parse, or more than one kind (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn search(
    req: HttpRequest,
    state: web::Data<ApiState>,
    caller: Admitted,
    granted: Granted,
    body: Json<SearchRequest>,
) -> Result<HttpResponse, ApiError> {
    let limit = body.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::InvalidField {
            field: "limit",
            reason: "must be 1 to 100".into(),
        });
    }
    let search = patient_form::search(&body.criteria(), state.rbac.now().date_naive())?;
    let page = Page {
        cursor: body.cursor,
        limit,
    };
    let (found, next, grants) = match caller {
        Admitted::Confirmed(principal) => {
            let (found, next) = find(&state, &search, &principal, &granted.0, page, None)
                .await
                .map_err(Confirming::into_error)?;
            (found, next, granted.0)
        }
        Admitted::Provisional(provisional) => {
            let remembered = &provisional.0;
            let check = Some(&remembered.check);
            match find(
                &state,
                &search,
                &remembered.principal,
                &granted.0,
                page,
                check,
            )
            .await
            {
                Ok((found, next)) => {
                    caller::confirmed(&req, &state, &provisional);
                    (found, next, granted.0)
                }
                Err(Confirming::Failed(error)) => return Err(error),
                Err(Confirming::Unconfirmed) => {
                    let (principal, grants) =
                        caller::check_in_full(&req, &state, &provisional).await?;
                    let (found, next) = find(&state, &search, &principal, &grants, page, None)
                        .await
                        .map_err(Confirming::into_error)?;
                    (found, next, grants)
                }
            }
        }
    };
    let identifiers = Identifiers::for_caller(&grants);
    let ids: Vec<Uuid> = found.iter().map(|p| p.id).collect();
    let mut response = HttpResponse::Ok().json(PatientPage {
        patients: found.iter().map(|p| view(p, identifiers)).collect(),
        next_cursor: next,
    });
    AuditNote {
        metadata: Some(serde_json::json!({
            "mode": mode_name(&search),
            "returned": ids.len(),
            "ids": ids,
            "identifiers": identifiers_name(identifiers),
        })),
        // Each patient returned is disclosed to the caller: in their accounting too.
        patients: ids.clone(),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// Which page of a search.
#[derive(Debug, Clone, Copy)]
struct Page {
    cursor: Option<Uuid>,
    limit: usize,
}

/// One page of a search for `caller` with `grants`; with `session`, the candidate statement
/// also confirms the caller's remembered session.
async fn find(
    state: &ApiState,
    search: &Search,
    caller: &Principal,
    grants: &Grants,
    page: Page,
    session: Option<&SessionCheck>,
) -> Result<(Vec<Patient>, Option<Uuid>), Confirming> {
    if matches!(search, Search::Ssn(_)) && !grants.has(Permission::PatientReadIdentifiers) {
        return Err(Confirming::Failed(ApiError::MissingPermission(
            Permission::PatientReadIdentifiers.as_str(),
        )));
    }
    let viewer = Viewer {
        user: caller.user_id.0,
        now: state.rbac.now(),
    };
    Ok(state
        .patients
        .search(search, viewer, page.cursor, page.limit, session)
        .await?)
}

/// To whom a record goes out, and why: both are kept in the patient's accounting of
/// disclosures (HIPAA §164.528).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Release {
    /// Who receives the record (the patient, their representative, an organisation): 1 to
    /// 200 characters.
    #[param(min_length = 1, max_length = 200)]
    pub recipient: String,
    pub purpose: Purpose,
}

/// A patient's whole record, for a right-of-access request (HIPAA §164.524).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PatientExport {
    /// Demographics with identifiers in clear: the record is the patient's own.
    pub patient: PatientView,
    /// The patient's sensitivity label, the floor of every note's and file's.
    pub label: PatientLabelView,
    pub appointments: Vec<crate::routes::records::appointments::AppointmentView>,
    /// Every note, amendments included, newest encounter first.
    pub notes: Vec<crate::routes::records::notes::NoteView>,
    /// The patient's documents (metadata; each is downloaded through `GET /api/files/{id}`).
    pub files: Vec<crate::routes::records::files::FileView>,
    pub exported_at: DateTime<Utc>,
    /// The notice 42 CFR §2.32 requires with every disclosure of substance-use records, present
    /// when the export carries any (notes coded `ETH`).
    pub part2_notice: Option<String>,
}

/// 42 CFR §2.32(a)(1), the statement that accompanies a disclosure of Part 2 records.
pub const PART2_NOTICE: &str = "This record which has been disclosed to you is protected by federal confidentiality rules (42 CFR part 2). These rules prohibit you from using or disclosing this record, or testimony that describes the information contained in this record, in any civil, criminal, administrative, or legislative proceedings by any Federal, State, or local authority, against the patient, unless authorized by the consent of the patient, except as provided at 42 CFR 2.12(c)(5) or as authorized by a court in accordance with 42 CFR 2.64 or 2.65. In addition, the Federal rules prohibit you from making any other use or disclosure of this record unless at least one of the following applies: (i) Further use or disclosure is expressly permitted by the written consent of the individual whose information is being disclosed in this record or as otherwise permitted by 42 CFR part 2. (ii) You are a covered entity or business associate and have received the record for treatment, payment, or health care operations, or (iii) You have received the record from a covered entity or business associate as permitted by 45 CFR part 164, subparts A and E. A general authorization for the release of medical or other information is NOT sufficient to meet the required elements of written consent to further use or redisclose the record (see 42 CFR 2.31).";

/// Exports a patient's whole record as JSON. For the privacy office answering a right-of-access
/// request, so it is not limited to a care team; it is audited as an export naming the
/// patient.
#[utoipa::path(
    get,
    path = "/api/patients/{id}/export",
    tag = "patients",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id"), Release),
    responses(
        (status = 200, description = "The whole record", body = PatientExport),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `export` (permission_denied) or a privileged role without MFA", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export(
    state: web::Data<ApiState>,
    release: web::Query<Release>,
    ExportablePatient(patient): ExportablePatient,
    Granted(grants): Granted,
    caller: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let id = patient.id;
    crate::rate_limit::take_export(&state, &grants, id).await?;
    let recipient =
        export::recipient(&release.recipient).map_err(|_| ApiError::InvalidParameters)?;
    let record = PatientRecord::gather(
        &state.appointments,
        &state.notes,
        patient,
        state.files.list(id),
    )
    .await?;
    // Psychotherapy notes are outside the right of access (45 CFR 164.524(a)(1)(i)) and never
    // leave. Substance-use records (42 CFR Part 2) go to the patient themself (§2.23), and to an
    // outside recipient only under the patient's consent naming that recipient and purpose
    // (docs/lifecycle.md); the consent's id goes into the audit event.
    let mut record = record;
    let file_label = |d: &clinicd_files::FileInfo| super::files::label_of(&d.label);
    let part2_consent = if release.purpose == Purpose::Individual
        || !(record.notes.iter().any(|n| n.label.part2())
            || record.documents.iter().any(|d| file_label(d).part2()))
    {
        None
    } else {
        let today = state.rbac.now().date_naive();
        state
            .consents
            .for_patient(id)
            .await?
            .into_iter()
            .find(|c| c.permits_part2(&recipient, release.purpose, today))
            .map(|c| c.id)
    };
    let part2_allowed = release.purpose == Purpose::Individual || part2_consent.is_some();
    let before = record.notes.len();
    record
        .notes
        .retain(|n| !n.label.withheld_from_export(part2_allowed));
    let withheld = before - record.notes.len();
    let documents_before = record.documents.len();
    record
        .documents
        .retain(|d| !file_label(d).withheld_from_export(part2_allowed));
    let files_withheld = documents_before - record.documents.len();
    let part2_included = record.notes.iter().any(|n| n.label.part2())
        || record.documents.iter().any(|d| file_label(d).part2());
    // The export is a copy leaving the system: it carries who took it, when and its id.
    let stamp = super::DownloadStamp::new(&caller.0.username);
    let metadata = serde_json::json!({
        "download_id": stamp.id,
        "appointments": record.appointments.len(),
        "notes": record.notes.len(),
        "notes_withheld": withheld,
        "files": record.documents.len(),
        "files_withheld": files_withheld,
        "part2_consent": part2_consent,
        "disclosure": "external",
        "recipient": recipient,
        "purpose": release.purpose.as_str(),
    });
    let label = state.patients.label(id).await?;
    let export = PatientExport {
        patient: view(&record.patient, Identifiers::Clear),
        label: PatientLabelView::new(id, &label),
        appointments: record.appointments.iter().map(Into::into).collect(),
        notes: record.notes.iter().map(Into::into).collect(),
        files: record.documents.iter().map(Into::into).collect(),
        exported_at: state.rbac.now(),
        part2_notice: part2_included.then(|| PART2_NOTICE.to_owned()),
    };
    let mut response = HttpResponse::Ok()
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"patient-{}.json\"",
                record.patient.mrn
            ),
        ))
        .json(export);
    stamp.mark(response.headers_mut());
    AuditNote {
        patient_id: Some(id),
        resource_id: Some(id.to_string()),
        metadata: Some(metadata),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// A patient's sensitivity label: the floor of every note's and file's label.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PatientLabelView {
    pub patient_id: Uuid,
    /// HL7 confidentiality: `N`, `R` or `V`.
    pub confidentiality: String,
    /// HL7 sensitivity codes.
    pub sensitivity: Vec<String>,
    /// Notes raised to the new label by this change (absent on a read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes_raised: Option<u64>,
    /// Files raised to the new label by this change (absent on a read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_raised: Option<u64>,
}

impl PatientLabelView {
    fn new(patient: Uuid, label: &clinicd_domain::Label) -> Self {
        Self {
            patient_id: patient,
            confidentiality: label.confidentiality.as_str().to_owned(),
            sensitivity: label.codes(),
            notes_raised: None,
            files_raised: None,
        }
    }
}

/// The patient's label (docs/lifecycle.md): `N` unless one was set.
#[utoipa::path(
    get,
    path = "/api/patients/{id}/label",
    tag = "patients",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    responses(
        (status = 200, description = "The label", body = PatientLabelView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `patient:read` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn label(
    state: web::Data<ApiState>,
    patient: ReachablePatientId,
) -> Result<HttpResponse, ApiError> {
    let label = state.patients.label(patient.0).await?;
    let mut response = HttpResponse::Ok().json(PatientLabelView::new(patient.0, &label));
    AuditNote {
        patient_id: Some(patient.0),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// Sets the patient's label, with a reason: every note and file of theirs is raised to at least
/// it, and every one written afterwards starts from it. Lowering it lowers nothing already
/// raised (each item is relabelled on its own). The caller must be able to read under it.
#[utoipa::path(
    put,
    path = "/api/patients/{id}/label",
    tag = "patients",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    request_body = crate::routes::records::notes::LabelRequest,
    responses(
        (status = 200, description = "The new label, and how many notes and files it raised", body = PatientLabelView),
        (status = 400, description = "A malformed id or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `patient:write` (permission_denied), or a label the caller could not read (restricted_content)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient, or not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad code or reason (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn relabel(
    state: web::Data<ApiState>,
    audit: Audit,
    patient: ReachablePatientId,
    Granted(grants): Granted,
    body: Json<crate::routes::records::notes::LabelRequest>,
) -> Result<HttpResponse, ApiError> {
    let label = clinicd_domain::Label::parse(Some(&body.confidentiality), &body.sensitivity)?;
    let reason = crate::routes::reason_text("reason", &body.reason)?;
    super::guard(&state, &grants, patient.reach(), &label)?;
    let before = state.patients.label(patient.0).await?;
    let mut tx = audit.begin().await?;
    let now = state.rbac.now();
    let notes_raised = state
        .patients
        .set_label(&mut tx, patient.0, &label, now)
        .await?;
    let files_raised = state
        .files
        .raise_labels(&mut tx, patient.0, &super::files::stored(&label))
        .await?;
    let mut note = super::relabel_note(patient.0, patient.0, &before, &label, reason);
    if let Some(serde_json::Value::Object(metadata)) = note.metadata.as_mut() {
        metadata.insert("notes_raised".into(), notes_raised.into());
        metadata.insert("files_raised".into(), files_raised.into());
    }
    audit.commit(tx, StatusCode::OK, note).await?;
    Ok(HttpResponse::Ok().json(PatientLabelView {
        notes_raised: Some(notes_raised),
        files_raised: Some(files_raised),
        ..PatientLabelView::new(patient.0, &label)
    }))
}

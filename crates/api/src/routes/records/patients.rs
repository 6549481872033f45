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
use clinicd_domain::patient::mrn_is_well_formed;
use clinicd_domain::types::{
    DateOfBirth, EmailAddress, FieldError, PatientStatus, PersonName, Phone, Sex, Ssn,
    bounded_text, member_number,
};
use clinicd_domain::{Address, EmergencyContact, Insurance, Patient, PatientData, Search, Viewer};
use clinicd_rbac::{Identifiers, Permission};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::{Authenticated, ExportablePatient, Granted, Json, ReachablePatient};
use crate::precondition::{etag, if_match};
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code, e.g. `US`.
    pub country: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InsuranceBody {
    pub payer: String,
    /// 1 to 30 letters, digits or hyphens. In responses to callers without
    /// `patient:read_identifiers` it is masked: `****` and the last four characters.
    pub member_number: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmergencyContactBody {
    pub name: String,
    pub relationship: String,
    /// E.164, e.g. `+15551234567`.
    pub phone: String,
}

/// A patient as registered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientBody {
    pub given_name: String,
    pub family_name: String,
    /// `YYYY-MM-DD`, not in the future, not more than 150 years ago.
    pub date_of_birth: String,
    /// `female`, `male`, `other` or `unknown`.
    pub sex: String,
    /// `AAA-GG-SSSS`; areas 000, 666 and 9xx and all-zero groups are refused.
    pub ssn: Option<String>,
    pub address: Option<AddressBody>,
    /// E.164, e.g. `+15551234567`.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub insurance_primary: Option<InsuranceBody>,
    pub insurance_secondary: Option<InsuranceBody>,
    pub emergency_contact: Option<EmergencyContactBody>,
    /// `active` (default), `inactive` or `deceased`.
    pub status: Option<String>,
}

fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A change: fields left out stay as they are; `null` clears an optional field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientPatch {
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub given_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub family_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub date_of_birth: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub sex: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub ssn: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<AddressBody>)]
    pub address: Option<Option<AddressBody>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<InsuranceBody>)]
    pub insurance_primary: Option<Option<InsuranceBody>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<InsuranceBody>)]
    pub insurance_secondary: Option<Option<InsuranceBody>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<EmergencyContactBody>)]
    pub emergency_contact: Option<Option<EmergencyContactBody>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub status: Option<Option<String>>,
}

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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PatientPage {
    pub patients: Vec<PatientView>,
    /// Send as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<Uuid>,
}

// ---- parsing ---------------------------------------------------------------------------

fn address(field: &'static [&'static str; 6], a: &AddressBody) -> Result<Address, FieldError> {
    let country = a.country.to_ascii_uppercase();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(FieldError {
            field: field[5],
            reason: "must be an ISO 3166-1 alpha-2 code such as US",
        });
    }
    Ok(Address {
        line1: bounded_text(field[0], &a.line1, 200)?,
        line2: a
            .line2
            .as_deref()
            .filter(|l| !l.trim().is_empty())
            .map(|l| bounded_text(field[1], l, 200))
            .transpose()?,
        city: bounded_text(field[2], &a.city, 100)?,
        region: bounded_text(field[3], &a.region, 100)?,
        postal_code: bounded_text(field[4], &a.postal_code, 20)?,
        country,
    })
}

const ADDRESS: [&str; 6] = [
    "address.line1",
    "address.line2",
    "address.city",
    "address.region",
    "address.postal_code",
    "address.country",
];

fn insurance(fields: [&'static str; 2], i: &InsuranceBody) -> Result<Insurance, FieldError> {
    Ok(Insurance {
        payer: bounded_text(fields[0], &i.payer, 100)?,
        member_number: member_number(fields[1], &i.member_number)?,
    })
}

fn emergency(c: &EmergencyContactBody) -> Result<EmergencyContact, FieldError> {
    Ok(EmergencyContact {
        name: PersonName::parse("emergency_contact.name", &c.name)?
            .as_str()
            .to_owned(),
        relationship: bounded_text("emergency_contact.relationship", &c.relationship, 50)?,
        phone: Phone::parse("emergency_contact.phone", &c.phone)?,
    })
}

/// Validates a whole record; the first failure names its field.
pub fn parse(body: &PatientBody, today: NaiveDate) -> Result<PatientData, FieldError> {
    Ok(PatientData {
        given_name: PersonName::parse("given_name", &body.given_name)?,
        family_name: PersonName::parse("family_name", &body.family_name)?,
        date_of_birth: DateOfBirth::parse("date_of_birth", &body.date_of_birth, today)?,
        sex: Sex::parse("sex", &body.sex)?,
        ssn: body
            .ssn
            .as_deref()
            .map(|s| Ssn::parse("ssn", s))
            .transpose()?,
        address: body
            .address
            .as_ref()
            .map(|a| address(&ADDRESS, a))
            .transpose()?,
        phone: body
            .phone
            .as_deref()
            .map(|p| Phone::parse("phone", p))
            .transpose()?,
        email: body
            .email
            .as_deref()
            .map(|e| EmailAddress::parse("email", e))
            .transpose()?,
        insurance_primary: body
            .insurance_primary
            .as_ref()
            .map(|i| {
                insurance(
                    ["insurance_primary.payer", "insurance_primary.member_number"],
                    i,
                )
            })
            .transpose()?,
        insurance_secondary: body
            .insurance_secondary
            .as_ref()
            .map(|i| {
                insurance(
                    [
                        "insurance_secondary.payer",
                        "insurance_secondary.member_number",
                    ],
                    i,
                )
            })
            .transpose()?,
        emergency_contact: body.emergency_contact.as_ref().map(emergency).transpose()?,
        status: body
            .status
            .as_deref()
            .map_or(Ok(PatientStatus::Active), |s| {
                PatientStatus::parse("status", s)
            })?,
    })
}

/// The stored record as a request body (unmasked), so a patch is validated like a new record.
fn body_of(data: &PatientData) -> PatientBody {
    let insurance = |i: &Insurance| InsuranceBody {
        payer: i.payer.clone(),
        member_number: i.member_number.clone(),
    };
    PatientBody {
        given_name: data.given_name.as_str().to_owned(),
        family_name: data.family_name.as_str().to_owned(),
        date_of_birth: data.date_of_birth.iso(),
        sex: data.sex.as_str().to_owned(),
        ssn: data.ssn.as_ref().map(|s| s.as_str().to_owned()),
        address: data.address.as_ref().map(|a| AddressBody {
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            city: a.city.clone(),
            region: a.region.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
        }),
        phone: data.phone.as_ref().map(|p| p.as_str().to_owned()),
        email: data.email.as_ref().map(|e| e.as_str().to_owned()),
        insurance_primary: data.insurance_primary.as_ref().map(insurance),
        insurance_secondary: data.insurance_secondary.as_ref().map(insurance),
        emergency_contact: data
            .emergency_contact
            .as_ref()
            .map(|c| EmergencyContactBody {
                name: c.name.clone(),
                relationship: c.relationship.clone(),
                phone: c.phone.as_str().to_owned(),
            }),
        status: Some(data.status.as_str().to_owned()),
    }
}

/// A valid record for judging a patch's own fields.
fn placeholder() -> PatientBody {
    PatientBody {
        given_name: "A".into(),
        family_name: "A".into(),
        date_of_birth: "2000-01-01".into(),
        sex: "unknown".into(),
        ssn: None,
        address: None,
        phone: None,
        email: None,
        insurance_primary: None,
        insurance_secondary: None,
        emergency_contact: None,
        status: Some("active".into()),
    }
}

/// Overlays a patch. Required fields cannot be cleared: `null` for one is refused by name.
fn apply(mut body: PatientBody, patch: PatientPatch) -> Result<PatientBody, FieldError> {
    fn required(
        field: &'static str,
        value: Option<Option<String>>,
        into: &mut String,
    ) -> Result<(), FieldError> {
        match value {
            Some(Some(value)) => *into = value,
            Some(None) => {
                return Err(FieldError {
                    field,
                    reason: "is required and cannot be null",
                });
            }
            None => {}
        }
        Ok(())
    }
    macro_rules! optional {
        ($($field:ident),*) => { $(if let Some(value) = patch.$field { body.$field = value; })* };
    }
    required("given_name", patch.given_name, &mut body.given_name)?;
    required("family_name", patch.family_name, &mut body.family_name)?;
    required(
        "date_of_birth",
        patch.date_of_birth,
        &mut body.date_of_birth,
    )?;
    required("sex", patch.sex, &mut body.sex)?;
    let mut status = body.status.take().unwrap_or_default();
    required("status", patch.status, &mut status)?;
    body.status = Some(status);
    optional!(
        ssn,
        address,
        phone,
        email,
        insurance_primary,
        insurance_secondary,
        emergency_contact
    );
    Ok(body)
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
    parse(&apply(placeholder(), patch.0.clone())?, today)?;
    if current.version != expected {
        return Err(ApiError::PreconditionFailed);
    }
    let data = parse(&apply(body_of(&current.data), patch.into_inner())?, today)?;
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

fn search_mode(body: &SearchRequest, today: NaiveDate) -> Result<Search, ApiError> {
    let chosen = [
        body.mrn.is_some(),
        body.ssn.is_some(),
        body.family_name.is_some() || body.date_of_birth.is_some(),
        body.name.is_some(),
    ]
    .iter()
    .filter(|c| **c)
    .count();
    if chosen > 1 {
        return Err(ApiError::InvalidField {
            field: "query",
            reason: "use one of mrn, ssn, family_name with date_of_birth, or name".into(),
        });
    }
    if let Some(mrn) = &body.mrn {
        if !mrn_is_well_formed(mrn) {
            return Err(ApiError::InvalidField {
                field: "mrn",
                reason: "must be 9 digits with a valid check digit".into(),
            });
        }
        return Ok(Search::Mrn(mrn.to_owned()));
    }
    if let Some(ssn) = &body.ssn {
        return Ok(Search::Ssn(Ssn::parse("ssn", ssn)?));
    }
    match (&body.family_name, &body.date_of_birth) {
        (Some(name), Some(dob)) => {
            return Ok(Search::FamilyNameAndBirth(
                PersonName::parse("family_name", name)?,
                DateOfBirth::parse("date_of_birth", dob, today)?,
            ));
        }
        (Some(_), None) => {
            return Err(ApiError::InvalidField {
                field: "date_of_birth",
                reason: "is needed with family_name".into(),
            });
        }
        (None, Some(_)) => {
            return Err(ApiError::InvalidField {
                field: "family_name",
                reason: "is needed with date_of_birth".into(),
            });
        }
        (None, None) => {}
    }
    if let Some(name) = &body.name {
        let tokens = clinicd_crypto::blind_index::name_tokens(name);
        if tokens.is_empty() || tokens.len() > 3 || name.chars().count() > 200 {
            return Err(ApiError::InvalidField {
                field: "name",
                reason: "must hold 1 to 3 words".into(),
            });
        }
        return Ok(Search::NameTokens(tokens));
    }
    Ok(Search::Mine)
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
    state: web::Data<ApiState>,
    caller: Authenticated,
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
    let search = search_mode(&body, state.rbac.now().date_naive())?;
    if matches!(search, Search::Ssn(_)) && !granted.0.has(Permission::PatientReadIdentifiers) {
        return Err(ApiError::MissingPermission(
            Permission::PatientReadIdentifiers.as_str(),
        ));
    }
    let viewer = Viewer {
        user: caller.0.user_id.0,
        now: state.rbac.now(),
    };
    let (found, next) = state
        .patients
        .search(&search, viewer, body.cursor, limit)
        .await?;
    let identifiers = Identifiers::for_caller(&granted.0);
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

/// Why a record goes out.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// The patient's own right of access.
    Individual,
    Treatment,
    Payment,
    Operations,
    /// Required by law, a court order or a subpoena.
    Legal,
    PublicHealth,
    Research,
    Other,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Individual => "individual",
            Self::Treatment => "treatment",
            Self::Payment => "payment",
            Self::Operations => "operations",
            Self::Legal => "legal",
            Self::PublicHealth => "public_health",
            Self::Research => "research",
            Self::Other => "other",
        }
    }
}

impl Release {
    fn recipient(&self) -> Result<String, ApiError> {
        let recipient = self.recipient.trim();
        let valid = (1..=200).contains(&recipient.chars().count())
            && !recipient.chars().any(clinicd_identity::users::is_deceptive);
        if valid {
            Ok(recipient.to_owned())
        } else {
            Err(ApiError::InvalidParameters)
        }
    }
}

/// A patient's whole record, for a right-of-access request (HIPAA §164.524).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PatientExport {
    /// Demographics with identifiers in clear: the record is the patient's own.
    pub patient: PatientView,
    pub appointments: Vec<crate::routes::records::appointments::AppointmentView>,
    /// Every note, amendments included, newest encounter first.
    pub notes: Vec<crate::routes::records::notes::NoteView>,
    /// The patient's documents (metadata; each is downloaded through `GET /api/files/{id}`).
    pub files: Vec<crate::routes::records::files::FileView>,
    pub exported_at: DateTime<Utc>,
}

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
) -> Result<HttpResponse, ApiError> {
    let id = patient.id;
    let recipient = release.recipient()?;
    let appointments = state.appointments.for_patient(id).await?;
    let notes = state.notes.for_patient(id).await?;
    let files = state.files.list(id).await?;
    let export = PatientExport {
        patient: view(&patient, Identifiers::Clear),
        appointments: appointments.iter().map(Into::into).collect(),
        notes: notes.iter().map(Into::into).collect(),
        files: files.iter().map(Into::into).collect(),
        exported_at: state.rbac.now(),
    };
    let mut response = HttpResponse::Ok()
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"patient-{}.json\"", patient.mrn),
        ))
        .json(export);
    AuditNote {
        patient_id: Some(id),
        resource_id: Some(id.to_string()),
        metadata: Some(serde_json::json!({
            "appointments": appointments.len(),
            "notes": notes.len(),
            "files": files.len(),
            "disclosure": "external",
            "recipient": recipient,
            "purpose": release.purpose.as_str(),
        })),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

//! Appointments: book, read, change (with `If-Match`), list a provider's day or a patient's
//! bookings. Every booking belongs to a patient, and the care-team rule applies through it: a
//! booking of a patient the caller cannot reach is answered as if it did not exist.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use clinicd_domain::Appointment;
use clinicd_domain::Viewer;
use clinicd_domain::appointment::{Change, Kind, Slot, Status};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::{Authenticated, Json, ReachableAppointment};
use crate::precondition::{etag, if_match};
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingRequest {
    pub patient_id: Uuid,
    pub provider_id: Uuid,
    pub starts_at: DateTime<Utc>,
    /// After `starts_at`, at most 12 hours later.
    pub ends_at: DateTime<Utc>,
    /// `new_patient`, `follow_up`, `annual`, `procedure`, `telehealth` or `other`.
    pub kind: String,
}

/// What changes; fields left out stay. Status moves forward only: booked → arrived, cancelled
/// or no_show; arrived → completed or cancelled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookingChange {
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub kind: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppointmentView {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub provider_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub kind: String,
    pub status: String,
    /// Also the `ETag`.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Appointment> for AppointmentView {
    fn from(a: &Appointment) -> Self {
        Self {
            id: a.id,
            patient_id: a.patient_id,
            provider_id: a.provider_id,
            starts_at: a.starts_at,
            ends_at: a.ends_at,
            kind: a.kind.clone(),
            status: a.status.clone(),
            version: a.version,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// Filters of the booking list, each optional and combined. Without `patient_id`: one
/// provider's day (`provider_id`, default the caller; `date`, default today), in the clinic's
/// local time. With `patient_id`: that patient's bookings, narrowed to `provider_id` and to the
/// day `date` when given.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub provider_id: Option<Uuid>,
    /// `YYYY-MM-DD`, the day in the clinic's local time.
    pub date: Option<NaiveDate>,
    /// The clinic's offset from UTC in minutes (e.g. -300 for UTC-5), -840 to 840; default 0.
    #[param(minimum = -840, maximum = 840)]
    pub utc_offset_minutes: Option<i32>,
    pub patient_id: Option<Uuid>,
}

fn one(mut response: HttpResponse, appointment: &Appointment) -> HttpResponse {
    if let Ok(value) = header::HeaderValue::from_str(&etag(appointment.version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    AuditNote {
        patient_id: Some(appointment.patient_id),
        resource_id: Some(appointment.id.to_string()),
        ..AuditNote::default()
    }
    .attach(&mut response);
    response
}

/// The UTC span of `date` in the clinic's local time (`offset` minutes from UTC, within ±14
/// hours), for a date of years 1 to 9999 (what `YYYY-MM-DD` can say): `None` otherwise, never
/// an overflow.
fn clinic_day(date: NaiveDate, offset: i32) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if !(-14 * 60..=14 * 60).contains(&offset) || !(1..=9999).contains(&date.year()) {
        return None;
    }
    let midnight = date.and_hms_opt(0, 0, 0)?.and_utc();
    let from = midnight.checked_sub_signed(Duration::minutes(i64::from(offset)))?;
    Some((from, from.checked_add_signed(Duration::days(1))?))
}

/// Today in the clinic's local time, as a UTC span.
fn today(offset: i32, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let local = now.checked_add_signed(Duration::minutes(i64::from(offset)))?;
    clinic_day(local.date_naive(), offset)
}

/// Books a provider for a patient in the caller's care team.
#[utoipa::path(
    post,
    path = "/api/appointments",
    tag = "appointments",
    security(("bearer" = [])),
    request_body = BookingRequest,
    responses(
        (status = 201, description = "Booked", body = AppointmentView),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `appointment:write` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The provider is booked at that time (appointment_overlap)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad slot or kind, an unknown provider, or a patient not in the caller's care team (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn book(
    state: web::Data<ApiState>,
    caller: Authenticated,
    audit: Audit,
    body: Json<BookingRequest>,
) -> Result<HttpResponse, ApiError> {
    let slot = state
        .settings
        .booking
        .check(Slot::new(body.starts_at, body.ends_at)?, state.rbac.now())?;
    let kind = Kind::parse("kind", &body.kind)?;
    let booker = Viewer {
        user: caller.0.user_id.0,
        now: state.rbac.now(),
    };
    let mut tx = audit.begin().await?;
    let appointment = state
        .appointments
        .book(
            &mut tx,
            body.patient_id,
            body.provider_id,
            slot,
            kind,
            booker,
        )
        .await?;
    committed(&audit, tx, StatusCode::CREATED, None, &appointment).await
}

/// The booking as an audit before/after value (sealed under the audit key).
fn value(appointment: &Appointment) -> serde_json::Value {
    serde_json::to_value(AppointmentView::from(appointment)).unwrap_or_default()
}

/// Commits a change to a booking with its event (the booking before and after) and answers it.
async fn committed(
    audit: &Audit,
    tx: Transaction<'static, Postgres>,
    status: StatusCode,
    before: Option<&Appointment>,
    after: &Appointment,
) -> Result<HttpResponse, ApiError> {
    let note = AuditNote {
        patient_id: Some(after.patient_id),
        resource_id: Some(after.id.to_string()),
        values: Some((before.map(value).unwrap_or_default(), value(after))),
        ..AuditNote::default()
    };
    audit.commit(tx, status, note).await?;
    let mut response = HttpResponse::build(status);
    if status == StatusCode::CREATED {
        response.insert_header((header::LOCATION, format!("/api/appointments/{}", after.id)));
    }
    let mut response = response.json(AppointmentView::from(after));
    if let Ok(value) = header::HeaderValue::from_str(&etag(after.version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// One booking.
#[utoipa::path(
    get,
    path = "/api/appointments/{id}",
    tag = "appointments",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    responses(
        (status = 200, description = "The booking; `ETag` is its version", body = AppointmentView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `appointment:read` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn read(appointment: ReachableAppointment) -> Result<HttpResponse, ApiError> {
    Ok(one(
        HttpResponse::Ok().json(AppointmentView::from(&*appointment)),
        &appointment,
    ))
}

/// Moves, re-types or advances a booking. Needs `If-Match`.
#[utoipa::path(
    patch,
    path = "/api/appointments/{id}",
    tag = "appointments",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Appointment id"),
        ("If-Match" = String, Header, description = "The ETag of the version being changed"),
    ),
    request_body = BookingChange,
    responses(
        (status = 200, description = "The booking after the change", body = AppointmentView),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `appointment:write` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such booking, or its patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The new slot overlaps (appointment_overlap), or a status cannot go back (invalid_transition)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (precondition_failed)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad slot, kind or status (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No If-Match (precondition_required)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn change(
    req: HttpRequest,
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<BookingChange>,
    current: ReachableAppointment,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match(&req)?;
    let slot = match (body.starts_at, body.ends_at) {
        (None, None) => None,
        (starts, ends) => Some(state.settings.booking.check(
            Slot::new(
                starts.unwrap_or(current.starts_at),
                ends.unwrap_or(current.ends_at),
            )?,
            state.rbac.now(),
        )?),
    };
    let change = Change {
        slot,
        kind: body
            .kind
            .as_deref()
            .map(|k| Kind::parse("kind", k))
            .transpose()?,
        status: body
            .status
            .as_deref()
            .map(|s| Status::parse("status", s))
            .transpose()?,
    };
    let mut tx = audit.begin().await?;
    let appointment = state
        .appointments
        .change(&mut tx, &current, expected, &change)
        .await?;
    committed(&audit, tx, StatusCode::OK, Some(&current), &appointment).await
}

/// A provider's day, or a patient's bookings, within the caller's care team.
#[utoipa::path(
    get,
    path = "/api/appointments",
    tag = "appointments",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Bookings by start", body = [AppointmentView]),
        (status = 400, description = "A malformed value (invalid_parameters)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `appointment:read` (permission_denied)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The patient is not in the caller's care team", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    caller: Authenticated,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let offset = query.utc_offset_minutes.unwrap_or(0);
    let day = match query.date {
        Some(date) => Some(clinic_day(date, offset).ok_or(ApiError::InvalidParameters)?),
        None => None,
    };
    let viewer = Viewer {
        user: caller.0.user_id.0,
        now: state.rbac.now(),
    };
    let (appointments, patient) = match query.patient_id {
        Some(patient) => {
            // The care-team rule is in the query: `None` for a patient out of reach.
            let found = state
                .appointments
                .for_patient_in_reach(patient, viewer)
                .await?
                .ok_or(ApiError::NotFound)?;
            let wanted = |a: &Appointment| {
                query.provider_id.is_none_or(|p| a.provider_id == p)
                    && day.is_none_or(|(from, to)| a.starts_at < to && a.ends_at > from)
            };
            (found.into_iter().filter(wanted).collect(), Some(patient))
        }
        None => {
            let (from, to) = match day {
                Some(day) => day,
                None => today(offset, viewer.now).ok_or(ApiError::InvalidParameters)?,
            };
            let provider = query.provider_id.unwrap_or(caller.0.user_id.0);
            let found = state
                .appointments
                .for_provider(provider, from, to, viewer)
                .await?;
            (found, None)
        }
    };
    let ids: Vec<Uuid> = appointments.iter().map(|a| a.id).collect();
    // The patients whose bookings were shown, for their accounting of disclosures.
    let mut patients: Vec<Uuid> = appointments.iter().map(|a| a.patient_id).collect();
    patients.sort_unstable();
    patients.dedup();
    let mut response = HttpResponse::Ok().json(
        appointments
            .iter()
            .map(AppointmentView::from)
            .collect::<Vec<_>>(),
    );
    AuditNote {
        patient_id: patient,
        metadata: Some(serde_json::json!({ "returned": ids.len(), "ids": ids })),
        patients,
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

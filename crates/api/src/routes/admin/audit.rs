//! The audit trail's administrative endpoints: `audit:read` (checked by the authorisation
//! layer), and `audit:read_values` to open sealed before/after values. Each use is itself
//! audited.

use actix_web::{HttpResponse, web};
use clinicd_audit::event::StoredEvent;
use clinicd_audit::query::{self, EventFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{Attach, AuditNote};

use crate::extract::Authenticated;
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

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

/// Recomputes the audit chain and checks every authenticated head.
#[utoipa::path(
    get,
    path = "/api/audit/verify",
    tag = "audit",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The verification report (intact or not)", body = AuditVerification),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `audit:read` (permission_denied), a privileged role without MFA (mfa_enrolment_required), or a pending password change", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The trail cannot be read", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn verify(
    _caller: Authenticated,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
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

/// An audit event as the viewer shows it (no hashes, no sealed values).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEventView {
    pub seq: i64,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    pub actor_user_id: Option<Uuid>,
    pub actor_username: Option<String>,
    pub session_id: Option<Uuid>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    pub outcome: String,
    pub http_method: Option<String>,
    /// The route template, never the path.
    pub route: Option<String>,
    pub status_code: Option<i32>,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

impl From<StoredEvent> for AuditEventView {
    fn from(e: StoredEvent) -> Self {
        Self {
            seq: e.seq,
            occurred_at: e.occurred_at,
            actor_user_id: e.actor_user_id,
            actor_username: e.actor_username,
            session_id: e.session_id,
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            patient_id: e.patient_id,
            outcome: e.outcome,
            http_method: e.http_method,
            route: e.route,
            status_code: e.status_code,
            client_ip: e.client_ip,
            request_id: e.request_id,
            reason: e.reason,
            metadata: e.metadata,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    pub actor: Option<Uuid>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    /// success, failure, denied or error
    pub outcome: Option<String>,
    /// RFC 3339; inclusive
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339; exclusive
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// `next_cursor` of the previous page
    pub cursor: Option<i64>,
    /// 1 to 500; default 100 (an export reads every page and takes no limit but checks it)
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

impl EventQuery {
    fn filter(&self) -> EventFilter {
        EventFilter {
            actor: self.actor,
            action: self.action.clone(),
            resource_type: self.resource_type.clone(),
            resource_id: self.resource_id.clone(),
            patient_id: self.patient_id,
            outcome: self.outcome.clone(),
            from: self.from,
            to: self.to,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<AuditEventView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<i64>,
}

/// A period's bounds must lie in the years 1 to 9999, the range an RFC 3339 timestamp (the
/// schema's `date-time`) can write; Postgres refuses parts of chrono's wider range.
fn period(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), ApiError> {
    use chrono::Datelike;
    let sane =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.is_none_or(|t| (1..=9999).contains(&t.year()));
    if sane(from) && sane(to) {
        Ok(())
    } else {
        Err(ApiError::InvalidParameters)
    }
}

fn unavailable(error: clinicd_audit::AuditError) -> ApiError {
    tracing::error!(error = %error, "the audit trail cannot be read");
    ApiError::Unavailable
}

fn noted(mut response: HttpResponse, returned: usize) -> HttpResponse {
    AuditNote {
        metadata: Some(serde_json::json!({ "returned": returned })),
        ..AuditNote::default()
    }
    .attach(&mut response);
    response
}

/// Audit events, newest first, filtered, one page at a time.
#[utoipa::path(
    get,
    path = "/api/audit/events",
    tag = "audit",
    security(("bearer" = [])),
    params(EventQuery),
    responses(
        (status = 200, description = "One page of events", body = EventPage),
        (status = 400, description = "A malformed or unknown filter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `audit:read` (permission_denied) or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The trail cannot be read", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    _caller: Authenticated,
    state: web::Data<ApiState>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=query::MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidParameters);
    }
    period(query.from, query.to)?;
    let rows = query::page(&state.db, &query.filter(), query.cursor, limit)
        .await
        .map_err(unavailable)?;
    let next_cursor = (i64::try_from(rows.len()).unwrap_or(0) == limit)
        .then(|| rows.last().map(|e| e.seq))
        .flatten();
    let returned = rows.len();
    let page = EventPage {
        events: rows.into_iter().map(AuditEventView::from).collect(),
        next_cursor,
    };
    Ok(noted(HttpResponse::Ok().json(page), returned))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    /// RFC 3339; inclusive
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339; exclusive
    pub to: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditStats {
    pub total: i64,
    pub failures: i64,
    pub logins: i64,
    pub failed_logins: i64,
    pub views: i64,
    pub denials: i64,
    pub last_activity: Option<chrono::DateTime<chrono::Utc>>,
}

/// Totals over a period: events, failures, logins, failed logins, views, denials.
#[utoipa::path(
    get,
    path = "/api/audit/stats",
    tag = "audit",
    security(("bearer" = [])),
    params(PeriodQuery),
    responses(
        (status = 200, description = "Totals", body = AuditStats),
        (status = 400, description = "A malformed period", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `audit:read` (permission_denied) or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The trail cannot be read", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn stats(
    _caller: Authenticated,
    state: web::Data<ApiState>,
    period: web::Query<PeriodQuery>,
) -> Result<HttpResponse, ApiError> {
    self::period(period.from, period.to)?;
    let s = query::stats(&state.db, period.from, period.to)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(AuditStats {
        total: s.total,
        failures: s.failures,
        logins: s.logins,
        failed_logins: s.failed_logins,
        views: s.views,
        denials: s.denials,
        last_activity: s.last_activity,
    }))
}

/// The accounting of disclosures for one patient: who saw or changed what, when, to whom and
/// why, oldest first, a page at a time. It counts every event that named the patient and every
/// answer that listed them (a search, a list), and it outlives the patient's records.
#[utoipa::path(
    get,
    path = "/api/audit/patients/{id}/disclosures",
    tag = "audit",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id"), AccountingQuery),
    responses(
        (status = 200, description = "The patient's accounting, one page; `Link: rel=\"next\"` names the next", body = [DisclosureView]),
        (status = 400, description = "A malformed id or period", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `audit:read` (permission_denied) or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The trail cannot be read", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn disclosures(
    _caller: Authenticated,
    state: web::Data<ApiState>,
    id: web::Path<Uuid>,
    query: web::Query<AccountingQuery>,
) -> Result<HttpResponse, ApiError> {
    let patient = id.into_inner();
    self::period(query.from, query.to)?;
    let limit = query.limit.unwrap_or(query::MAX_DISCLOSURES_PAGE);
    if !(1..=query::MAX_DISCLOSURES_PAGE).contains(&limit) {
        return Err(ApiError::InvalidParameters);
    }
    let rows = query::disclosures(&state.db, patient, query.from, query.to, query.after, limit)
        .await
        .map_err(unavailable)?;
    let returned = rows.len();
    let next = (i64::try_from(returned).unwrap_or(0) == limit)
        .then(|| rows.last().map(|e| e.seq))
        .flatten();
    let views: Vec<DisclosureView> = rows
        .into_iter()
        .map(|e| DisclosureView::of(e, patient))
        .collect();
    let mut response = HttpResponse::Ok();
    if let Some(next) = next {
        // RFC 8288: the next page, as its query string (the path is this one's).
        response.insert_header((
            actix_web::http::header::LINK,
            format!("<?after={next}&limit={limit}>; rel=\"next\""),
        ));
    }
    let mut response = response.json(views);
    // One note: the patient and the count (a second attach would replace the first).
    AuditNote {
        patient_id: Some(patient),
        metadata: Some(serde_json::json!({ "returned": returned })),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// The period and page of an accounting of disclosures.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountingQuery {
    /// RFC 3339, from 1900 to 9999; inclusive
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339, from 1900 to 9999; exclusive
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// The sequence number of the last entry of the previous page (its `Link: rel="next"`).
    pub after: Option<i64>,
    /// 1 to 1000 (default 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// One entry of a patient's accounting of disclosures (HIPAA §164.528): the event, when, who,
/// what was disclosed, to whom and why.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DisclosureView {
    #[serde(flatten)]
    pub event: AuditEventView,
    /// What was disclosed, in words: `view patient`, `search patient (listed among the
    /// results)`, `export patient`...
    pub description: String,
    /// Who received it: the recipient named at an export or release; `null` inside the clinic
    /// (the acting user, `actor_username`, is the recipient then).
    pub recipient: Option<String>,
    /// Why: the purpose named at an export or release (`individual`, `treatment`, `payment`,
    /// `operations`, `legal`, `public_health`, `research`, `other`); `null` otherwise.
    pub purpose: Option<String>,
}

impl DisclosureView {
    fn of(event: StoredEvent, patient: Uuid) -> Self {
        let listed = event.patient_id != Some(patient);
        let mut description = format!(
            "{} {}",
            event.action,
            event.resource_type.as_deref().unwrap_or("record")
        )
        .replace('_', " ");
        if listed {
            description.push_str(" (listed among the results)");
        }
        let text = |name: &str| {
            event
                .metadata
                .get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        Self {
            recipient: text("recipient"),
            purpose: text("purpose"),
            description,
            event: AuditEventView::from(event),
        }
    }
}

/// The formats the trail exports to.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Ndjson,
    Csv,
}

const CSV_COLUMNS: [&str; 16] = [
    "seq",
    "occurred_at",
    "actor_user_id",
    "actor_username",
    "session_id",
    "action",
    "resource_type",
    "resource_id",
    "patient_id",
    "outcome",
    "http_method",
    "route",
    "status_code",
    "client_ip",
    "request_id",
    "reason",
];

/// Exports the filtered events, newest first, as NDJSON or CSV, streamed a page at a time so
/// memory stays flat whatever the size. The export itself is audited before the first byte.
#[utoipa::path(
    get,
    path = "/api/audit/export/{format}",
    tag = "audit",
    security(("bearer" = [])),
    params(("format" = ExportFormat, Path, description = "ndjson or csv"), EventQuery),
    responses(
        (status = 200, description = "The events, one per line (NDJSON) or row (CSV)", content((String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, description = "An unknown format or a malformed filter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `audit:read` (permission_denied) or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The trail cannot be read", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export(
    _caller: Authenticated,
    state: web::Data<ApiState>,
    format: web::Path<ExportFormat>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    let format = format.into_inner();
    if query
        .limit
        .is_some_and(|l| !(1..=query::MAX_PAGE).contains(&l))
    {
        return Err(ApiError::InvalidParameters);
    }
    period(query.from, query.to)?;
    let db = state.db.clone();
    let filter = query.filter();
    let header = match format {
        ExportFormat::Csv => Some(format!("{}\r\n", CSV_COLUMNS.join(","))),
        ExportFormat::Ndjson => None,
    };
    // (cursor, done): each step reads one page below the cursor.
    let pages = futures_util::stream::unfold((query.cursor, false), move |(cursor, done)| {
        let (db, filter) = (db.clone(), filter.clone());
        async move {
            if done {
                return None;
            }
            match query::page(&db, &filter, cursor, query::MAX_PAGE).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let last = rows.last().map(|e| e.seq);
                    let finished = i64::try_from(rows.len()).unwrap_or(0) < query::MAX_PAGE;
                    let bytes = encode(format, rows);
                    Some((Ok(web::Bytes::from(bytes)), (last, finished)))
                }
                Err(error) => {
                    tracing::error!(error = %error, "audit export stopped");
                    Some((Err(ApiError::Unavailable), (cursor, true)))
                }
            }
        }
    });
    let head = futures_util::stream::iter(header.map(|h| Ok(web::Bytes::from(h))));
    let (content_type, extension) = match format {
        ExportFormat::Ndjson => ("application/x-ndjson", "ndjson"),
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"audit-events.{extension}\""),
        ))
        .streaming(futures_util::StreamExt::chain(head, pages)))
}

fn encode(format: ExportFormat, rows: Vec<StoredEvent>) -> String {
    let mut out = String::new();
    for row in rows {
        let view = AuditEventView::from(row);
        match format {
            ExportFormat::Ndjson => {
                out.push_str(&serde_json::to_string(&view).unwrap_or_default());
                out.push('\n');
            }
            ExportFormat::Csv => {
                let fields = [
                    view.seq.to_string(),
                    view.occurred_at.to_rfc3339(),
                    opt(view.actor_user_id),
                    view.actor_username.unwrap_or_default(),
                    opt(view.session_id),
                    view.action,
                    view.resource_type.unwrap_or_default(),
                    view.resource_id.unwrap_or_default(),
                    opt(view.patient_id),
                    view.outcome,
                    view.http_method.unwrap_or_default(),
                    view.route.unwrap_or_default(),
                    opt(view.status_code),
                    view.client_ip.unwrap_or_default(),
                    view.request_id.unwrap_or_default(),
                    view.reason.unwrap_or_default(),
                ];
                let cells: Vec<String> = fields.iter().map(|f| csv_cell(f)).collect();
                out.push_str(&cells.join(","));
                out.push_str("\r\n");
            }
        }
    }
    out
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// RFC 4180 quoting, and a leading `'` on anything a spreadsheet would run as a formula
/// (a break-the-glass reason is free text). Hand-written: four lines, not worth a crate.
fn csv_cell(value: &str) -> String {
    let guarded = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    format!("\"{}\"", guarded.replace('"', "\"\""))
}

/// The before and after values of one audited change, opened from the audit-key ciphertext.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditValues {
    pub seq: i64,
    /// The field names that changed (also readable without this permission).
    #[schema(value_type = Object)]
    pub changed: serde_json::Value,
    #[schema(value_type = Object)]
    pub before: serde_json::Value,
    #[schema(value_type = Object)]
    pub after: serde_json::Value,
}

/// Opens the sealed before/after values of one event. The read is itself audited, naming the
/// event it opened.
#[utoipa::path(
    get,
    path = "/api/audit/events/{seq}/values",
    tag = "audit",
    security(("bearer" = [])),
    params(("seq" = i64, Path, description = "The event's sequence number")),
    responses(
        (status = 200, description = "The values", body = AuditValues),
        (status = 400, description = "A malformed sequence number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `audit:read_values` (permission_denied) or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event, or it has no sealed values", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The trail cannot be read", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn values(
    _caller: Authenticated,
    state: web::Data<ApiState>,
    seq: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let seq = seq.into_inner();
    let event = query::event(&state.db, seq)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let Some(event) = event else {
        return Err(ApiError::NotFound);
    };
    let Some(sealed) = event.sealed_values.as_deref() else {
        return Err(ApiError::NotFound);
    };
    let opened =
        clinicd_audit::values::open_values(&state.identity.keyring, &event.metadata, sealed)
            .await
            .map_err(|error| match error {
                // The patient was erased: their values went with their key.
                clinicd_audit::AuditError::Destroyed => ApiError::DataDestroyed,
                other => ApiError::unexpected(other),
            })?;
    let mut response = HttpResponse::Ok().json(AuditValues {
        seq,
        changed: event.metadata.get("changed").cloned().unwrap_or_default(),
        before: opened.get("before").cloned().unwrap_or_default(),
        after: opened.get("after").cloned().unwrap_or_default(),
    });
    AuditNote {
        resource_id: Some(seq.to_string()),
        patient_id: event.patient_id,
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

//! Security operations for the privacy and security officers (`security:read`): the
//! dashboard, alerts and their deliveries, blocks (list, lift, add by hand) and the watched
//! patients. Every read and change is audited; changes commit with their event.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use clinicd_identity::users::UserId;
use clinicd_secops::alerts::{self, TransitionError};
use clinicd_secops::blocks::{self, NewBlock, Source, Target};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::{Authenticated, Json};
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

/// An alert: what a rule or an automatic block found. Never holds PHI.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    pub id: Uuid,
    /// The rule (`volume`, `off_hours`, `block:credential_stuffing`, ...).
    pub rule: String,
    /// `low`, `medium` or `high`.
    pub severity: String,
    pub subject_user: Option<Uuid>,
    pub subject_ip: Option<String>,
    pub summary: String,
    /// Counts, windows, audit sequence numbers.
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    pub occurrences: i32,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// `open`, `acknowledged` or `resolved`.
    pub state: String,
    pub acknowledged_by: Option<Uuid>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<Uuid>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
}

impl From<alerts::Alert> for AlertView {
    fn from(a: alerts::Alert) -> Self {
        Self {
            id: a.id,
            rule: a.rule,
            severity: a.severity,
            subject_user: a.subject_user,
            subject_ip: a.subject_ip,
            summary: a.summary,
            evidence: a.evidence,
            occurrences: a.occurrences,
            first_seen: a.first_seen,
            last_seen: a.last_seen,
            state: a.state,
            acknowledged_by: a.acknowledged_by,
            acknowledged_at: a.acknowledged_at,
            resolved_by: a.resolved_by,
            resolved_at: a.resolved_at,
            resolution: a.resolution,
        }
    }
}

/// A block of an address (network) or an account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BlockView {
    pub id: Uuid,
    /// `ip` or `account`.
    pub target: String,
    pub network: Option<String>,
    pub user_id: Option<Uuid>,
    /// `automatic` or `manual`.
    pub source: String,
    pub rule: String,
    pub reason: String,
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    pub offence: i32,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub active: bool,
    pub lifted_at: Option<DateTime<Utc>>,
    pub lifted_by: Option<Uuid>,
    pub lift_reason: Option<String>,
}

impl From<blocks::Block> for BlockView {
    fn from(b: blocks::Block) -> Self {
        Self {
            active: b.is_active(Utc::now()),
            id: b.id,
            target: b.target,
            network: b.network,
            user_id: b.user_id,
            source: b.source,
            rule: b.rule,
            reason: b.reason,
            evidence: b.evidence,
            offence: b.offence,
            created_by: b.created_by,
            created_at: b.created_at,
            expires_at: b.expires_at,
            lifted_at: b.lifted_at,
            lifted_by: b.lifted_by,
            lift_reason: b.lift_reason,
        }
    }
}

/// One delivery of an alert (dead letters included).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub alert_id: Uuid,
    /// `webhook` or `email`.
    pub channel: String,
    /// `pending`, `sent`, `dead` or `suppressed`.
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<alerts::Delivery> for DeliveryView {
    fn from(d: alerts::Delivery) -> Self {
        Self {
            id: d.id,
            alert_id: d.alert_id,
            channel: d.channel,
            state: d.state,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error,
            created_at: d.created_at,
            sent_at: d.sent_at,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Sent,
    Dead,
    Suppressed,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Dead => "dead",
            Self::Suppressed => "suppressed",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// All states when absent.
    pub state: Option<AlertState>,
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// All states when absent.
    pub state: Option<DeliveryState>,
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BlockQuery {
    /// Only blocks in force (default true); false adds expired and lifted ones.
    pub active: Option<bool>,
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// What was found and done: 5 to 500 characters. No PHI.
    #[schema(min_length = 5, max_length = 500)]
    pub resolution: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBlockRequest {
    /// An address or network (`203.0.113.7`, `203.0.113.0/24`) to block; or give `user_id`.
    pub network: Option<String>,
    /// An account to block; or give `network`.
    pub user_id: Option<Uuid>,
    /// Why: 5 to 500 characters.
    #[schema(min_length = 5, max_length = 500)]
    pub reason: String,
    /// How long: 1 to 43200 whole minutes (30 days).
    #[schema(value_type = i64, minimum = 1, maximum = 43200)]
    pub minutes: serde_json::Number,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiftRequest {
    /// Why the block is lifted: 5 to 500 characters.
    #[schema(min_length = 5, max_length = 500)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    /// `vip`, `employee` or `other`.
    pub label: String,
    /// Why the patient is watched: 5 to 500 characters. No PHI beyond the label.
    #[schema(min_length = 5, max_length = 500)]
    pub reason: String,
}

fn limit(value: Option<i64>) -> Result<i64, ApiError> {
    let limit = value.unwrap_or(100);
    if (1..=500).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::InvalidParameters)
    }
}

/// The security picture in one call.
#[utoipa::path(
    get,
    path = "/api/security/dashboard",
    tag = "security",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Open alerts, active blocks, failed logins and refusals in 24 h, emergency accesses awaiting review, audit chain head and last checkpoint, key ages and rotation due, backup status", body = Object),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `security:read`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn dashboard(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let board = state
        .secops
        .dashboard()
        .await
        .map_err(ApiError::unexpected)?;
    state
        .metrics
        .observe_security(&board, state.secops.blocks.is_stale());
    let mut response = HttpResponse::Ok().json(&board);
    AuditNote::with_metadata(serde_json::json!({ "open_alerts": board.alerts.open, "active_blocks": board.active_blocks }))
        .attach(&mut response);
    Ok(response)
}

/// Alerts, newest first.
#[utoipa::path(
    get,
    path = "/api/security/alerts",
    tag = "security",
    security(("bearer" = [])),
    params(AlertQuery),
    responses(
        (status = 200, description = "Alerts", body = Vec<AlertView>),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `security:read`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_alerts(
    state: web::Data<ApiState>,
    query: web::Query<AlertQuery>,
) -> Result<HttpResponse, ApiError> {
    let found = alerts::list(
        &state.db,
        query.state.map(AlertState::as_str),
        limit(query.limit)?,
    )
    .await
    .map_err(ApiError::unexpected)?;
    let view: Vec<AlertView> = found.into_iter().map(AlertView::from).collect();
    let mut response = HttpResponse::Ok().json(&view);
    AuditNote::with_metadata(serde_json::json!({ "returned": view.len() })).attach(&mut response);
    Ok(response)
}

/// Acknowledges an open alert (someone is on it).
#[utoipa::path(
    post,
    path = "/api/security/alerts/{id}/acknowledge",
    tag = "security",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Alert id")),
    responses(
        (status = 200, description = "Acknowledged", body = AlertView),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `security:read`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such alert", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not open (invalid_transition)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn acknowledge(
    caller: Authenticated,
    audit: Audit,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let mut tx = audit.begin().await?;
    let alert = alerts::acknowledge(&mut tx, id, caller.0.user_id.0, Utc::now())
        .await
        .map_err(transition_error)?;
    audit
        .commit(tx, StatusCode::OK, changed(id, "acknowledged"))
        .await?;
    Ok(HttpResponse::Ok().json(AlertView::from(alert)))
}

/// Resolves an alert with what was found.
#[utoipa::path(
    post,
    path = "/api/security/alerts/{id}/resolve",
    tag = "security",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Alert id")),
    request_body = ResolveRequest,
    responses(
        (status = 200, description = "Resolved", body = AlertView),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `security:read`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such alert", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already resolved (invalid_transition)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Resolution too short or too long", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resolve(
    caller: Authenticated,
    audit: Audit,
    id: web::Path<Uuid>,
    body: Json<ResolveRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let resolution = super::reason_text("resolution", &body.resolution)?;
    let mut tx = audit.begin().await?;
    let alert = alerts::resolve(&mut tx, id, caller.0.user_id.0, &resolution, Utc::now())
        .await
        .map_err(transition_error)?;
    audit
        .commit(tx, StatusCode::OK, changed(id, "resolved"))
        .await?;
    Ok(HttpResponse::Ok().json(AlertView::from(alert)))
}

fn changed(id: Uuid, state: &str) -> AuditNote {
    AuditNote {
        resource_id: Some(id.to_string()),
        metadata: Some(serde_json::json!({ "state": state })),
        ..AuditNote::default()
    }
}

fn transition_error(error: TransitionError) -> ApiError {
    match error {
        TransitionError::NotFound => ApiError::NotFound,
        TransitionError::Invalid(state) => {
            ApiError::InvalidTransition(format!("the alert is {state}"))
        }
        TransitionError::Database(e) => ApiError::unexpected(e),
    }
}

/// Alert deliveries, newest first (`state=dead` for the dead letters).
#[utoipa::path(
    get,
    path = "/api/security/alert-deliveries",
    tag = "security",
    security(("bearer" = [])),
    params(DeliveryQuery),
    responses(
        (status = 200, description = "Deliveries", body = Vec<DeliveryView>),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `security:read`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_deliveries(
    state: web::Data<ApiState>,
    query: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, ApiError> {
    let found = alerts::deliveries(
        &state.db,
        query.state.map(DeliveryState::as_str),
        limit(query.limit)?,
    )
    .await
    .map_err(ApiError::unexpected)?;
    let view: Vec<DeliveryView> = found.into_iter().map(DeliveryView::from).collect();
    let mut response = HttpResponse::Ok().json(&view);
    AuditNote::with_metadata(serde_json::json!({ "returned": view.len() })).attach(&mut response);
    Ok(response)
}

/// Blocks with their evidence, newest first.
#[utoipa::path(
    get,
    path = "/api/security/blocks",
    tag = "security",
    security(("bearer" = [])),
    params(BlockQuery),
    responses(
        (status = 200, description = "Blocks", body = Vec<BlockView>),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `security:read`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_blocks(
    state: web::Data<ApiState>,
    query: web::Query<BlockQuery>,
) -> Result<HttpResponse, ApiError> {
    let found = blocks::list(&state.db, query.active.unwrap_or(true), limit(query.limit)?)
        .await
        .map_err(ApiError::unexpected)?;
    let view: Vec<BlockView> = found.into_iter().map(BlockView::from).collect();
    let mut response = HttpResponse::Ok().json(&view);
    AuditNote::with_metadata(serde_json::json!({ "returned": view.len() })).attach(&mut response);
    Ok(response)
}

/// Blocks an address, a network or an account by hand. Trusted proxies and allow-listed
/// networks cannot be blocked, nor can the caller block their own account.
#[utoipa::path(
    post,
    path = "/api/security/blocks",
    tag = "security",
    security(("bearer" = [])),
    request_body = NewBlockRequest,
    responses(
        (status = 201, description = "Blocked on every instance within a second", body = BlockView),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `security:read`, or the caller's own account (own_account)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Neither or both targets, an invalid network, an allow-listed or trusted one, an unknown account, a bad reason or duration", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add_block(
    state: web::Data<ApiState>,
    caller: Authenticated,
    audit: Audit,
    body: Json<NewBlockRequest>,
) -> Result<HttpResponse, ApiError> {
    let target = block_target(&state, &caller, &body)?;
    let reason = super::reason_text("reason", &body.reason)?;
    let minutes = whole_minutes(&body.minutes).ok_or_else(|| ApiError::InvalidField {
        field: "minutes",
        reason: "must be a whole number from 1 to 43200".into(),
    })?;
    let mut tx = audit.begin().await?;
    if let Target::Account(user) = &target {
        let known = clinicd_identity::users::find_in(&mut *tx, UserId(*user))
            .await?
            .is_some();
        if !known {
            return Err(ApiError::InvalidField {
                field: "user_id",
                reason: "no such user".into(),
            });
        }
    }
    let block = NewBlock {
        target,
        source: Source::Manual,
        rule: "manual".into(),
        reason,
        evidence: serde_json::json!({}),
        created_by: Some(caller.0.user_id.0),
        duration: std::time::Duration::from_secs(minutes * 60),
    };
    let placed = blocks::place(&mut tx, &block, Utc::now())
        .await
        .map_err(ApiError::unexpected)?;
    let note = AuditNote {
        resource_id: Some(placed.id.to_string()),
        metadata: Some(
            serde_json::json!({ "target": placed.target, "network": placed.network,
                                           "user_id": placed.user_id, "expires_at": placed.expires_at }),
        ),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::CREATED, note).await?;
    // This instance at once; the others on the notification.
    if let Err(error) = state.secops.blocks.reload(&state.db).await {
        tracing::warn!(%error, "could not reload the block list");
    }
    Ok(HttpResponse::Created().json(BlockView::from(placed)))
}

/// A whole number of minutes in range; JSON `90.0` is the whole number 90, as JSON Schema says.
fn whole_minutes(value: &serde_json::Number) -> Option<u64> {
    let minutes = value.as_u64().or_else(|| {
        let float = value.as_f64()?;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked whole and within 1..=43200 before the cast"
        )]
        ((float.fract() == 0.0) && (1.0..=43_200.0).contains(&float)).then_some(float as u64)
    })?;
    (1..=43_200).contains(&minutes).then_some(minutes)
}

fn block_target(
    state: &ApiState,
    caller: &Authenticated,
    body: &NewBlockRequest,
) -> Result<Target, ApiError> {
    let invalid = |field, reason: &str| ApiError::InvalidField {
        field,
        reason: reason.into(),
    };
    match (&body.network, body.user_id) {
        (Some(network), None) => {
            let network = network
                .trim()
                .parse::<IpNet>()
                .or_else(|_| network.trim().parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| invalid("network", "must be an IP address or CIDR network"))?
                .trunc();
            let protected = state
                .secops
                .settings
                .abuse
                .allow
                .iter()
                .chain(state.settings.trusted_proxies.networks())
                .any(|allowed| allowed.contains(&network) || network.contains(allowed));
            if protected {
                return Err(invalid(
                    "network",
                    "overlaps a trusted proxy or an allow-listed network",
                ));
            }
            if network.prefix_len() < if network.addr().is_ipv4() { 8 } else { 32 } {
                return Err(invalid(
                    "network",
                    "is too wide (at most a /8 for IPv4, /32 for IPv6)",
                ));
            }
            Ok(Target::Network(network))
        }
        (None, Some(user)) if user == caller.0.user_id.0 => Err(ApiError::OwnAccount),
        (None, Some(user)) => Ok(Target::Account(user)),
        _ => Err(invalid(
            "network",
            "give exactly one of network and user_id",
        )),
    }
}

/// Lifts a block at once, on every instance within a second.
#[utoipa::path(
    post,
    path = "/api/security/blocks/{id}/lift",
    tag = "security",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Block id")),
    request_body = LiftRequest,
    responses(
        (status = 200, description = "Lifted", body = BlockView),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `security:read`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No active block with this id", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad reason", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn lift_block(
    state: web::Data<ApiState>,
    caller: Authenticated,
    audit: Audit,
    id: web::Path<Uuid>,
    body: Json<LiftRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let reason = super::reason_text("reason", &body.reason)?;
    let mut tx = audit.begin().await?;
    let lifted = blocks::lift(&mut tx, id, caller.0.user_id.0, &reason, Utc::now())
        .await
        .map_err(ApiError::unexpected)?
        .ok_or(ApiError::NotFound)?;
    let note = AuditNote {
        resource_id: Some(id.to_string()),
        metadata: Some(serde_json::json!({ "lifted": true })),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::OK, note).await?;
    if let Err(error) = state.secops.blocks.reload(&state.db).await {
        tracing::warn!(%error, "could not reload the block list");
    }
    Ok(HttpResponse::Ok().json(BlockView::from(lifted)))
}

/// Watches a patient (VIP, employee): every access raises an alert.
#[utoipa::path(
    put,
    path = "/api/security/watched-patients/{id}",
    tag = "security",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    request_body = WatchRequest,
    responses(
        (status = 204, description = "Watched"),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `security:read`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such patient", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad label or reason", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn watch(
    caller: Authenticated,
    audit: Audit,
    id: web::Path<Uuid>,
    body: Json<WatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let patient = id.into_inner();
    if !["vip", "employee", "other"].contains(&body.label.as_str()) {
        return Err(ApiError::InvalidField {
            field: "label",
            reason: "must be vip, employee or other".into(),
        });
    }
    let reason = super::reason_text("reason", &body.reason)?;
    let mut tx = audit.begin().await?;
    let watched =
        clinicd_secops::watch::watch(&mut tx, patient, &body.label, &reason, caller.0.user_id.0)
            .await
            .map_err(ApiError::unexpected)?;
    if !watched {
        return Err(ApiError::NotFound);
    }
    let note = AuditNote {
        resource_id: Some(patient.to_string()),
        patient_id: Some(patient),
        metadata: Some(serde_json::json!({ "label": body.label })),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::NO_CONTENT, note).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Stops watching a patient.
#[utoipa::path(
    delete,
    path = "/api/security/watched-patients/{id}",
    tag = "security",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Patient id")),
    responses(
        (status = 204, description = "No longer watched"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing `security:read`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not watched", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unwatch(audit: Audit, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let patient = id.into_inner();
    let mut tx = audit.begin().await?;
    if !clinicd_secops::watch::unwatch(&mut tx, patient)
        .await
        .map_err(ApiError::unexpected)?
    {
        return Err(ApiError::NotFound);
    }
    let note = AuditNote {
        resource_id: Some(patient.to_string()),
        patient_id: Some(patient),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::NO_CONTENT, note).await?;
    Ok(HttpResponse::NoContent().finish())
}

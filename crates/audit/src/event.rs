//! What an audit event records. Values are ids, codes and route templates, never PHI: a path
//! or query string can carry an SSN, so only the route template is kept; search terms are not
//! kept, the ids a search returned are (in `metadata`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened. Stable strings: they are stored, hashed into the chain and queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Login,
    LoginFailed,
    Logout,
    Refresh,
    MfaVerify,
    MfaSend,
    MfaEnrol,
    MfaDisable,
    MfaBackupCodes,
    PasswordChange,
    SessionList,
    SessionRevoke,
    DeviceList,
    DeviceRevoke,
    View,
    Search,
    Create,
    Update,
    Delete,
    Export,
    Download,
    Upload,
    BreakGlass,
    PermissionDenied,
    RoleChange,
    UserChange,
    KeyRotation,
    ConfigChange,
    AuditRead,
    AuditVerify,
    /// A second administrator approved a proposed change (dual control).
    Approve,
    /// A proposed change was rejected or withdrawn.
    Reject,
    /// An identity event of a kind without a more specific action (`metadata.kind` names it).
    SecurityEvent,
    /// A backup command: taken, listed, verified, restored or drilled (`metadata.command`).
    Backup,
    /// A legal hold placed or released (docs/lifecycle.md).
    LegalHold,
    LegalHoldRelease,
    /// An erasure asked for, and an erasure carried out (approved, or replayed from the ledger).
    ErasureRequest,
    Erasure,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::LoginFailed => "login_failed",
            Self::Logout => "logout",
            Self::Refresh => "refresh",
            Self::MfaVerify => "mfa_verify",
            Self::MfaSend => "mfa_send",
            Self::MfaEnrol => "mfa_enrol",
            Self::MfaDisable => "mfa_disable",
            Self::MfaBackupCodes => "mfa_backup_codes",
            Self::PasswordChange => "password_change",
            Self::SessionList => "session_list",
            Self::SessionRevoke => "session_revoke",
            Self::DeviceList => "device_list",
            Self::DeviceRevoke => "device_revoke",
            Self::View => "view",
            Self::Search => "search",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Export => "export",
            Self::Download => "download",
            Self::Upload => "upload",
            Self::BreakGlass => "break_glass",
            Self::PermissionDenied => "permission_denied",
            Self::RoleChange => "role_change",
            Self::UserChange => "user_change",
            Self::KeyRotation => "key_rotation",
            Self::ConfigChange => "config_change",
            Self::AuditRead => "audit_read",
            Self::AuditVerify => "audit_verify",
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::SecurityEvent => "security_event",
            Self::Backup => "backup",
            Self::LegalHold => "legal_hold",
            Self::LegalHoldRelease => "legal_hold_release",
            Self::ErasureRequest => "erasure_request",
            Self::Erasure => "erasure",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// The caller's request failed (bad input, wrong password, conflict).
    Failure,
    /// Refused for want of authentication or permission.
    Denied,
    /// Our fault (5xx).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }

    /// The outcome an HTTP status stands for.
    pub fn from_status(status: u16) -> Self {
        match status {
            100..=399 => Self::Success,
            401 | 403 => Self::Denied,
            400..=499 => Self::Failure,
            _ => Self::Error,
        }
    }
}

/// An event to append. The writer adds the sequence number and the chain hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub occurred_at: DateTime<Utc>,
    pub action: Action,
    pub outcome: Outcome,
    pub actor_user_id: Option<Uuid>,
    pub actor_username: Option<String>,
    pub session_id: Option<Uuid>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    pub http_method: Option<String>,
    /// The route template (`/api/patients/{id}`), never the path.
    pub route: Option<String>,
    pub status_code: Option<i32>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// A short reason code, or a break-the-glass justification.
    pub reason: Option<String>,
    /// Names of changed fields, counts, ids returned: never values.
    pub metadata: serde_json::Value,
    /// Before and after values, encrypted under the audit key.
    pub sealed_values: Option<Vec<u8>>,
}

impl NewEvent {
    pub fn new(action: Action, outcome: Outcome) -> Self {
        Self {
            occurred_at: Utc::now(),
            action,
            outcome,
            actor_user_id: None,
            actor_username: None,
            session_id: None,
            resource_type: None,
            resource_id: None,
            patient_id: None,
            http_method: None,
            route: None,
            status_code: None,
            client_ip: None,
            user_agent: None,
            request_id: None,
            reason: None,
            metadata: serde_json::Value::Object(serde_json::Map::new()),
            sealed_values: None,
        }
    }
}

/// An event as stored: what the chain hashes.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    pub seq: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor_user_id: Option<Uuid>,
    pub actor_username: Option<String>,
    pub session_id: Option<Uuid>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    pub outcome: String,
    pub http_method: Option<String>,
    pub route: Option<String>,
    pub status_code: Option<i32>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub reason: Option<String>,
    pub metadata: serde_json::Value,
    pub sealed_values: Option<Vec<u8>>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Postgres keeps microseconds: an event is hashed at the precision it is stored with.
pub(crate) fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

impl StoredEvent {
    /// The stored form of `event` at `seq`, before its hashes are known.
    pub(crate) fn from_new(seq: i64, event: &NewEvent) -> Self {
        Self {
            seq,
            occurred_at: to_micros(event.occurred_at),
            actor_user_id: event.actor_user_id,
            actor_username: event.actor_username.clone(),
            session_id: event.session_id,
            action: event.action.as_str().to_owned(),
            resource_type: event.resource_type.clone(),
            resource_id: event.resource_id.clone(),
            patient_id: event.patient_id,
            outcome: event.outcome.as_str().to_owned(),
            http_method: event.http_method.clone(),
            route: event.route.clone(),
            status_code: event.status_code,
            client_ip: event.client_ip.clone(),
            user_agent: event.user_agent.clone(),
            request_id: event.request_id.clone(),
            reason: event.reason.clone(),
            metadata: event.metadata.clone(),
            sealed_values: event.sealed_values.clone(),
            prev_hash: Vec::new(),
            hash: Vec::new(),
        }
    }
}

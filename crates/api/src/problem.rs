//! RFC 7807 `application/problem+json` errors.
//!
//! Every error a client can see is an [`ApiError`]: a closed set of variants, each with a stable
//! machine-readable `code` and an HTTP status. The body never carries internals (SQL text,
//! paths, key ids, stack traces): unexpected errors are logged with their chain here and
//! answered with a generic 500.

use std::fmt;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::request_id;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answered to a client. Each variant maps to one status and one stable `code`.
#[derive(thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON")]
    MalformedJson { line: usize, column: usize },
    #[error("the request body has a field this endpoint does not accept: `{field}`")]
    UnknownField { field: String },
    #[error("the request body does not have the expected shape")]
    InvalidBody { line: usize, column: usize },
    #[error("the request body must be a JSON object")]
    NotAnObject,
    #[error("`{field}` holds a NUL or another control character, which no text field takes")]
    UnprintableText { field: String },
    #[error("the query string or path parameters are not valid")]
    InvalidParameters,
    #[error("the request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be sent as `{expected}`")]
    UnsupportedMediaType { expected: &'static str },
    #[error("authentication is required")]
    Unauthenticated,
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("too many failed logins for this account: try again later")]
    LoginThrottled { retry_after: Duration },
    #[error("the session is no longer valid: log in again")]
    SessionInvalid,
    #[error("a refresh token was used twice; the session has been revoked")]
    SessionRevoked,
    #[error("the password must be changed first (POST /api/auth/password)")]
    PasswordChangeRequired,
    #[error("the current password is not correct")]
    CurrentPasswordIncorrect,
    #[error("{0}")]
    PasswordRejected(clinicd_identity::policy::PolicyViolation),
    #[error("the new password must differ from the current one")]
    PasswordUnchanged,
    #[error("the second-factor code or challenge is not valid: log in again")]
    InvalidMfa,
    #[error("the code is not valid")]
    InvalidMfaCode,
    #[error("a second factor is already enrolled")]
    MfaAlreadyEnrolled,
    #[error("no second-factor enrolment is pending")]
    MfaNotPending,
    #[error("no second factor is enrolled")]
    MfaNotEnrolled,
    #[error(
        "this account has failed to log in repeatedly: solve the challenge and send its response"
    )]
    ChallengeRequired,
    #[error("no fallback channel for one-time codes is configured")]
    MfaFallbackDisabled,
    #[error("this request needs the session's CSRF token in the X-CSRF-Token header")]
    CsrfTokenInvalid,
    #[error("the caller is not allowed to do this")]
    PermissionDenied,
    #[error("this needs the `{0}` permission")]
    MissingPermission(&'static str),
    #[error("a role you hold requires a second factor: enrol one (POST /api/auth/mfa/totp) first")]
    MfaEnrolmentRequired,
    #[error("permissions you do not hold cannot be granted: {0}")]
    PermissionNotHeld(String),
    #[error("no one can change their own roles or account status")]
    OwnAccount,
    #[error("an emergency access cannot be reviewed by the person who made it")]
    OwnReview,
    #[error(
        "no one can put themselves on a care team: another member of staff assigns them, or they use break-the-glass"
    )]
    SelfAssignment,
    #[error("a proposal is approved by another administrator than the one who made it")]
    OwnProposal,
    #[error("the proposal has expired: propose the change again")]
    ProposalExpired,
    #[error("the proposal has already been decided")]
    ProposalDecided,
    #[error(
        "no out-of-band channel is configured to deliver one-time passwords to their owners (CLINICD_MFA_FALLBACK)"
    )]
    CredentialChannelUnavailable,
    #[error("this would leave no active administrator")]
    LastAdministrator,
    #[error("built-in roles cannot be changed or deleted")]
    BuiltInRole,
    #[error("the role is still assigned to users")]
    RoleInUse,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("the provider is already booked at that time")]
    AppointmentOverlap,
    #[error("{0}")]
    InvalidTransition(String),
    #[error("only the author may change or sign a draft note")]
    NotAuthor,
    #[error("the note is signed and cannot change: amend it instead")]
    NoteSigned,
    #[error("only a signed note can be amended")]
    NoteNotSigned,
    #[error("the file is larger than the limit of {limit} bytes")]
    FileTooLarge { limit: u64 },
    #[error(
        "the file's content is not one of the allowed types (judged by its bytes, not its name or declared type)"
    )]
    UnsupportedFileType,
    #[error("{0}")]
    InvalidMultipart(&'static str),
    #[error("the upload ended before the whole file arrived; nothing was stored")]
    UploadIncomplete,
    #[error("the stored file failed its integrity check and was not served; the event is audited")]
    FileIntegrity,
    #[error("the file store is temporarily unavailable; nothing was stored")]
    StorageUnavailable,
    #[error("the data was destroyed with its key and cannot be recovered")]
    DataDestroyed,
    /// A legal hold covers the patient: nothing of theirs may be destroyed until it is released.
    #[error(
        "legal hold {0} covers this patient's records: nothing of theirs can be deleted, purged, archived or erased until it is released"
    )]
    LegalHold(uuid::Uuid),
    /// An erasure the retention rules still forbid (and whose legal basis does not override).
    #[error("{0}")]
    RetentionApplies(String),
    #[error("an erasure is approved by another person than the one who asked for it")]
    OwnErasure,
    #[error("this update needs an If-Match header with the ETag of the version it changes")]
    PreconditionRequired,
    #[error("the resource has changed since it was read: read it again (its ETag is current)")]
    PreconditionFailed,
    /// A field failed validation; the problem names the field, never its value.
    #[error("`{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("cross-origin requests from this origin are not allowed")]
    OriginNotAllowed,
    #[error("no resource at this path")]
    NotFound,
    #[error("this method is not allowed on this resource")]
    MethodNotAllowed,
    #[error("too many requests: try again later")]
    RateLimited { retry_after: Duration },
    /// A restricted item the caller may not read: the label is named, the content never.
    #[error(
        "this item is labelled {0}: reading it needs the permission of each of its sensitivity codes and a place on the patient's care team"
    )]
    RestrictedContent(String),
    /// The caller's daily limit of patients exported or downloaded (docs/lifecycle.md).
    #[error(
        "you have reached your daily limit of {limit} patients exported or downloaded; the security office has been told"
    )]
    ExportLimit { limit: u32, retry_after: Duration },
    /// A stored PDF that cannot carry the download watermark is not released unstamped.
    #[error(
        "this PDF cannot carry the download watermark (it is damaged or password-protected), so it is not released; upload a copy without a password"
    )]
    PdfUnstampable,
    #[error("the service is temporarily unavailable")]
    Unavailable,
    /// The client's address is blocked (automatic after an attack pattern, or by an officer).
    #[error(
        "requests from this address are blocked for a while after repeated suspicious requests; contact the clinic's security office if this is a mistake"
    )]
    Blocked { retry_after: Duration },
    /// The account is blocked by the security office or after suspicious use.
    #[error("this account is blocked; contact the clinic's security office")]
    AccountBlocked,
    /// Anything we did not expect. Logged with its chain; the client sees only `internal_error`.
    #[error("an internal error occurred")]
    Unexpected(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An error status produced by a layer below us (actix or a library) without a problem
    /// body: keeps its status and gets a generic body.
    #[error("the request could not be processed")]
    Other(StatusCode),
}

impl ApiError {
    /// An error no handler expected. One caused by a dependency being down (the database
    /// restarting, the key provider unreachable) is 503: the request can be retried and nothing
    /// was done, which a generic 500 would not say. Everything else is a 500.
    pub fn unexpected(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let err = err.into();
        if dependency_unavailable(err.as_ref()) {
            tracing::warn!(error.chain = %ErrorChain(err.as_ref()), "a dependency is unavailable");
            return Self::Unavailable;
        }
        Self::Unexpected(err)
    }

    /// The stable, machine-readable code of this error. Clients branch on this, never on text.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson { .. } => "malformed_json",
            Self::UnknownField { .. } => "unknown_field",
            Self::InvalidBody { .. } | Self::NotAnObject => "invalid_body",
            Self::UnprintableText { .. } => "invalid_field",
            Self::InvalidParameters => "invalid_parameters",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidCredentials => "invalid_credentials",
            Self::LoginThrottled { .. } => "login_throttled",
            Self::SessionInvalid => "session_invalid",
            Self::SessionRevoked => "session_revoked",
            Self::PasswordChangeRequired => "password_change_required",
            Self::CurrentPasswordIncorrect => "current_password_incorrect",
            Self::PasswordRejected(violation) => violation.code(),
            Self::PasswordUnchanged => "password_unchanged",
            Self::InvalidMfa => "invalid_mfa",
            Self::InvalidMfaCode => "invalid_mfa_code",
            Self::MfaAlreadyEnrolled => "mfa_already_enrolled",
            Self::MfaNotPending => "mfa_not_pending",
            Self::MfaNotEnrolled => "mfa_not_enrolled",
            Self::ChallengeRequired => "challenge_required",
            Self::MfaFallbackDisabled => "mfa_fallback_disabled",
            Self::CsrfTokenInvalid => "csrf_token_invalid",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::PermissionDenied | Self::MissingPermission(_) => "permission_denied",
            Self::MfaEnrolmentRequired => "mfa_enrolment_required",
            Self::PermissionNotHeld(_) => "permission_not_held",
            Self::OwnAccount => "own_account",
            Self::OwnReview => "own_review",
            Self::SelfAssignment => "self_assignment",
            Self::OwnProposal => "own_proposal",
            Self::ProposalExpired => "proposal_expired",
            Self::ProposalDecided => "proposal_decided",
            Self::CredentialChannelUnavailable => "credential_channel_unavailable",
            Self::LastAdministrator => "last_administrator",
            Self::BuiltInRole => "built_in_role",
            Self::RoleInUse => "role_in_use",
            Self::Conflict(_) => "conflict",
            Self::PreconditionRequired => "precondition_required",
            Self::AppointmentOverlap => "appointment_overlap",
            Self::InvalidTransition(_) => "invalid_transition",
            Self::NotAuthor => "not_author",
            Self::NoteSigned => "note_signed",
            Self::NoteNotSigned => "note_not_signed",
            Self::PreconditionFailed => "precondition_failed",
            Self::FileTooLarge { .. } => "file_too_large",
            Self::UnsupportedFileType => "unsupported_file_type",
            Self::InvalidMultipart(_) => "invalid_multipart",
            Self::UploadIncomplete => "upload_incomplete",
            Self::FileIntegrity => "file_integrity_failed",
            Self::StorageUnavailable => "storage_unavailable",
            Self::DataDestroyed => "data_destroyed",
            Self::LegalHold(_) => "legal_hold",
            Self::RetentionApplies(_) => "retention_applies",
            Self::OwnErasure => "own_erasure",
            Self::InvalidField { .. } => "invalid_field",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::RestrictedContent(_) => "restricted_content",
            Self::ExportLimit { .. } => "export_limit",
            Self::PdfUnstampable => "pdf_unstampable",
            Self::Unavailable => "service_unavailable",
            Self::Blocked { .. } => "blocked",
            Self::AccountBlocked => "account_blocked",
            Self::Unexpected(_) => "internal_error",
            Self::Other(status) => generic_code(*status),
        }
    }

    fn title(&self) -> &'static str {
        self.status_code().canonical_reason().unwrap_or("Error")
    }

    /// A problem body for a bare error status from a lower layer.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::UNAUTHORIZED => Self::Unauthenticated,
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable,
            other => Self::Other(other),
        }
    }

    pub fn problem(&self) -> Problem {
        let code = self.code();
        Problem {
            problem_type: format!("urn:clinicd:problem:{code}"),
            title: self.title().to_owned(),
            status: self.status_code().as_u16(),
            detail: self.to_string(),
            code: code.to_owned(),
            field: match self {
                Self::InvalidField { field, .. } => Some((*field).to_owned()),
                Self::UnprintableText { field } => Some(field.clone()),
                _ => None,
            },
            request_id: request_id::current().map(|id| id.to_string()),
        }
    }
}

fn generic_code(status: StatusCode) -> &'static str {
    if status.is_server_error() {
        "internal_error"
    } else {
        "bad_request"
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MalformedJson { .. }
            | Self::UnknownField { .. }
            | Self::InvalidBody { .. }
            | Self::NotAnObject
            | Self::InvalidParameters => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthenticated
            | Self::InvalidCredentials
            | Self::SessionInvalid
            | Self::SessionRevoked => StatusCode::UNAUTHORIZED,
            Self::LoginThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::PasswordChangeRequired | Self::CurrentPasswordIncorrect => StatusCode::FORBIDDEN,
            Self::PasswordRejected(_) | Self::PasswordUnchanged | Self::InvalidMfaCode => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::InvalidMfa => StatusCode::UNAUTHORIZED,
            Self::MfaAlreadyEnrolled
            | Self::MfaNotPending
            | Self::MfaNotEnrolled
            | Self::MfaFallbackDisabled => StatusCode::CONFLICT,
            Self::ChallengeRequired => StatusCode::UNAUTHORIZED,
            Self::OriginNotAllowed
            | Self::CsrfTokenInvalid
            | Self::PermissionDenied
            | Self::MissingPermission(_)
            | Self::MfaEnrolmentRequired
            | Self::PermissionNotHeld(_)
            | Self::OwnAccount
            | Self::OwnReview
            | Self::SelfAssignment
            | Self::OwnProposal => StatusCode::FORBIDDEN,
            Self::ProposalExpired | Self::ProposalDecided | Self::CredentialChannelUnavailable => {
                StatusCode::CONFLICT
            }
            Self::LastAdministrator | Self::BuiltInRole | Self::RoleInUse | Self::Conflict(_) => {
                StatusCode::CONFLICT
            }
            Self::InvalidField { .. } | Self::UnprintableText { .. } | Self::PdfUnstampable => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Self::AppointmentOverlap
            | Self::InvalidTransition(_)
            | Self::NoteSigned
            | Self::NoteNotSigned => StatusCode::CONFLICT,
            Self::NotAuthor => StatusCode::FORBIDDEN,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::FileTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedFileType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidMultipart(_) | Self::UploadIncomplete => StatusCode::BAD_REQUEST,
            // The store handed back bytes that do not authenticate: an upstream failure.
            Self::FileIntegrity => StatusCode::BAD_GATEWAY,
            Self::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DataDestroyed => StatusCode::GONE,
            Self::LegalHold(_) | Self::RetentionApplies(_) => StatusCode::CONFLICT,
            Self::OwnErasure => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RateLimited { .. } | Self::ExportLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Blocked { .. } | Self::AccountBlocked | Self::RestrictedContent(_) => {
                StatusCode::FORBIDDEN
            }
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Other(status) => *status,
        }
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        if let Self::Unexpected(err) = self {
            // The chain goes to the log (never to the client); error types here carry no PHI.
            tracing::error!(error.chain = %ErrorChain(err.as_ref()), "unexpected error");
        }
        let mut response = HttpResponse::build(self.status_code());
        // The audit layer records the code as the reason of a failed request.
        response
            .extensions_mut()
            .insert(crate::audit::ErrorCode(self.code()));
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        match self {
            Self::RateLimited { retry_after }
            | Self::ExportLimit { retry_after, .. }
            | Self::LoginThrottled { retry_after }
            | Self::Blocked { retry_after } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs(*retry_after)));
            }
            Self::Unauthenticated => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        response.body(problem_bytes(&self.problem()))
    }
}

fn problem_bytes(problem: &Problem) -> Vec<u8> {
    // Serialising a struct of strings and integers cannot fail; keep a fixed body just in case.
    serde_json::to_vec(problem).unwrap_or_else(|_| br#"{"code":"internal_error"}"#.to_vec())
}

/// Whole seconds, rounded up, never 0: a client told "retry after 0" would retry at once.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self)?;
        if let Self::Unexpected(err) = self {
            write!(f, ": {}", ErrorChain(err.as_ref()))?;
        }
        Ok(())
    }
}

/// Formats an error with its sources, `outer: inner: innermost`.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// The body of every error response (RFC 7807 problem details).
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:clinicd:problem:rate_limited",
    "title": "Too Many Requests",
    "status": 429,
    "detail": "too many requests: try again later",
    "code": "rate_limited",
    "request_id": "0192b3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b"
}))]
pub struct Problem {
    /// A URI naming the problem class: `urn:clinicd:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the status.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Human-readable explanation. Never contains submitted values.
    pub detail: String,
    /// Stable machine-readable error code.
    pub code: String,
    /// For `invalid_field`: the name of the field that failed validation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request id, as in the `X-Request-Id` response header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Whether anything in the error's chain says a dependency is unreachable or going away, not that
/// this request was wrong: a broken or refused connection, a pool with no connection to give, a
/// server shutting down or refusing connections (SQLSTATE classes 08 and 57P), the key provider
/// unreachable.
fn dependency_unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    std::iter::successors(Some(err), |e| e.source()).any(|e| {
        if let Some(db) = e.downcast_ref::<sqlx::Error>() {
            return clinicd_identity::failure::is_outage(db);
        }
        // Identity carries database failures as text plus an outage flag (no driver types in
        // its API), so the flag is what says "the database went away".
        if let Some(failure) = e.downcast_ref::<clinicd_identity::Failure>() {
            return failure.is_outage();
        }
        if let Some(provider) = e.downcast_ref::<clinicd_crypto::ProviderError>() {
            return matches!(provider, clinicd_crypto::ProviderError::Unavailable(_));
        }
        if let Some(crypto) = e.downcast_ref::<clinicd_crypto::CryptoError>() {
            return matches!(
                crypto,
                clinicd_crypto::CryptoError::Provider(clinicd_crypto::ProviderError::Unavailable(
                    _
                ))
            );
        }
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::BrokenPipe
                    | K::NotConnected
                    | K::UnexpectedEof
            )
        })
    })
}

impl From<clinicd_rbac::RbacError> for ApiError {
    fn from(error: clinicd_rbac::RbacError) -> Self {
        use clinicd_rbac::RbacError as E;
        match error {
            E::NotFound => Self::NotFound,
            E::UnknownRole(_) => Self::InvalidField {
                field: "roles",
                reason: "names a role that does not exist".into(),
            },
            E::UnknownUser => Self::InvalidField {
                field: "user_id",
                reason: "names no active user".into(),
            },
            E::RoleExists(_) => Self::Conflict("a role with this name already exists"),
            E::InvalidRoleName => Self::InvalidField {
                field: "name",
                reason: error.to_string(),
            },
            E::InvalidDescription => Self::InvalidField {
                field: "description",
                reason: error.to_string(),
            },
            E::BuiltInRole => Self::BuiltInRole,
            E::RoleInUse(_) => Self::RoleInUse,
            E::NotHeld(missing) => Self::PermissionNotHeld(missing.names().join(", ")),
            E::OwnRoles => Self::OwnAccount,
            E::LastAdministrator => Self::LastAdministrator,
            E::InvalidReason => Self::InvalidField {
                field: "reason",
                reason: error.to_string(),
            },
            E::OwnReview => Self::OwnReview,
            E::SelfAssignment => Self::SelfAssignment,
            E::InvalidAssignmentReason => Self::InvalidField {
                field: "reason",
                reason: error.to_string(),
            },
            E::ProposalExpired => Self::ProposalExpired,
            E::ProposalDecided => Self::ProposalDecided,
            E::OwnProposal => Self::OwnProposal,
            E::User(error) => error.into(),
            E::Database(_) | E::Crypto(_) | E::Identity(_) | E::Account(_) => {
                Self::unexpected(error)
            }
        }
    }
}

impl From<clinicd_identity::users::UserError> for ApiError {
    fn from(error: clinicd_identity::users::UserError) -> Self {
        use clinicd_identity::users::UserError as E;
        let invalid = |field: &'static str, error: &E| Self::InvalidField {
            field,
            reason: error.to_string(),
        };
        match error {
            E::InvalidUsername => invalid("username", &error),
            E::InvalidEmail => invalid("email", &error),
            E::InvalidDisplayName => invalid("display_name", &error),
            E::UsernameTaken => Self::Conflict("that username is taken"),
            E::EmailTaken => Self::Conflict("that e-mail address is taken"),
            E::Database(_) => Self::unexpected(error),
        }
    }
}

impl From<clinicd_domain::StoreError> for ApiError {
    fn from(error: clinicd_domain::StoreError) -> Self {
        use clinicd_domain::StoreError as E;
        match error {
            E::NotFound => Self::NotFound,
            E::VersionMismatch(_) => Self::PreconditionFailed,
            // Handled where a session is confirmed; should it escape, the caller is refused.
            E::SessionNotConfirmed => Self::Unauthenticated,
            // Crypto-shredded: the record is gone for good, and says so.
            E::Crypto(clinicd_crypto::CryptoError::KeyDestroyed) => Self::DataDestroyed,
            E::Corrupt | E::Database(_) | E::Crypto(_) => Self::unexpected(error),
        }
    }
}

impl From<clinicd_domain::FieldError> for ApiError {
    fn from(error: clinicd_domain::FieldError) -> Self {
        Self::InvalidField {
            field: error.field,
            reason: error.reason.to_owned(),
        }
    }
}

impl From<clinicd_domain::BookingError> for ApiError {
    fn from(error: clinicd_domain::BookingError) -> Self {
        use clinicd_domain::BookingError as E;
        match error {
            E::Overlap => Self::AppointmentOverlap,
            E::UnknownProvider => Self::InvalidField {
                field: "provider_id",
                reason: "names no active user".into(),
            },
            E::PatientOutOfReach => Self::InvalidField {
                field: "patient_id",
                reason: "names no patient in your care".into(),
            },
            E::Transition { .. } => Self::InvalidTransition(error.to_string()),
            E::Store(error) => error.into(),
        }
    }
}

impl From<clinicd_domain::export::ExportError<clinicd_files::FileError>> for ApiError {
    fn from(error: clinicd_domain::export::ExportError<clinicd_files::FileError>) -> Self {
        use clinicd_domain::export::ExportError as E;
        match error {
            E::Records(error) => error.into(),
            E::Documents(error) => error.into(),
        }
    }
}

impl From<clinicd_domain::NoteError> for ApiError {
    fn from(error: clinicd_domain::NoteError) -> Self {
        use clinicd_domain::NoteError as E;
        match error {
            E::NotAuthor => Self::NotAuthor,
            E::Signed => Self::NoteSigned,
            E::NotSigned => Self::NoteNotSigned,
            E::Store(error) => error.into(),
        }
    }
}

impl From<clinicd_domain::ConsentError> for ApiError {
    fn from(error: clinicd_domain::ConsentError) -> Self {
        use clinicd_domain::ConsentError as E;
        match error {
            E::AlreadyRevoked => Self::Conflict("the consent is already revoked"),
            E::Store(error) => error.into(),
        }
    }
}

impl From<clinicd_files::FileError> for ApiError {
    fn from(error: clinicd_files::FileError) -> Self {
        use clinicd_files::FileError as E;
        match error {
            E::TooLarge { limit } => Self::FileTooLarge { limit },
            E::TypeNotAllowed(_) => Self::UnsupportedFileType,
            E::Incomplete(_) => Self::UploadIncomplete,
            E::Integrity(_) | E::ObjectMissing => Self::FileIntegrity,
            E::Held(hold) => Self::LegalHold(hold),
            E::Store(_) => {
                tracing::error!(error = %error, "the object store failed");
                Self::StorageUnavailable
            }
            E::Crypto(clinicd_crypto::CryptoError::KeyDestroyed) => Self::DataDestroyed,
            E::Audit(_) => Self::Unavailable,
            E::Crypto(_) | E::Database(_) | E::Encrypt(_) => Self::unexpected(error),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the store failed")]
    struct Wrapper(#[source] Box<dyn std::error::Error + Send + Sync>);

    fn status(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StatusCode {
        ApiError::unexpected(err).status_code()
    }

    #[test]
    fn a_dependency_going_away_is_503_and_anything_else_500() {
        assert_eq!(
            status(sqlx::Error::PoolTimedOut),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            status(sqlx::Error::Io(reset)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // However deep in the chain.
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            status(Wrapper(Box::new(sqlx::Error::Io(refused)))),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let kms = clinicd_crypto::CryptoError::Provider(
            clinicd_crypto::ProviderError::Unavailable("timed out".into()),
        );
        assert_eq!(
            status(Wrapper(Box::new(kms))),
            StatusCode::SERVICE_UNAVAILABLE
        );

        // A session check that lost its database mid-query (identity carries the failure as
        // text plus an outage flag), directly and behind identity's own error.
        let lost = clinicd_identity::Failure::from(sqlx::Error::PoolClosed);
        assert_eq!(status(lost.clone()), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status(clinicd_identity::sessions::SessionError::Database(lost)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(clinicd_identity::Failure::from("a bad row")),
            StatusCode::INTERNAL_SERVER_ERROR
        );

        // A bug, a broken invariant or damaged data is not the network's fault.
        assert_eq!(status("boom"), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            status(Wrapper(Box::new(clinicd_crypto::CryptoError::Integrity))),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status(sqlx::Error::RowNotFound),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(status(full), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

//! The second factor: completing a login, TOTP enrolment, turning MFA off, backup codes and
//! trusted devices.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use clinicd_identity::account::AccountError;
use clinicd_identity::login::LoginError;
use clinicd_identity::mfa::MfaError;
use clinicd_identity::users;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{Audit, AuditNote};
use crate::extract::client_info;
use crate::extract::{Authenticated, Json};
use crate::problem::{ApiError, Problem};
use crate::routes::auth::session::{
    TokenResponse, count_login_class, session_note, session_response,
};
use crate::state::ApiState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaRequest {
    pub challenge_token: String,
    /// A 6-digit TOTP code or a backup code (`XXXX-XXXX-XXXX-XXXX`).
    #[schema(value_type = String, format = Password)]
    pub code: SecretString,
    /// As at login: tokens in `__Host-` cookies for a browser client.
    #[serde(default)]
    pub cookies: bool,
    /// Remember this device for 30 days: later logins from it need only the password. The
    /// token comes back as `device_token` (or in the `__Host-clinicd-device` cookie).
    #[serde(default)]
    pub trust_device: bool,
}

/// Completes a login with a TOTP or backup code. The challenge is used up either way.
#[utoipa::path(
    post,
    path = "/api/auth/mfa",
    tag = "auth",
    request_body = MfaRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong, reused or expired code, or a used or expired challenge", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, or too many failures for this account", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn complete_mfa(
    req: HttpRequest,
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<MfaRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = client_info(&req);
    count_login_class(
        &state,
        &client,
        &challenge_subject(&state, &body.challenge_token),
    )
    .await?;
    let login = &state.identity.login;
    let verified = login
        .check_mfa(&body.challenge_token, body.code.expose_secret(), &client)
        .await
        .map_err(mfa_error)?;
    let username = verified.username().to_owned();
    let mut tx = audit.begin().await?;
    let ok = login
        .finish_mfa(&mut tx, verified, body.trust_device, &client)
        .await
        .map_err(mfa_error)?;
    let note = session_note(&ok.tokens, Some(&username));
    audit.commit(tx, StatusCode::OK, note).await?;
    Ok(session_response(
        &state,
        ok.tokens,
        ok.must_change_password,
        body.cookies,
        ok.trusted_device,
    ))
}

/// The subject an MFA step counts against in the login class: the challenge's user, or one
/// shared key for tokens that are not valid challenges.
fn challenge_subject(state: &ApiState, token: &str) -> String {
    match state.identity.login.challenge_user(token) {
        Some(user) => format!("mfa:{}", user.0),
        None => "mfa:invalid".to_owned(),
    }
}

fn mfa_error(error: LoginError) -> ApiError {
    match error {
        LoginError::InvalidMfa => ApiError::InvalidMfa,
        other => ApiError::unexpected(other),
    }
}

/// Everything an authenticator app needs, shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TotpEnrolment {
    /// Base32, for typing into an app by hand.
    pub secret: String,
    pub otpauth_uri: String,
    /// A PNG of the `otpauth://` URI as a QR code, base64-encoded.
    pub qr_png_base64: String,
}

/// Starts (or restarts) TOTP enrolment for the caller.
#[utoipa::path(
    post,
    path = "/api/auth/mfa/totp",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Enrolment started; confirm with a first code", body = TotpEnrolment),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The password must be changed first (password_change_required), or a cookie client sent no valid X-CSRF-Token (csrf_token_invalid)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already enrolled", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn begin_totp(
    caller: Authenticated,
    state: web::Data<ApiState>,
    audit: Audit,
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    let user = users::find_by_id(&state.identity.db, principal.user_id)
        .await
        .map_err(ApiError::unexpected)?
        .ok_or(ApiError::Unauthenticated)?;
    let mut tx = audit.begin().await?;
    match state
        .identity
        .mfa
        .begin(&mut tx, user.id, &user.username)
        .await
    {
        Ok(enrolment) => {
            audit
                .commit(tx, StatusCode::OK, AuditNote::default())
                .await?;
            Ok(HttpResponse::Ok().json(TotpEnrolment {
                secret: enrolment.secret_base32.expose_secret().to_owned(),
                otpauth_uri: enrolment.otpauth_uri.expose_secret().to_owned(),
                qr_png_base64: enrolment.qr_png_base64,
            }))
        }
        Err(MfaError::AlreadyEnrolled) => Err(ApiError::MfaAlreadyEnrolled),
        Err(other) => Err(ApiError::unexpected(other)),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotpRequest {
    /// The current 6-digit code from the authenticator app.
    pub code: String,
}

/// Ten single-use backup codes, shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackupCodes {
    pub backup_codes: Vec<String>,
}

/// Confirms TOTP enrolment with a first code; turns the second factor on.
#[utoipa::path(
    post,
    path = "/api/auth/mfa/totp/confirm",
    tag = "auth",
    security(("bearer" = [])),
    request_body = ConfirmTotpRequest,
    responses(
        (status = 200, description = "Enrolled; backup codes shown once", body = BackupCodes),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The password must be changed first (password_change_required), or a cookie client sent no valid X-CSRF-Token (csrf_token_invalid)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No enrolment pending", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The code is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn confirm_totp(
    caller: Authenticated,
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<ConfirmTotpRequest>,
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    let mut tx = audit.begin().await?;
    match state
        .identity
        .mfa
        .confirm(&mut tx, principal.user_id, &body.code)
        .await
    {
        Ok(codes) => {
            audit
                .commit(tx, StatusCode::OK, AuditNote::default())
                .await?;
            Ok(HttpResponse::Ok().json(BackupCodes {
                backup_codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
            }))
        }
        Err(MfaError::InvalidCode) => Err(ApiError::InvalidMfaCode),
        Err(MfaError::NotPending) => Err(ApiError::MfaNotPending),
        Err(other) => Err(ApiError::unexpected(other)),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableMfaRequest {
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// A current TOTP code or an unused backup code.
    #[schema(value_type = String, format = Password)]
    pub code: SecretString,
}

/// Turns the caller's second factor off. Needs the password and a current code; every trusted
/// device and every other session of the caller ends.
#[utoipa::path(
    post,
    path = "/api/auth/mfa/disable",
    tag = "auth",
    security(("bearer" = [])),
    request_body = DisableMfaRequest,
    responses(
        (status = 204, description = "Second factor removed"),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong password (current_password_incorrect), a pending password change, or a cookie client without a valid X-CSRF-Token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No second factor is enrolled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The code is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn disable_mfa(
    caller: Authenticated,
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<DisableMfaRequest>,
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    let (user, session) = (principal.user_id, principal.session_id);
    state
        .identity
        .prove_for_mfa_disable(user, session, &body.password, body.code.expose_secret())
        .await
        .map_err(account_error)?;
    let mut tx = audit.begin().await?;
    state
        .identity
        .disable_mfa(&mut tx, user, session)
        .await
        .map_err(account_error)?;
    audit
        .commit(tx, StatusCode::NO_CONTENT, AuditNote::default())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateBackupCodesRequest {
    /// A current TOTP code or an unused backup code.
    #[schema(value_type = String, format = Password)]
    pub code: SecretString,
}

/// Replaces the caller's backup codes with ten new ones, shown once; the old ones stop working.
#[utoipa::path(
    post,
    path = "/api/auth/mfa/backup-codes",
    tag = "auth",
    security(("bearer" = [])),
    request_body = RegenerateBackupCodesRequest,
    responses(
        (status = 200, description = "New backup codes, shown once", body = BackupCodes),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A pending password change, or a cookie client without a valid X-CSRF-Token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No second factor is enrolled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The code is not valid", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn regenerate_backup_codes(
    caller: Authenticated,
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<RegenerateBackupCodesRequest>,
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    let (user, session) = (principal.user_id, principal.session_id);
    state
        .identity
        .prove_code(
            user,
            session,
            body.code.expose_secret(),
            "mfa_backup_codes_failed",
        )
        .await
        .map_err(account_error)?;
    let mut tx = audit.begin().await?;
    let codes = state
        .identity
        .regenerate_backup_codes(&mut tx, user, session)
        .await
        .map_err(account_error)?;
    audit
        .commit(tx, StatusCode::OK, AuditNote::default())
        .await?;
    Ok(HttpResponse::Ok().json(BackupCodes {
        backup_codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
    }))
}

fn account_error(error: AccountError) -> ApiError {
    match error {
        AccountError::WrongPassword => ApiError::CurrentPasswordIncorrect,
        AccountError::InvalidCode => ApiError::InvalidMfaCode,
        AccountError::NotEnrolled => ApiError::MfaNotEnrolled,
        AccountError::Internal(message) => ApiError::unexpected(message),
    }
}

/// A device the caller trusted at an MFA login.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    pub id: Uuid,
    /// The browser or app that asked (its user agent).
    pub label: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The caller's trusted devices, newest first.
#[utoipa::path(
    get,
    path = "/api/auth/devices",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Live trusted devices", body = [DeviceView]),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The password must be changed first", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_devices(
    caller: Authenticated,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    let devices = state
        .identity
        .devices
        .list(principal.user_id)
        .await
        .map_err(ApiError::unexpected)?;
    let views: Vec<DeviceView> = devices
        .into_iter()
        .map(|d| DeviceView {
            id: d.id,
            label: d.label,
            created_at: d.created_at,
            expires_at: d.expires_at,
            last_used_at: d.last_used_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Stops trusting one of the caller's devices: its next login needs the second factor.
#[utoipa::path(
    delete,
    path = "/api/auth/devices/{id}",
    tag = "auth",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Device id")),
    responses(
        (status = 204, description = "No longer trusted"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A pending password change, or a cookie client without a valid X-CSRF-Token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such trusted device of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_device(
    caller: Authenticated,
    state: web::Data<ApiState>,
    audit: Audit,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    let device = id.into_inner();
    let mut tx = audit.begin().await?;
    let revoked = state
        .identity
        .devices
        .revoke(&mut *tx, principal.user_id, device)
        .await
        .map_err(ApiError::unexpected)?;
    if !revoked {
        return Err(ApiError::NotFound);
    }
    let note = AuditNote {
        resource_id: Some(device.to_string()),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::NO_CONTENT, note).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendCodeRequest {
    pub challenge_token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CodeSent {
    /// Where the code went: `email` (or `sms`).
    pub channel: String,
    /// Seconds the code stays valid.
    pub expires_in: i64,
}

/// Sends a one-time code out of band (the fallback for a user without their authenticator
/// app), when the clinic has configured a channel. Complete the login with it at
/// `/api/auth/mfa`. At most three sends per challenge.
#[utoipa::path(
    post,
    path = "/api/auth/mfa/send",
    tag = "auth",
    request_body = SendCodeRequest,
    responses(
        (status = 202, description = "Code sent", body = CodeSent),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A used, expired or unknown challenge, or three sends already", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No fallback channel is configured", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The channel could not take the code", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn send_code(
    req: HttpRequest,
    state: web::Data<ApiState>,
    audit: Audit,
    body: Json<SendCodeRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = client_info(&req);
    count_login_class(
        &state,
        &client,
        &challenge_subject(&state, &body.challenge_token),
    )
    .await?;
    let mut tx = audit.begin().await?;
    match state
        .identity
        .login
        .send_fallback_code(&mut tx, &body.challenge_token, &client)
        .await
    {
        Ok(channel) => {
            let note = AuditNote {
                actor: state
                    .identity
                    .login
                    .challenge_user(&body.challenge_token)
                    .map(|u| u.0),
                ..AuditNote::default()
            };
            audit.commit(tx, StatusCode::ACCEPTED, note).await?;
            Ok(HttpResponse::Accepted().json(CodeSent {
                channel: channel.to_owned(),
                expires_in: clinicd_identity::otp::CODE_TTL_SECS,
            }))
        }
        Err(LoginError::InvalidMfa) => Err(ApiError::InvalidMfa),
        Err(LoginError::FallbackUnavailable) => Err(ApiError::MfaFallbackDisabled),
        Err(LoginError::FallbackUnavailableNow(reason)) => {
            tracing::warn!(reason = %reason, "one-time code not delivered");
            Err(ApiError::Unavailable)
        }
        Err(other) => Err(ApiError::unexpected(other)),
    }
}

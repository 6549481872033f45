//! Login, token refresh, logout and the current principal.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use clinicd_identity::login::{LoginError, LoginOutcome};
use clinicd_identity::mfa::MfaError;
use clinicd_identity::sessions::{ClientInfo, IssuedTokens, SessionError};
use clinicd_identity::users;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::client_ip::ClientIp;
use crate::cookies;
use crate::extract::{Authenticated, Caller};
use crate::problem::{ApiError, Problem};
use crate::rate_limit::{RateClass, RateKey};
use crate::state::ApiState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "dr.quinn", max_length = 64)]
    pub username: String,
    #[schema(value_type = String, format = Password, max_length = 1024)]
    pub password: SecretString,
    /// A longer absolute session lifetime on a trusted device.
    #[serde(default)]
    pub remember_me: bool,
    /// Browser clients: deliver the tokens in `__Host-` cookies (HttpOnly, Secure,
    /// SameSite=Strict) instead of the body. Unsafe requests then need `X-CSRF-Token`.
    #[serde(default)]
    pub cookies: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// API clients. Cookie clients send `{}`: the refresh cookie and `X-CSRF-Token` are used.
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
}

/// A new session or a refreshed one. API clients get the tokens here: the access token is a JWT
/// for `Authorization: Bearer`, valid for `expires_in` seconds; the refresh token is single
/// use: each refresh returns a new one. Cookie clients get them only as cookies, and the body
/// carries the CSRF token instead.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[schema(example = "Bearer")]
    pub token_type: String,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Cookie clients only: send it as `X-CSRF-Token` on every unsafe request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
    pub session_id: Uuid,
    /// The password must be changed before anything else (first login, administrator reset).
    pub must_change_password: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub session_id: Uuid,
    pub must_change_password: bool,
    pub mfa_enabled: bool,
}

fn client_info(req: &HttpRequest) -> ClientInfo {
    ClientInfo {
        ip: req.extensions().get::<ClientIp>().map(|c| c.0),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

/// Answers a login, MFA completion or refresh: tokens in the body for API clients, in cookies
/// (plus the CSRF token in the body) for browser clients.
fn session_response(
    state: &ApiState,
    tokens: IssuedTokens,
    must_change_password: bool,
    as_cookies: bool,
) -> HttpResponse {
    let expires_in = (tokens.access_expires_at - chrono::Utc::now())
        .num_seconds()
        .max(0);
    let mut response = HttpResponse::Ok();
    let body = if as_cookies {
        let csrf_token = state.identity.sessions.csrf_token(tokens.session_id);
        cookies::set_session(&mut response, &tokens, &csrf_token);
        TokenResponse {
            access_token: None,
            token_type: "Cookie".into(),
            expires_in,
            refresh_token: None,
            csrf_token: Some(csrf_token),
            session_id: tokens.session_id,
            must_change_password,
        }
    } else {
        TokenResponse {
            expires_in,
            token_type: "Bearer".into(),
            refresh_token: Some(tokens.refresh_token.expose_secret().to_owned()),
            access_token: Some(tokens.access_token),
            csrf_token: None,
            session_id: tokens.session_id,
            must_change_password,
        }
    };
    response.json(body)
}

/// Logs in with a username and password.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 202, description = "Password accepted; a second factor is required: POST /api/auth/mfa", body = MfaChallengeResponse),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Invalid username or password (the same answer for unknown users and locked accounts)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, or too many failures for this account", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn login(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = client_info(&req);
    // Keyed by address and username together, so one clinic's shared address does not lock
    // every colleague out, and one username cannot be hammered from one address.
    if let Some(ip) = client.ip {
        let key = RateKey::IpAndUsername(ip, body.username.trim().to_lowercase());
        if let Err(refusal) = state.limits.check(RateClass::Login, &key) {
            state.metrics.count_rate_limited(refusal.policy);
            return Err(ApiError::RateLimited {
                retry_after: refusal.retry_after,
            });
        }
    }
    match state
        .identity
        .login
        .login(&body.username, &body.password, body.remember_me, &client)
        .await
    {
        Ok(LoginOutcome::LoggedIn(ok)) => Ok(session_response(
            &state,
            ok.tokens,
            ok.must_change_password,
            body.cookies,
        )),
        Ok(LoginOutcome::MfaRequired {
            challenge_token,
            expires_in_secs,
        }) => Ok(HttpResponse::Accepted().json(MfaChallengeResponse {
            mfa_required: true,
            challenge_token,
            expires_in: expires_in_secs,
        })),
        Err(LoginError::InvalidCredentials) => Err(ApiError::InvalidCredentials),
        Err(LoginError::TooSoon { retry_after_secs }) => Err(ApiError::LoginThrottled {
            retry_after: std::time::Duration::from_secs(retry_after_secs),
        }),
        Err(other) => Err(ApiError::unexpected(other)),
    }
}

/// Exchanges a refresh token for a new access token and a new refresh token.
#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens; the presented refresh token is used up", body = TokenResponse),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, expired, idle or revoked session; or a reused refresh token, which revokes the session", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cookie client sent no valid X-CSRF-Token; the session is unchanged", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let sessions = &state.identity.sessions;
    let client = client_info(&req);
    let (result, as_cookies) = match &body.refresh_token {
        Some(token) => (sessions.refresh(token, &client).await, false),
        None => {
            let token = cookies::refresh_token(&req).ok_or(ApiError::SessionInvalid)?;
            // The cookie came by itself; the CSRF token proves the page asked for it.
            let csrf = cookies::csrf_header(&req).map(str::to_owned);
            let allowed = |session| {
                csrf.as_deref()
                    .is_some_and(|value| sessions.csrf_token_matches(session, value))
            };
            let token = SecretString::from(token);
            (sessions.refresh_if(&token, &client, allowed).await, true)
        }
    };
    match result {
        Ok(tokens) => {
            // The forced-change flag is the user's, not the session's: read it afresh.
            let must_change = users::find_by_id(&state.identity.db, tokens.user_id)
                .await
                .map_err(ApiError::unexpected)?
                .is_some_and(|user| user.must_change_password);
            Ok(session_response(&state, tokens, must_change, as_cookies))
        }
        Err(SessionError::Refused) => Err(ApiError::CsrfTokenInvalid),
        Err(SessionError::Reused) => Err(ApiError::SessionRevoked),
        Err(SessionError::Database(error)) => Err(ApiError::unexpected(error)),
        Err(_) => Err(ApiError::SessionInvalid),
    }
}

/// Ends the current session; its tokens stop working at once.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cookie client sent no valid X-CSRF-Token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout(caller: Caller, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let Caller(principal) = caller;
    state
        .identity
        .sessions
        .revoke(principal.user_id, principal.session_id, "logout")
        .await
        .map_err(ApiError::unexpected)?;
    let mut response = HttpResponse::NoContent();
    cookies::clear_session(&mut response);
    Ok(response.finish())
}

/// The authenticated caller.
#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn me(caller: Caller, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let Caller(principal) = caller;
    let user = users::find_by_id(&state.identity.db, principal.user_id)
        .await
        .map_err(ApiError::unexpected)?
        .ok_or(ApiError::Unauthenticated)?;
    Ok(HttpResponse::Ok().json(Me {
        user_id: user.id.0,
        username: user.username,
        display_name: user.display_name,
        email: user.email,
        session_id: principal.session_id,
        must_change_password: user.must_change_password,
        mfa_enabled: user.mfa_enabled,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    /// 12 to 128 characters; not a breached password; not containing the username.
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    pub new_password: SecretString,
}

/// Changes the caller's password. Every other session of theirs is revoked; this one stays.
#[utoipa::path(
    post,
    path = "/api/auth/password",
    tag = "auth",
    security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The current password is not correct (current_password_incorrect), or a cookie client sent no valid X-CSRF-Token (csrf_token_invalid)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The new password is refused: password_too_short, password_too_long, password_too_common, password_contains_username or password_unchanged", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn change_password(
    caller: Caller,
    state: web::Data<ApiState>,
    body: web::Json<ChangePasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    use clinicd_identity::login::ChangePasswordError;
    let Caller(principal) = caller;
    let result = state
        .identity
        .login
        .change_password(
            principal.user_id,
            principal.session_id,
            &body.current_password,
            &body.new_password,
        )
        .await;
    match result {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(ChangePasswordError::WrongPassword) => Err(ApiError::CurrentPasswordIncorrect),
        Err(ChangePasswordError::Policy(violation)) => Err(ApiError::PasswordRejected(violation)),
        Err(ChangePasswordError::Unchanged) => Err(ApiError::PasswordUnchanged),
        Err(other) => Err(ApiError::unexpected(other)),
    }
}

/// One of the caller's live sessions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// The session making this request.
    pub current: bool,
}

/// The caller's live sessions, newest first.
#[utoipa::path(
    get,
    path = "/api/auth/sessions",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Live sessions", body = [SessionView]),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The password must be changed first", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_sessions(
    caller: Authenticated,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    let sessions = state
        .identity
        .sessions
        .list(principal.user_id)
        .await
        .map_err(ApiError::unexpected)?;
    let views: Vec<SessionView> = sessions
        .into_iter()
        .map(|s| SessionView {
            current: s.id == principal.session_id,
            id: s.id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.absolute_expires_at,
            client_ip: s.client_ip,
            user_agent: s.user_agent,
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// Revokes one of the caller's sessions. Another user's session is not found.
#[utoipa::path(
    delete,
    path = "/api/auth/sessions/{id}",
    tag = "auth",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The password must be changed first (password_change_required), or a cookie client sent no valid X-CSRF-Token (csrf_token_invalid)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session of the caller", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_session(
    caller: Authenticated,
    state: web::Data<ApiState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    let revoked = state
        .identity
        .sessions
        .revoke(principal.user_id, id.into_inner(), "revoked_by_user")
        .await
        .map_err(ApiError::unexpected)?;
    if revoked {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}

/// The password step succeeded and the account has a second factor.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MfaChallengeResponse {
    pub mfa_required: bool,
    /// Single use, valid for `expires_in` seconds; send it with a code to `/api/auth/mfa`.
    pub challenge_token: String,
    pub expires_in: i64,
}

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
    body: web::Json<MfaRequest>,
) -> Result<HttpResponse, ApiError> {
    match state
        .identity
        .login
        .complete_mfa(
            &body.challenge_token,
            body.code.expose_secret(),
            &client_info(&req),
        )
        .await
    {
        Ok(ok) => Ok(session_response(
            &state,
            ok.tokens,
            ok.must_change_password,
            body.cookies,
        )),
        Err(LoginError::InvalidMfa) => Err(ApiError::InvalidMfa),
        Err(other) => Err(ApiError::unexpected(other)),
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
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    let user = users::find_by_id(&state.identity.db, principal.user_id)
        .await
        .map_err(ApiError::unexpected)?
        .ok_or(ApiError::Unauthenticated)?;
    match state.identity.mfa.begin(user.id, &user.username).await {
        Ok(enrolment) => Ok(HttpResponse::Ok().json(TotpEnrolment {
            secret: enrolment.secret_base32.expose_secret().to_owned(),
            otpauth_uri: enrolment.otpauth_uri.expose_secret().to_owned(),
            qr_png_base64: enrolment.qr_png_base64,
        })),
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
    body: web::Json<ConfirmTotpRequest>,
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    match state
        .identity
        .mfa
        .confirm(principal.user_id, &body.code)
        .await
    {
        Ok(codes) => Ok(HttpResponse::Ok().json(BackupCodes {
            backup_codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
        })),
        Err(MfaError::InvalidCode) => Err(ApiError::InvalidMfaCode),
        Err(MfaError::NotPending) => Err(ApiError::MfaNotPending),
        Err(other) => Err(ApiError::unexpected(other)),
    }
}

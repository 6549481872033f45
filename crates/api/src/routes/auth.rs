//! Login, token refresh, logout and the current principal.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use clinicd_identity::devices::NewDevice;
use clinicd_identity::login::{LoginAttempt, LoginError, LoginOutcome};
use clinicd_identity::sessions::{ClientInfo, IssuedTokens, SessionError};
use clinicd_identity::users;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditNote;
use crate::client_ip::ClientIp;
use crate::cookies;
use crate::extract::{Authenticated, Caller};
use crate::problem::{ApiError, Problem};
use crate::rate_limit::{RateClass, RateKey};
use crate::routes::mfa::MfaChallengeResponse;
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
    /// A trusted-device token from an earlier MFA login (`trust_device`); it stands in for the
    /// second factor. Cookie clients have it in the `__Host-clinicd-device` cookie instead.
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(default)]
    pub device_token: Option<SecretString>,
    /// After repeated failures, when a challenge verifier is configured: the response token of
    /// the challenge widget (code `challenge_required` asks for it).
    #[serde(default)]
    pub challenge_response: Option<String>,
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
    /// API clients that asked to trust this device: send it as `device_token` at later logins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
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

pub(crate) fn client_info(req: &HttpRequest) -> ClientInfo {
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
pub(crate) fn session_response(
    state: &ApiState,
    tokens: IssuedTokens,
    must_change_password: bool,
    as_cookies: bool,
    device: Option<NewDevice>,
) -> HttpResponse {
    let expires_in = (tokens.access_expires_at - chrono::Utc::now())
        .num_seconds()
        .max(0);
    let (user_id, session_id) = (tokens.user_id, tokens.session_id);
    let mut response = HttpResponse::Ok();
    let body = if as_cookies {
        let csrf_token = state.identity.sessions.csrf_token(tokens.session_id);
        cookies::set_session(&mut response, &tokens, &csrf_token);
        if let Some(device) = &device {
            cookies::set_device(&mut response, device);
        }
        TokenResponse {
            access_token: None,
            token_type: "Cookie".into(),
            expires_in,
            refresh_token: None,
            csrf_token: Some(csrf_token),
            device_token: None,
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
            device_token: device.map(|d| d.token.expose_secret().to_owned()),
            session_id: tokens.session_id,
            must_change_password,
        }
    };
    let mut response = response.json(body);
    AuditNote {
        actor: Some(user_id.0),
        session: Some(session_id),
        ..AuditNote::default()
    }
    .attach(&mut response);
    response
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
        (status = 401, description = "Invalid username or password (invalid_credentials: the same answer for unknown users and locked accounts), or a challenge response is required after repeated failures (challenge_required)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited, or too many failures for this account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The challenge verifier cannot be reached (fail closed)", body = Problem, content_type = "application/problem+json"),
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
    let device = body
        .device_token
        .clone()
        .or_else(|| cookies::device_token(&req).map(SecretString::from));
    match state
        .identity
        .login
        .attempt(
            &LoginAttempt {
                username: &body.username,
                password: &body.password,
                remember_me: body.remember_me,
                device: device.as_ref(),
                challenge_response: body.challenge_response.as_deref(),
            },
            &client,
        )
        .await
    {
        Ok(LoginOutcome::LoggedIn(ok)) => Ok(session_response(
            &state,
            ok.tokens,
            ok.must_change_password,
            body.cookies,
            None,
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
        Err(LoginError::ChallengeRequired) => Err(ApiError::ChallengeRequired),
        Err(LoginError::ChallengeUnavailable) => Err(ApiError::Unavailable),
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
            Ok(session_response(
                &state,
                tokens,
                must_change,
                as_cookies,
                None,
            ))
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
    super::deleted(revoked)
}

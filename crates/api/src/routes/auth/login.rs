//! Login, token refresh, logout and the current principal.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use clinicd_identity::login::{LoginAttempt, LoginError, LoginOutcome};
use clinicd_identity::sessions::SessionError;
use clinicd_identity::users;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{Audit, AuditNote};
use crate::cookies;
use crate::extract::client_info;
use crate::extract::{Authenticated, Caller, Json};
use crate::problem::{ApiError, Problem};
use crate::routes::auth::session::{
    MfaChallengeResponse, TokenResponse, count_login_class, session_note, session_response,
};
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
    audit: Audit,
    body: Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = client_info(&req);
    count_login_class(&state, &client, &body.username.trim().to_lowercase()).await?;
    let device = body
        .device_token
        .clone()
        .or_else(|| cookies::device_token(&req).map(SecretString::from));
    let login = &state.identity.login;
    let attempt = LoginAttempt {
        username: &body.username,
        password: &body.password,
        remember_me: body.remember_me,
        challenge_response: body.challenge_response.as_deref(),
    };
    let verified = match login.check(&attempt, &client).await {
        Ok(verified) => verified,
        Err(LoginError::InvalidCredentials) => {
            signal_failed_login(&state, &client, &body.username, &body.password).await;
            return Err(ApiError::InvalidCredentials);
        }
        Err(error) => return Err(login_error(error)),
    };
    let username = verified.username().to_owned();
    let user = verified.user_id();
    // Only after the password: an account block is no answer to someone without it.
    if state.secops.account_blocked(user.0).is_some() {
        state.metrics.count_blocked("account");
        return Err(ApiError::AccountBlocked);
    }
    let mut tx = audit.begin().await?;
    let outcome = login
        .finish(&mut tx, verified, device.as_ref(), &client)
        .await
        .map_err(login_error)?;
    match outcome {
        LoginOutcome::LoggedIn(ok) => {
            let note = session_note(&ok.tokens, Some(&username));
            audit.commit(tx, StatusCode::OK, note).await?;
            Ok(session_response(
                &state,
                ok.tokens,
                ok.must_change_password,
                body.cookies,
                None,
            ))
        }
        LoginOutcome::MfaRequired {
            challenge_token,
            expires_in_secs,
        } => {
            let note = AuditNote {
                actor: Some(user.0),
                actor_username: Some(username),
                ..AuditNote::default()
            };
            audit.commit(tx, StatusCode::ACCEPTED, note).await?;
            Ok(HttpResponse::Accepted().json(MfaChallengeResponse {
                mfa_required: true,
                challenge_token,
                expires_in: expires_in_secs,
            }))
        }
    }
}

/// The answer to a failed password step: every refusal that could tell whether the account
/// exists is the same for known and unknown usernames.
/// A failed login is a signal for the stuffing and spraying rules (keyed hashes of the
/// username and password only); a failure to record it is counted and logged, and the answer
/// stays `invalid_credentials`.
async fn signal_failed_login(
    state: &ApiState,
    client: &clinicd_identity::sessions::ClientInfo,
    username: &str,
    password: &SecretString,
) {
    use secrecy::ExposeSecret;
    let Some(ip) = client.ip else {
        return;
    };
    let recorded = state
        .secops
        .login_failed(ip, username.trim(), password.expose_secret())
        .await;
    if let Err(error) = recorded {
        state.metrics.count_signal_failure();
        tracing::warn!(%error, "could not record a failed login signal");
    }
}

fn login_error(error: LoginError) -> ApiError {
    match error {
        LoginError::InvalidCredentials => ApiError::InvalidCredentials,
        LoginError::ChallengeRequired => ApiError::ChallengeRequired,
        LoginError::ChallengeUnavailable => ApiError::Unavailable,
        LoginError::TooSoon { retry_after_secs } => ApiError::LoginThrottled {
            retry_after: std::time::Duration::from_secs(retry_after_secs),
        },
        other => ApiError::unexpected(other),
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
    audit: Audit,
    body: Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let sessions = &state.identity.sessions;
    let client = client_info(&req);
    let mut tx = audit.begin().await?;
    let (result, as_cookies) = match &body.refresh_token {
        Some(token) => (
            sessions.refresh_in(&mut tx, token, &client, |_| true).await,
            false,
        ),
        None => {
            let token = cookies::refresh_token(&req).ok_or(ApiError::SessionInvalid)?;
            // The cookie came by itself; the CSRF token proves the page asked for it.
            let csrf = cookies::csrf_header(&req).map(str::to_owned);
            let allowed = |session| {
                csrf.as_deref()
                    .is_some_and(|value| sessions.csrf_token_matches(session, value))
            };
            let token = SecretString::from(token);
            (
                sessions.refresh_in(&mut tx, &token, &client, allowed).await,
                true,
            )
        }
    };
    match result {
        Ok(tokens) => {
            // The forced-change flag is the user's, not the session's: read it afresh.
            let user = users::find_in(&mut *tx, tokens.user_id)
                .await
                .map_err(ApiError::unexpected)?;
            let must_change = user.as_ref().is_some_and(|u| u.must_change_password);
            let note = session_note(&tokens, user.as_ref().map(|u| u.username.as_str()));
            audit.commit(tx, StatusCode::OK, note).await?;
            Ok(session_response(
                &state,
                tokens,
                must_change,
                as_cookies,
                None,
            ))
        }
        Err(SessionError::Reused) => {
            // The session is revoked: that change and its event stand together.
            let revoked = ApiError::SessionRevoked;
            let note = AuditNote {
                reason: Some(revoked.code().to_owned()),
                ..AuditNote::default()
            };
            audit.commit(tx, revoked.status_code(), note).await?;
            Err(revoked)
        }
        Err(SessionError::Refused) => Err(ApiError::CsrfTokenInvalid),
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
pub async fn logout(
    caller: Caller,
    state: web::Data<ApiState>,
    audit: Audit,
) -> Result<HttpResponse, ApiError> {
    let Caller(principal) = caller;
    let mut tx = audit.begin().await?;
    state
        .identity
        .sessions
        .revoke_in(&mut tx, principal.user_id, principal.session_id, "logout")
        .await
        .map_err(ApiError::unexpected)?;
    audit
        .commit(tx, StatusCode::NO_CONTENT, AuditNote::default())
        .await?;
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
pub async fn me(caller: Caller) -> Result<HttpResponse, ApiError> {
    // The session check read the account in the same query: no second one here.
    let Caller(principal) = caller;
    Ok(HttpResponse::Ok().json(Me {
        user_id: principal.user_id.0,
        username: principal.username,
        display_name: principal.profile.display_name,
        email: principal.profile.email,
        session_id: principal.session_id,
        must_change_password: principal.must_change_password,
        mfa_enabled: principal.profile.mfa_enabled,
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
    audit: Audit,
    body: Json<ChangePasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    use clinicd_identity::login::ChangePasswordError;
    let Caller(principal) = caller;
    let (user, session) = (principal.user_id, principal.session_id);
    let login = &state.identity.login;
    let changed = async {
        let new = login
            .check_password_change(user, session, &body.current_password, &body.new_password)
            .await?;
        let mut tx = audit
            .begin()
            .await
            .map_err(|_| ChangePasswordError::Database("no connection for the change".into()))?;
        login.change_password(&mut tx, user, session, new).await?;
        Ok::<_, ChangePasswordError>(tx)
    };
    match changed.await {
        Ok(tx) => {
            audit
                .commit(tx, StatusCode::NO_CONTENT, AuditNote::default())
                .await?;
            Ok(HttpResponse::NoContent().finish())
        }
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
    audit: Audit,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let Authenticated(principal) = caller;
    let session = id.into_inner();
    let mut tx = audit.begin().await?;
    let revoked = state
        .identity
        .sessions
        .revoke_in(&mut tx, principal.user_id, session, "revoked_by_user")
        .await
        .map_err(ApiError::unexpected)?;
    if !revoked {
        return Err(ApiError::NotFound);
    }
    let note = AuditNote {
        resource_id: Some(session.to_string()),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::NO_CONTENT, note).await?;
    Ok(HttpResponse::NoContent().finish())
}

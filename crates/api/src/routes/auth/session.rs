//! What every way of opening a session answers: the tokens (in the body, or in cookies for a
//! browser), or the challenge for a second factor; its audit note; and the login-class rate
//! count that a failed step costs.

use actix_web::HttpResponse;
use clinicd_identity::devices::NewDevice;
use clinicd_identity::sessions::{ClientInfo, IssuedTokens};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditNote;
use crate::cookies;
use crate::problem::ApiError;
use crate::rate_limit::{RateClass, RateKey};
use crate::state::ApiState;

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
    response.json(body)
}

/// The audit note of a session opened or refreshed: its user and session.
pub(crate) fn session_note(tokens: &IssuedTokens, username: Option<&str>) -> AuditNote {
    AuditNote {
        actor: Some(tokens.user_id.0),
        actor_username: username.map(str::to_owned),
        session: Some(tokens.session_id),
        ..AuditNote::default()
    }
}

/// Counts a request of the `login` class (every step of logging in) against the limit of its
/// client address and `subject` together: the username, or the user of an MFA challenge. By
/// both, so one clinic's shared address does not lock every colleague out, and one account
/// cannot be hammered from one address.
pub(crate) async fn count_login_class(
    state: &ApiState,
    client: &ClientInfo,
    subject: &str,
) -> Result<(), ApiError> {
    let Some(ip) = client.ip else {
        return Ok(());
    };
    let key = RateKey::IpAndUsername(ip, subject.to_owned());
    crate::rate_limit::check_class(state, RateClass::Login, &key)
        .await?
        .map(|_| ())
        .map_err(|refusal| {
            state.metrics.count_rate_limited(refusal.policy);
            tracing::warn!(policy = refusal.policy, "rate limit exceeded");
            ApiError::RateLimited {
                retry_after: refusal.retry_after,
            }
        })
}

/// The password step succeeded and the account has a second factor.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MfaChallengeResponse {
    pub mfa_required: bool,
    /// Single use, valid for `expires_in` seconds; send it with a code to `/api/auth/mfa`.
    pub challenge_token: String,
    pub expires_in: i64,
}

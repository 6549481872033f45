//! Who is calling: the authenticated principal (bearer token, or session cookie plus CSRF
//! token) and the grants the authorisation layer loaded for the route.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use clinicd_identity::sessions::{ClientInfo, Principal, SessionError};
use clinicd_rbac::Grants;

use crate::client_ip::ClientIp;
use crate::cookies;
use crate::problem::ApiError;
use crate::state::ApiState;

/// The authenticated caller: a valid access token (`Authorization: Bearer`, or the session
/// cookie plus `X-CSRF-Token` on unsafe methods; see [`crate::cookies`]) of a live session
/// of an active user who need not change their password first. No token or a bad one is 401
/// `unauthenticated`; a pending forced password change is 403 `password_change_required`. The
/// session is checked on every request, so a revoked session's tokens stop working at once.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// Any caller with a live session, including one who must change their password first: only
/// for the password change itself, `me` and logout.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let principal = principal(req);
        let req = req.clone();
        Box::pin(async move {
            let principal = remember(&req, principal.await?);
            if principal.must_change_password {
                return Err(ApiError::PasswordChangeRequired);
            }
            Ok(Self(principal))
        })
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let principal = principal(req);
        let req = req.clone();
        Box::pin(async move { Ok(Self(remember(&req, principal.await?))) })
    }
}

/// The caller's grants, as loaded by the authorisation layer for a route that needs a
/// permission (which it has checked). On any other route this refuses: fail closed.
#[derive(Debug, Clone)]
pub struct Granted(pub Grants);

impl FromRequest for Granted {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Grants>()
                .cloned()
                .map(Self)
                .ok_or(ApiError::PermissionDenied),
        )
    }
}

/// Keeps the principal with the request, for the audit layer's actor and session.
fn remember(req: &HttpRequest, principal: Principal) -> Principal {
    req.extensions_mut().insert(principal.clone());
    principal
}

/// How the caller presented their access token.
enum Credential {
    Bearer(String),
    /// From the session cookie; `csrf` is the `X-CSRF-Token` header if the method needs one.
    Cookie {
        token: String,
        csrf: Option<Option<String>>,
    },
}

fn credential(req: &HttpRequest) -> Option<Credential> {
    // An explicit header wins: a request carrying one was made by code, not by a browser
    // attaching cookies on its own.
    if let Some(token) = bearer_token(req) {
        return Some(Credential::Bearer(token));
    }
    let token = cookies::access_token(req)?;
    let csrf =
        cookies::is_unsafe(req.method()).then(|| cookies::csrf_header(req).map(str::to_owned));
    Some(Credential::Cookie { token, csrf })
}

/// Authenticates the caller, once per request: the authorisation layer may already have done
/// it for this request, and then its principal is reused.
pub(crate) fn principal(req: &HttpRequest) -> LocalBoxFuture<'static, Result<Principal, ApiError>> {
    if let Some(principal) = req.extensions().get::<Principal>().cloned() {
        return Box::pin(std::future::ready(Ok(principal)));
    }
    let credential = credential(req);
    let state = req.app_data::<web::Data<ApiState>>().cloned();
    Box::pin(async move {
        let (Some(credential), Some(state)) = (credential, state) else {
            return Err(ApiError::Unauthenticated);
        };
        let (token, csrf) = match credential {
            Credential::Bearer(token) => (token, None),
            Credential::Cookie { token, csrf } => (token, csrf),
        };
        let sessions = &state.identity.sessions;
        let principal = match sessions.authenticate(&token).await {
            Ok(principal) => principal,
            Err(SessionError::Database(error)) => return Err(ApiError::unexpected(error)),
            Err(_) => return Err(ApiError::Unauthenticated),
        };
        if let Some(block) = state.secops.account_blocked(principal.user_id.0) {
            state.metrics.count_blocked("account");
            tracing::warn!(block = %block.id, "request of a blocked account refused");
            return Err(ApiError::AccountBlocked);
        }
        if let Some(presented) = csrf {
            let valid = presented
                .is_some_and(|value| sessions.csrf_token_matches(principal.session_id, &value));
            if !valid {
                tracing::warn!(session_id = %principal.session_id, "cookie request without a valid CSRF token refused");
                return Err(ApiError::CsrfTokenInvalid);
            }
        }
        Ok(principal)
    })
}

fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_owned())
}

pub fn client_info(req: &HttpRequest) -> ClientInfo {
    ClientInfo {
        ip: req.extensions().get::<ClientIp>().map(|c| c.0),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

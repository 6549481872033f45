//! Who is calling: the authenticated principal (bearer token, or session cookie plus CSRF
//! token) and the grants the authorisation layer loaded for the route.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use clinicd_identity::sessions::{ClientInfo, Principal, Recalled, SessionError};
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

/// The caller of a route whose handler confirms the session in its own statement
/// ([`crate::routes::MatchedRoute::confirms_session_in_statement`]): checked in full, or
/// admitted on a remembered session that the handler must confirm (see [`Provisional`]).
#[derive(Debug, Clone)]
pub enum Admitted {
    Confirmed(Principal),
    Provisional(Provisional),
}

impl FromRequest for Admitted {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let provisional = req.extensions().get::<Provisional>().cloned();
        if let Some(provisional) = provisional {
            return Box::pin(std::future::ready(Ok(Self::Provisional(provisional))));
        }
        let authenticated = Authenticated::from_request(req, payload);
        Box::pin(async move { Ok(Self::Confirmed(authenticated.await?.0)) })
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

impl Credential {
    /// The token, and the CSRF header if the request must carry one.
    fn parts(self) -> (String, Option<Option<String>>) {
        match self {
            Self::Bearer(token) => (token, None),
            Self::Cookie { token, csrf } => (token, csrf),
        }
    }
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
        let (token, csrf) = credential.parts();
        let sessions = &state.identity.sessions;
        let principal = match sessions.authenticate(&token).await {
            Ok(principal) => principal,
            Err(SessionError::Database(error)) => return Err(ApiError::unexpected(error)),
            Err(_) => return Err(ApiError::Unauthenticated),
        };
        admissible(&state, &principal, csrf)?;
        Ok(principal)
    })
}

/// A caller admitted on what this instance remembers of their session (see
/// [`clinicd_identity::sessions::SessionService::recall`]): the authorisation layer keeps it
/// with a request to a route whose handler confirms the session in its own statement. It is
/// not a [`Principal`] of the request until a statement has confirmed it ([`confirmed`]).
#[derive(Debug, Clone)]
pub struct Provisional(pub Recalled);

/// The caller as this instance remembers their session, if it checked it in full within the
/// last minute; `None` calls for the full check. The token, the account block and the CSRF
/// token are checked as for any request.
pub(crate) fn recalled(req: &HttpRequest) -> Result<Option<Recalled>, ApiError> {
    let (Some(credential), Some(state)) = (
        credential(req),
        req.app_data::<web::Data<ApiState>>().cloned(),
    ) else {
        return Err(ApiError::Unauthenticated);
    };
    let (token, csrf) = credential.parts();
    let recalled = match state.identity.sessions.recall(&token) {
        Ok(Some(recalled)) => recalled,
        Ok(None) => return Ok(None),
        Err(_) => return Err(ApiError::Unauthenticated),
    };
    admissible(&state, &recalled.principal, csrf)?;
    Ok(Some(recalled))
}

/// A statement has confirmed the provisional caller's session: from here on they are the
/// request's principal (for the audit trail's actor, and for any later extractor).
pub(crate) fn confirmed(req: &HttpRequest, state: &ApiState, provisional: &Provisional) {
    state
        .metrics
        .count_session_check(crate::metrics::SessionCheckKind::InStatement);
    req.extensions_mut().remove::<Provisional>();
    remember(req, provisional.0.principal.clone());
}

/// A statement could not confirm the provisional caller's session: forget it and check in
/// full, as the authorisation layer would have (the principal and grants then stay with the
/// request). On a refusal the provisional caller stays, and the authorisation layer answers
/// with its own full check (which names a missing permission for the audit trail).
pub(crate) async fn check_in_full(
    req: &HttpRequest,
    state: &ApiState,
    provisional: &Provisional,
) -> Result<(Principal, Grants), ApiError> {
    state
        .metrics
        .count_session_check(crate::metrics::SessionCheckKind::Full);
    state.identity.sessions.forget(provisional.0.check.session);
    crate::middleware::authorize::admit_in_full(req)
        .await
        .map_err(|(error, _)| error)
}

/// The account block and, for a cookie on an unsafe method, the CSRF token: checked after the
/// session, whichever way it was checked.
fn admissible(
    state: &ApiState,
    principal: &Principal,
    csrf: Option<Option<String>>,
) -> Result<(), ApiError> {
    if let Some(block) = state.secops.account_blocked(principal.user_id.0) {
        state.metrics.count_blocked("account");
        tracing::warn!(block = %block.id, "request of a blocked account refused");
        return Err(ApiError::AccountBlocked);
    }
    if let Some(presented) = csrf {
        let sessions = &state.identity.sessions;
        let valid = presented
            .is_some_and(|value| sessions.csrf_token_matches(principal.session_id, &value));
        if !valid {
            tracing::warn!(session_id = %principal.session_id, "cookie request without a valid CSRF token refused");
            return Err(ApiError::CsrfTokenInvalid);
        }
    }
    Ok(())
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

//! Blocks and attack signals. A request from a blocked address is refused here, before CORS,
//! limits, authentication or any handler, with 403 `blocked` and `Retry-After` (the block list
//! is in memory: no query). After the inner layers answer, a refusal that shows a pattern is
//! recorded as a signal for automatic blocking (docs/security-operations.md): a 404 on a route
//! that names a resource id (enumeration: out-of-care-team records answer 404 too), a
//! presented token that did not authenticate (token probing), a CORS or CSRF
//! refusal. Only bad outcomes are recorded: the success path writes nothing. Failed logins are
//! signalled by the login handler, which knows the username.

use std::net::IpAddr;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use chrono::Utc;
use clinicd_identity::sessions::Principal;
use clinicd_secops::{Kind, Signal};

use crate::audit::ErrorCode;
use crate::client_ip::ClientIp;
use crate::cookies;
use crate::problem::ApiError;
use crate::routes::MatchedRoute;

pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = super::state(req.request()).clone();
    let ip = req.extensions().get::<ClientIp>().map(|c| c.0);
    if let Some(hit) = ip.and_then(|ip| state.secops.ip_blocked(ip)) {
        state.metrics.count_blocked("ip");
        tracing::warn!(block = %hit.id, "request from a blocked address refused");
        let left = (hit.expires_at - Utc::now()).to_std().unwrap_or_default();
        let response = ApiError::Blocked { retry_after: left }.error_response();
        return Ok(req.into_response(response));
    }
    let presented_token = req.headers().contains_key(header::AUTHORIZATION)
        || cookies::access_token(req.request()).is_some();
    let path: String = req.path().chars().take(200).collect();
    let names_id = MatchedRoute::of(req.request()).is_some_and(|r| r.0.path.contains('{'));
    let response = next.call(req).await?.map_into_boxed_body();
    let Some(ip) = ip else {
        return Ok(response);
    };
    let code = response
        .response()
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0);
    if let Some(kind) = classify(response.status(), code, presented_token, names_id) {
        let user = response
            .request()
            .extensions()
            .get::<Principal>()
            .map(|p| p.user_id.0);
        record(&state, kind, ip, user, path).await;
    }
    Ok(response)
}

/// Which pattern a refusal belongs to, if any.
fn classify(
    status: StatusCode,
    code: Option<&str>,
    presented_token: bool,
    names_id: bool,
) -> Option<Kind> {
    match code {
        Some("origin_not_allowed" | "csrf_token_invalid") => Some(Kind::Origin),
        Some("unauthenticated" | "session_invalid" | "session_revoked") if presented_token => {
            Some(Kind::Token)
        }
        _ if status == StatusCode::NOT_FOUND && names_id => Some(Kind::Enumeration),
        _ => None,
    }
}

async fn record(
    state: &crate::state::ApiState,
    kind: Kind,
    ip: IpAddr,
    user: Option<uuid::Uuid>,
    path: String,
) {
    // Enumeration counts distinct resources; the other patterns count each refusal.
    let subject = match kind {
        Kind::Enumeration => path,
        _ => uuid::Uuid::now_v7().to_string(),
    };
    let signal = Signal {
        kind,
        ip,
        user,
        subject,
        secondary: None,
    };
    if let Err(error) = state.secops.signal(signal).await {
        state.metrics.count_signal_failure();
        tracing::warn!(%error, kind = kind.as_str(), "could not record an abuse signal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_refusals_by_pattern() {
        let c = |status: u16, code, token, id| {
            classify(
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                code,
                token,
                id,
            )
        };
        assert_eq!(
            c(403, Some("origin_not_allowed"), false, false),
            Some(Kind::Origin)
        );
        assert_eq!(
            c(403, Some("csrf_token_invalid"), true, false),
            Some(Kind::Origin)
        );
        assert_eq!(
            c(401, Some("unauthenticated"), true, false),
            Some(Kind::Token)
        );
        assert_eq!(
            c(401, Some("unauthenticated"), false, false),
            None,
            "no token: not probing"
        );
        assert_eq!(
            c(404, Some("not_found"), true, true),
            Some(Kind::Enumeration)
        );
        assert_eq!(
            c(404, Some("not_found"), true, false),
            None,
            "an unknown path names no record"
        );
        assert_eq!(
            c(403, Some("permission_denied"), true, true),
            None,
            "a role refusal is not per record"
        );
        assert_eq!(
            c(401, Some("invalid_credentials"), false, false),
            None,
            "the login handler signals"
        );
        assert_eq!(c(422, Some("invalid_field"), true, true), None);
        assert_eq!(c(200, None, true, true), None);
    }
}

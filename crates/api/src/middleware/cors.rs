//! CORS: credentialed cross-origin access for the exact origins in `ALLOWED_ORIGINS`; any
//! other origin is refused with 403 problem+json and logged.
//!
//! Written here rather than with actix-cors because that crate answers a refused origin with
//! a bare 400 and gives no hook to log or count it; our policy (exact match, refuse-and-log,
//! problem+json) is a few dozen lines.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

use crate::problem::ApiError;

const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOWED_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "if-match",
    "if-none-match",
    "x-request-id",
    "x-csrf-token",
    "accept",
];
const EXPOSED_HEADERS: &str = "X-Request-Id, RateLimit, RateLimit-Policy, Retry-After, ETag, Location, \
     Clinicd-Download-Id, Clinicd-Downloaded-By, Clinicd-Downloaded-At, Clinicd-Notice";
const MAX_AGE_SECS: &str = "600";

pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        // Not a browser cross-origin request: CORS does not apply.
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if is_same_origin(&origin, req.headers()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let allowed = origin.to_str().is_ok_and(|o| {
        super::state(req.request())
            .settings
            .allowed_origins
            .allows(o)
    });
    let preflight = is_preflight(&req);
    if !allowed || (preflight && !preflight_asks_allowed(req.headers())) {
        let kind = if preflight { "preflight" } else { "request" };
        super::state(req.request()).metrics.count_cors_refused(kind);
        tracing::warn!(
            origin = %truncated(&origin),
            kind,
            "cross-origin request refused"
        );
        return Ok(req.into_response(ApiError::OriginNotAllowed.error_response()));
    }
    if preflight {
        let mut response = HttpResponse::NoContent().finish();
        allow(response.headers_mut(), origin);
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, If-Match, If-None-Match, X-Request-Id, X-CSRF-Token, Accept"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECS),
        );
        return Ok(req.into_response(response));
    }
    let mut response = next.call(req).await?.map_into_boxed_body();
    allow(response.headers_mut(), origin);
    response.headers_mut().insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    Ok(response)
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

fn is_preflight(req: &ServiceRequest) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn preflight_asks_allowed(headers: &HeaderMap) -> bool {
    let method_ok = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| ALLOWED_METHODS.split(", ").any(|allowed| allowed == m));
    let headers_ok = headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .all(|name| ALLOWED_HEADERS.contains(&name.as_str()));
    method_ok && headers_ok
}

/// Browsers send `Origin` on same-origin POSTs too; a request whose origin is this very host
/// (as the browser addressed it) is not cross-origin. A forged Host only fools the forger.
fn is_same_origin(origin: &HeaderValue, headers: &HeaderMap) -> bool {
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

fn truncated(origin: &HeaderValue) -> String {
    String::from_utf8_lossy(origin.as_bytes())
        .chars()
        .take(200)
        .collect()
}

//! Security headers on every response, errors included, and problem+json for every error.
//!
//! Error statuses produced below us without a problem body (a library's bare 4xx or 5xx) get
//! one here, so no client ever sees an error in another format.

use actix_web::ResponseError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;

use crate::docs::DOCS_PATH_PREFIX;
use crate::problem::{ApiError, PROBLEM_JSON};

const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// The docs page runs Swagger UI's own scripts and styles, all served from this origin; Swagger
/// UI sets inline style attributes, hence `'unsafe-inline'` for styles only.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";
const PERMISSIONS_POLICY: &str = "accelerometer=(), autoplay=(), camera=(), display-capture=(), \
     geolocation=(), gyroscope=(), magnetometer=(), microphone=(), midi=(), payment=(), \
     publickey-credentials-get=(), screen-wake-lock=(), usb=(), xr-spatial-tracking=()";

pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let is_docs = req.path().starts_with(DOCS_PATH_PREFIX);
    let response = next.call(req).await?.map_into_boxed_body();
    let mut response = ensure_problem_body(response);
    apply(response.headers_mut(), is_docs);
    Ok(response)
}

fn apply(headers: &mut HeaderMap, is_docs: bool) {
    let csp = if is_docs { DOCS_CSP } else { API_CSP };
    let fixed: [(HeaderName, &'static str); 9] = [
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ),
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("permissions-policy"),
            PERMISSIONS_POLICY,
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn ensure_problem_body(response: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (request, original) = response.into_parts();
    let mut replacement = ApiError::from_status(status).error_response();
    // Keep what the lower layer said about the error (Allow, Retry-After, ...), not its body.
    for (name, value) in original.headers() {
        let describes_body = matches!(
            *name,
            header::CONTENT_TYPE | header::CONTENT_LENGTH | header::CONTENT_ENCODING
        );
        if !describes_body && !replacement.headers().contains_key(name) {
            replacement
                .headers_mut()
                .append(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(request, replacement)
}

//! The route table: the one place where every API route is declared, with its rate-limit
//! class (and, as later issues land, its permission and audit action). The app is built from
//! this table, and a test checks it against the OpenAPI document both ways.

pub mod auth;
pub mod health;
pub mod mfa;

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{ResponseError, web};

use crate::problem::ApiError;
use crate::rate_limit::RateClass;

#[derive(Debug)]
pub struct RouteSpec {
    pub method: Method,
    /// The actix path template, identical to the OpenAPI path.
    pub path: &'static str,
    /// The class limit applied on top of the per-IP limit; `None` for operational probes.
    pub rate_class: Option<RateClass>,
    handler: fn() -> actix_web::Route,
}

pub static ROUTES: &[RouteSpec] = &[
    route(Method::GET, "/health", None, || web::to(health::health)),
    route(Method::GET, "/ready", None, || web::to(health::ready)),
    route(
        Method::POST,
        "/api/auth/login",
        Some(RateClass::Login),
        || web::to(auth::login),
    ),
    route(
        Method::POST,
        "/api/auth/refresh",
        Some(RateClass::Api),
        || web::to(auth::refresh),
    ),
    route(
        Method::POST,
        "/api/auth/logout",
        Some(RateClass::Api),
        || web::to(auth::logout),
    ),
    route(Method::GET, "/api/auth/me", Some(RateClass::Api), || {
        web::to(auth::me)
    }),
    route(
        Method::POST,
        "/api/auth/password",
        Some(RateClass::Api),
        || web::to(auth::change_password),
    ),
    route(
        Method::GET,
        "/api/auth/sessions",
        Some(RateClass::Api),
        || web::to(auth::list_sessions),
    ),
    route(
        Method::DELETE,
        "/api/auth/sessions/{id}",
        Some(RateClass::Api),
        || web::to(auth::revoke_session),
    ),
    route(
        Method::POST,
        "/api/auth/mfa",
        Some(RateClass::Login),
        || web::to(mfa::complete_mfa),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/send",
        Some(RateClass::Login),
        || web::to(mfa::send_code),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/totp",
        Some(RateClass::Api),
        || web::to(mfa::begin_totp),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/totp/confirm",
        Some(RateClass::Api),
        || web::to(mfa::confirm_totp),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/disable",
        Some(RateClass::Api),
        || web::to(mfa::disable_mfa),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/backup-codes",
        Some(RateClass::Api),
        || web::to(mfa::regenerate_backup_codes),
    ),
    route(
        Method::GET,
        "/api/auth/devices",
        Some(RateClass::Api),
        || web::to(mfa::list_devices),
    ),
    route(
        Method::DELETE,
        "/api/auth/devices/{id}",
        Some(RateClass::Api),
        || web::to(mfa::revoke_device),
    ),
];

const fn route(
    method: Method,
    path: &'static str,
    rate_class: Option<RateClass>,
    handler: fn() -> actix_web::Route,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        rate_class,
        handler,
    }
}

/// Registers every route of the table, one resource per path, answering other methods with
/// 405 and an `Allow` header.
pub fn register(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&'static str> = Vec::new();
    for route in ROUTES {
        if !paths.contains(&route.path) {
            paths.push(route.path);
        }
    }
    for path in paths {
        let specs: Vec<&RouteSpec> = ROUTES.iter().filter(|r| r.path == path).collect();
        let allow = specs
            .iter()
            .map(|r| r.method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut resource = web::resource(path);
        for spec in specs {
            resource = resource.route((spec.handler)().method(spec.method.clone()));
        }
        cfg.service(resource.default_service(web::to(move || method_not_allowed(allow.clone()))));
    }
}

async fn method_not_allowed(allow: String) -> actix_web::HttpResponse {
    let mut response = ApiError::MethodNotAllowed.error_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The answer to a DELETE of one of the caller's own things: 204, or 404 when it is not
/// theirs or already gone (the two are not told apart).
pub(crate) fn deleted(found: bool) -> Result<actix_web::HttpResponse, ApiError> {
    if found {
        Ok(actix_web::HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}

/// The rate-limit class of a matched route.
pub fn rate_class(method: &Method, pattern: &str) -> Option<RateClass> {
    ROUTES
        .iter()
        .find(|r| r.path == pattern && r.method == method)
        .and_then(|r| r.rate_class)
}

//! The route table: the one place where every API route is declared, with its rate-limit
//! class and its audit action (and, with RBAC, its permission). The app is built from
//! this table, and a test checks it against the OpenAPI document both ways.

pub mod audit;
pub mod auth;
pub mod health;
pub mod mfa;

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{ResponseError, web};

use clinicd_audit::Action;

use crate::audit::AuditDeclaration;
use crate::problem::ApiError;
use crate::rate_limit::RateClass;

#[derive(Debug)]
pub struct RouteSpec {
    pub method: Method,
    /// The actix path template, identical to the OpenAPI path.
    pub path: &'static str,
    /// The class limit applied on top of the per-IP limit; `None` for operational probes.
    pub rate_class: Option<RateClass>,
    /// What the audit layer records for each request; `None` only for operational probes,
    /// which touch neither PHI nor security state (a test holds every `/api/` route to this).
    pub audit: Option<AuditDeclaration>,
    handler: fn() -> actix_web::Route,
}

const fn audited(action: Action, resource: &'static str) -> Option<AuditDeclaration> {
    Some(AuditDeclaration { action, resource })
}

const LOGIN: Option<RateClass> = Some(RateClass::Login);
const API: Option<RateClass> = Some(RateClass::Api);

pub static ROUTES: &[RouteSpec] = &[
    route(Method::GET, "/health", None, None, || {
        web::to(health::health)
    }),
    route(Method::GET, "/ready", None, None, || web::to(health::ready)),
    route(
        Method::POST,
        "/api/auth/login",
        LOGIN,
        audited(Action::Login, "session"),
        || web::to(auth::login),
    ),
    route(
        Method::POST,
        "/api/auth/refresh",
        API,
        audited(Action::Refresh, "session"),
        || web::to(auth::refresh),
    ),
    route(
        Method::POST,
        "/api/auth/logout",
        API,
        audited(Action::Logout, "session"),
        || web::to(auth::logout),
    ),
    route(
        Method::GET,
        "/api/auth/me",
        API,
        audited(Action::View, "user"),
        || web::to(auth::me),
    ),
    route(
        Method::POST,
        "/api/auth/password",
        API,
        audited(Action::PasswordChange, "user"),
        || web::to(auth::change_password),
    ),
    route(
        Method::GET,
        "/api/auth/sessions",
        API,
        audited(Action::SessionList, "session"),
        || web::to(auth::list_sessions),
    ),
    route(
        Method::DELETE,
        "/api/auth/sessions/{id}",
        API,
        audited(Action::SessionRevoke, "session"),
        || web::to(auth::revoke_session),
    ),
    route(
        Method::POST,
        "/api/auth/mfa",
        LOGIN,
        audited(Action::MfaVerify, "session"),
        || web::to(mfa::complete_mfa),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/send",
        LOGIN,
        audited(Action::MfaSend, "mfa"),
        || web::to(mfa::send_code),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/totp",
        API,
        audited(Action::MfaEnrol, "mfa"),
        || web::to(mfa::begin_totp),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/totp/confirm",
        API,
        audited(Action::MfaEnrol, "mfa"),
        || web::to(mfa::confirm_totp),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/disable",
        API,
        audited(Action::MfaDisable, "mfa"),
        || web::to(mfa::disable_mfa),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/backup-codes",
        API,
        audited(Action::MfaBackupCodes, "mfa"),
        || web::to(mfa::regenerate_backup_codes),
    ),
    route(
        Method::GET,
        "/api/audit/verify",
        API,
        audited(Action::AuditVerify, "audit"),
        || web::to(audit::verify),
    ),
    route(
        Method::GET,
        "/api/audit/events",
        API,
        audited(Action::AuditRead, "audit"),
        || web::to(audit::events),
    ),
    route(
        Method::GET,
        "/api/audit/export/{format}",
        API,
        audited(Action::Export, "audit"),
        || web::to(audit::export),
    ),
    route(
        Method::GET,
        "/api/audit/stats",
        API,
        audited(Action::AuditRead, "audit"),
        || web::to(audit::stats),
    ),
    route(
        Method::GET,
        "/api/audit/patients/{id}/disclosures",
        API,
        audited(Action::AuditRead, "audit"),
        || web::to(audit::disclosures),
    ),
    route(
        Method::GET,
        "/api/auth/devices",
        API,
        audited(Action::DeviceList, "device"),
        || web::to(mfa::list_devices),
    ),
    route(
        Method::DELETE,
        "/api/auth/devices/{id}",
        API,
        audited(Action::DeviceRevoke, "device"),
        || web::to(mfa::revoke_device),
    ),
];

const fn route(
    method: Method,
    path: &'static str,
    rate_class: Option<RateClass>,
    audit: Option<AuditDeclaration>,
    handler: fn() -> actix_web::Route,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        rate_class,
        audit,
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

/// The audit declaration of a matched route.
pub fn audit_of(method: &Method, pattern: &str) -> Option<AuditDeclaration> {
    ROUTES
        .iter()
        .find(|r| r.path == pattern && r.method == method)
        .and_then(|r| r.audit)
}

/// The rate-limit class of a matched route.
pub fn rate_class(method: &Method, pattern: &str) -> Option<RateClass> {
    ROUTES
        .iter()
        .find(|r| r.path == pattern && r.method == method)
        .and_then(|r| r.rate_class)
}

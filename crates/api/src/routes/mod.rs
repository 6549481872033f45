//! The route table: the one place where every API route is declared, with its rate-limit
//! class, its audit action and who may call it. The app is built from
//! this table, and a test checks it against the OpenAPI document both ways.

pub mod admin;
pub mod auth;
pub mod health;
pub mod lifecycle;
pub mod records;
pub mod security;

use admin::{audit, keys, proposals, roles, users};
use auth::{login, mfa};
use records::{appointments, care_team, consents, files, notes, patients};

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::from_fn;
use actix_web::{HttpMessage, HttpRequest, ResponseError, web};

use clinicd_audit::Action;
use clinicd_rbac::Permission;

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
    /// Who may call it: checked by the authorisation layer before any extractor or handler
    /// runs. Deny by default: a route names what it needs, and a test walks the table.
    pub access: Access,
    handler: fn() -> actix_web::Route,
}

/// A route that reads (or refuses): its event is committed before the response leaves.
const fn audited(action: Action, resource: &'static str) -> Option<AuditDeclaration> {
    Some(AuditDeclaration {
        action,
        resource,
        changes: false,
    })
}

/// A route that changes state: a success commits its event in the change's own transaction.
const fn changes(action: Action, resource: &'static str) -> Option<AuditDeclaration> {
    Some(AuditDeclaration {
        action,
        resource,
        changes: true,
    })
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No session: probes, and the steps that create one (login, MFA, refresh).
    Public,
    /// Any live session, even one with no roles: the caller's own account (password, MFA,
    /// sessions, devices). Handlers act on the caller only.
    Session,
    /// A live session whose roles grant this permission (and, for a privileged role, an
    /// enrolled second factor).
    Permission(Permission),
}

const PUBLIC: Access = Access::Public;
const SESSION: Access = Access::Session;

const fn needs(permission: Permission) -> Access {
    Access::Permission(permission)
}

const LOGIN: Option<RateClass> = Some(RateClass::Login);
const API: Option<RateClass> = Some(RateClass::Api);
const UPLOAD: Option<RateClass> = Some(RateClass::Upload);
const EXPORT: Option<RateClass> = Some(RateClass::Export);

pub static ROUTES: &[RouteSpec] = &[
    route(Method::GET, "/health", None, None, PUBLIC, || {
        web::to(health::health)
    }),
    route(Method::GET, "/ready", None, None, PUBLIC, || {
        web::to(health::ready)
    }),
    route(
        Method::POST,
        "/api/auth/login",
        LOGIN,
        changes(Action::Login, "session"),
        PUBLIC,
        || web::to(login::login),
    ),
    route(
        Method::POST,
        "/api/auth/refresh",
        API,
        changes(Action::Refresh, "session"),
        PUBLIC,
        || web::to(login::refresh),
    ),
    route(
        Method::POST,
        "/api/auth/logout",
        API,
        changes(Action::Logout, "session"),
        SESSION,
        || web::to(login::logout),
    ),
    route(
        Method::GET,
        "/api/auth/me",
        API,
        audited(Action::View, "user"),
        SESSION,
        || web::to(login::me),
    ),
    route(
        Method::POST,
        "/api/auth/password",
        API,
        changes(Action::PasswordChange, "user"),
        SESSION,
        || web::to(login::change_password),
    ),
    route(
        Method::GET,
        "/api/auth/sessions",
        API,
        audited(Action::SessionList, "session"),
        SESSION,
        || web::to(login::list_sessions),
    ),
    route(
        Method::DELETE,
        "/api/auth/sessions/{id}",
        API,
        changes(Action::SessionRevoke, "session"),
        SESSION,
        || web::to(login::revoke_session),
    ),
    route(
        Method::POST,
        "/api/auth/mfa",
        LOGIN,
        changes(Action::MfaVerify, "session"),
        PUBLIC,
        || web::to(mfa::complete_mfa),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/send",
        LOGIN,
        changes(Action::MfaSend, "mfa"),
        PUBLIC,
        || web::to(mfa::send_code),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/totp",
        API,
        changes(Action::MfaEnrol, "mfa"),
        SESSION,
        || web::to(mfa::begin_totp),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/totp/confirm",
        API,
        changes(Action::MfaEnrol, "mfa"),
        SESSION,
        || web::to(mfa::confirm_totp),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/disable",
        API,
        changes(Action::MfaDisable, "mfa"),
        SESSION,
        || web::to(mfa::disable_mfa),
    ),
    route(
        Method::POST,
        "/api/auth/mfa/backup-codes",
        API,
        changes(Action::MfaBackupCodes, "mfa"),
        SESSION,
        || web::to(mfa::regenerate_backup_codes),
    ),
    route(
        Method::GET,
        "/api/audit/verify",
        API,
        audited(Action::AuditVerify, "audit"),
        needs(Permission::AuditRead),
        || web::to(audit::verify),
    ),
    route(
        Method::GET,
        "/api/audit/events",
        API,
        audited(Action::AuditRead, "audit"),
        needs(Permission::AuditRead),
        || web::to(audit::events),
    ),
    route(
        Method::GET,
        "/api/audit/export/{format}",
        API,
        audited(Action::Export, "audit"),
        needs(Permission::AuditRead),
        || web::to(audit::export),
    ),
    route(
        Method::GET,
        "/api/audit/stats",
        API,
        audited(Action::AuditRead, "audit"),
        needs(Permission::AuditRead),
        || web::to(audit::stats),
    ),
    route(
        Method::GET,
        "/api/audit/patients/{id}/disclosures",
        API,
        audited(Action::AuditRead, "audit"),
        needs(Permission::AuditRead),
        || web::to(audit::disclosures),
    ),
    route(
        Method::GET,
        "/api/auth/devices",
        API,
        audited(Action::DeviceList, "device"),
        SESSION,
        || web::to(mfa::list_devices),
    ),
    route(
        Method::DELETE,
        "/api/auth/devices/{id}",
        API,
        changes(Action::DeviceRevoke, "device"),
        SESSION,
        || web::to(mfa::revoke_device),
    ),
    route(
        Method::GET,
        "/api/audit/events/{seq}/values",
        API,
        audited(Action::AuditRead, "audit_values"),
        needs(Permission::AuditReadValues),
        || web::to(audit::values),
    ),
    route(
        Method::GET,
        "/api/admin/users",
        API,
        audited(Action::View, "user"),
        needs(Permission::UserManage),
        || web::to(users::list_users),
    ),
    route(
        Method::POST,
        "/api/admin/users",
        API,
        changes(Action::UserChange, "user"),
        needs(Permission::UserManage),
        || web::to(users::create_user),
    ),
    route(
        Method::GET,
        "/api/admin/users/{id}",
        API,
        audited(Action::View, "user"),
        needs(Permission::UserManage),
        || web::to(users::get_user),
    ),
    route(
        Method::PATCH,
        "/api/admin/users/{id}",
        API,
        changes(Action::UserChange, "user"),
        needs(Permission::UserManage),
        || web::to(users::update_user),
    ),
    route(
        Method::PUT,
        "/api/admin/users/{id}/roles",
        API,
        changes(Action::RoleChange, "user"),
        needs(Permission::UserManage),
        || web::to(users::set_roles),
    ),
    route(
        Method::POST,
        "/api/admin/users/{id}/disable",
        API,
        changes(Action::UserChange, "user"),
        needs(Permission::UserManage),
        || web::to(users::disable_user),
    ),
    route(
        Method::POST,
        "/api/admin/users/{id}/enable",
        API,
        changes(Action::UserChange, "user"),
        needs(Permission::UserManage),
        || web::to(users::enable_user),
    ),
    route(
        Method::POST,
        "/api/admin/users/{id}/unlock",
        API,
        changes(Action::UserChange, "user"),
        needs(Permission::UserManage),
        || web::to(users::unlock_user),
    ),
    route(
        Method::POST,
        "/api/admin/users/{id}/reset-password",
        API,
        changes(Action::UserChange, "user"),
        needs(Permission::UserManage),
        || web::to(users::reset_password),
    ),
    route(
        Method::POST,
        "/api/admin/users/{id}/reset-mfa",
        API,
        changes(Action::UserChange, "user"),
        needs(Permission::UserManage),
        || web::to(users::reset_mfa),
    ),
    route(
        Method::POST,
        "/api/admin/users/{id}/revoke-sessions",
        API,
        changes(Action::UserChange, "user"),
        needs(Permission::UserManage),
        || web::to(users::revoke_sessions),
    ),
    route(
        Method::GET,
        "/api/admin/proposals",
        API,
        audited(Action::View, "proposal"),
        needs(Permission::UserManage),
        || web::to(proposals::list),
    ),
    route(
        Method::GET,
        "/api/admin/proposals/{id}",
        API,
        audited(Action::View, "proposal"),
        needs(Permission::UserManage),
        || web::to(proposals::get),
    ),
    route(
        Method::POST,
        "/api/admin/proposals/{id}/approve",
        API,
        changes(Action::Approve, "proposal"),
        needs(Permission::UserManage),
        || web::to(proposals::approve),
    ),
    route(
        Method::POST,
        "/api/admin/proposals/{id}/reject",
        API,
        changes(Action::Reject, "proposal"),
        needs(Permission::UserManage),
        || web::to(proposals::reject),
    ),
    route(
        Method::GET,
        "/api/admin/permissions",
        API,
        audited(Action::View, "permission"),
        needs(Permission::RoleManage),
        || web::to(roles::list_permissions),
    ),
    route(
        Method::GET,
        "/api/admin/roles",
        API,
        audited(Action::View, "role"),
        needs(Permission::RoleManage),
        || web::to(roles::list_roles),
    ),
    route(
        Method::POST,
        "/api/admin/roles",
        API,
        changes(Action::RoleChange, "role"),
        needs(Permission::RoleManage),
        || web::to(roles::create_role),
    ),
    route(
        Method::PUT,
        "/api/admin/roles/{name}",
        API,
        changes(Action::RoleChange, "role"),
        needs(Permission::RoleManage),
        || web::to(roles::update_role),
    ),
    route(
        Method::DELETE,
        "/api/admin/roles/{name}",
        API,
        changes(Action::RoleChange, "role"),
        needs(Permission::RoleManage),
        || web::to(roles::delete_role),
    ),
    route(
        Method::GET,
        "/api/admin/keys",
        API,
        audited(Action::View, "keys"),
        needs(Permission::KeysManage),
        || web::to(keys::status),
    ),
    route(
        Method::POST,
        "/api/patients",
        API,
        changes(Action::Create, "patient"),
        needs(Permission::PatientWrite),
        || web::to(patients::create),
    ),
    route(
        Method::POST,
        "/api/patients/search",
        API,
        audited(Action::Search, "patient"),
        needs(Permission::PatientRead),
        || web::to(patients::search),
    ),
    route(
        Method::GET,
        "/api/patients/{id}",
        API,
        audited(Action::View, "patient"),
        needs(Permission::PatientRead),
        || web::to(patients::read),
    ),
    route(
        Method::PATCH,
        "/api/patients/{id}",
        API,
        changes(Action::Update, "patient"),
        needs(Permission::PatientWrite),
        || web::to(patients::update),
    ),
    route(
        Method::POST,
        "/api/appointments",
        API,
        changes(Action::Create, "appointment"),
        needs(Permission::AppointmentWrite),
        || web::to(appointments::book),
    ),
    route(
        Method::GET,
        "/api/appointments",
        API,
        audited(Action::Search, "appointment"),
        needs(Permission::AppointmentRead),
        || web::to(appointments::list),
    ),
    route(
        Method::GET,
        "/api/appointments/{id}",
        API,
        audited(Action::View, "appointment"),
        needs(Permission::AppointmentRead),
        || web::to(appointments::read),
    ),
    route(
        Method::PATCH,
        "/api/appointments/{id}",
        API,
        changes(Action::Update, "appointment"),
        needs(Permission::AppointmentWrite),
        || web::to(appointments::change),
    ),
    route(
        Method::POST,
        "/api/patients/{id}/notes",
        API,
        changes(Action::Create, "note"),
        needs(Permission::NoteWrite),
        || web::to(notes::create),
    ),
    route(
        Method::GET,
        "/api/patients/{id}/notes",
        API,
        audited(Action::View, "note"),
        needs(Permission::NoteRead),
        || web::to(notes::list),
    ),
    route(
        Method::GET,
        "/api/notes/{id}",
        API,
        audited(Action::View, "note"),
        needs(Permission::NoteRead),
        || web::to(notes::read),
    ),
    route(
        Method::PATCH,
        "/api/notes/{id}",
        API,
        changes(Action::Update, "note"),
        needs(Permission::NoteWrite),
        || web::to(notes::edit),
    ),
    route(
        Method::PUT,
        "/api/notes/{id}/label",
        API,
        changes(Action::Update, "note_label"),
        needs(Permission::NoteWrite),
        || web::to(notes::relabel),
    ),
    route(
        Method::POST,
        "/api/notes/{id}/sign",
        API,
        changes(Action::Update, "note"),
        needs(Permission::NoteWrite),
        || web::to(notes::sign),
    ),
    route(
        Method::POST,
        "/api/notes/{id}/amendments",
        API,
        changes(Action::Create, "note"),
        needs(Permission::NoteWrite),
        || web::to(notes::amend),
    ),
    route(
        Method::POST,
        "/api/patients/{id}/files",
        UPLOAD,
        changes(Action::Upload, "file"),
        needs(Permission::FileUpload),
        || web::to(files::upload),
    ),
    route(
        Method::GET,
        "/api/patients/{id}/files",
        API,
        audited(Action::View, "file"),
        needs(Permission::FileRead),
        || web::to(files::list),
    ),
    route(
        Method::GET,
        "/api/files/{id}",
        API,
        audited(Action::Download, "file"),
        needs(Permission::FileRead),
        || web::to(files::download),
    ),
    route(
        Method::PUT,
        "/api/files/{id}/label",
        API,
        changes(Action::Update, "file"),
        needs(Permission::FileUpload),
        || web::to(files::relabel),
    ),
    route(
        Method::DELETE,
        "/api/files/{id}",
        API,
        changes(Action::Delete, "file"),
        needs(Permission::FileUpload),
        || web::to(files::delete),
    ),
    route(
        Method::GET,
        "/api/notes/{id}/history",
        API,
        audited(Action::View, "note"),
        needs(Permission::NoteRead),
        || web::to(notes::history),
    ),
    route(
        Method::GET,
        "/api/patients/{id}/export",
        EXPORT,
        audited(Action::Export, "patient"),
        needs(Permission::Export),
        || web::to(patients::export),
    ),
    route(
        Method::GET,
        "/api/patients/{id}/label",
        API,
        audited(Action::View, "patient_label"),
        needs(Permission::PatientRead),
        || web::to(patients::label),
    ),
    route(
        Method::PUT,
        "/api/patients/{id}/label",
        API,
        changes(Action::Update, "patient_label"),
        needs(Permission::PatientWrite),
        || web::to(patients::relabel),
    ),
    route(
        Method::POST,
        "/api/patients/{id}/consents",
        API,
        changes(Action::Create, "consent"),
        needs(Permission::Export),
        || web::to(consents::record),
    ),
    route(
        Method::GET,
        "/api/patients/{id}/consents",
        API,
        audited(Action::View, "consent"),
        needs(Permission::Export),
        || web::to(consents::list),
    ),
    route(
        Method::POST,
        "/api/consents/{id}/revoke",
        API,
        changes(Action::Update, "consent"),
        needs(Permission::Export),
        || web::to(consents::revoke),
    ),
    route(
        Method::GET,
        "/api/patients/{id}/care-team",
        API,
        audited(Action::View, "care_team"),
        needs(Permission::CareTeamManage),
        || web::to(care_team::list),
    ),
    route(
        Method::POST,
        "/api/patients/{id}/care-team",
        API,
        changes(Action::Create, "care_team"),
        needs(Permission::CareTeamManage),
        || web::to(care_team::assign),
    ),
    route(
        Method::DELETE,
        "/api/patients/{id}/care-team/{user_id}",
        API,
        changes(Action::Delete, "care_team"),
        needs(Permission::CareTeamManage),
        || web::to(care_team::unassign),
    ),
    route(
        Method::POST,
        "/api/patients/{id}/break-glass",
        API,
        changes(Action::BreakGlass, "patient"),
        needs(Permission::BreakGlass),
        || web::to(care_team::break_glass),
    ),
    route(
        Method::GET,
        "/api/security/break-glass",
        API,
        audited(Action::View, "break_glass"),
        needs(Permission::SecurityRead),
        || web::to(care_team::reviews),
    ),
    route(
        Method::POST,
        "/api/security/break-glass/{id}/review",
        API,
        changes(Action::Update, "break_glass"),
        needs(Permission::SecurityRead),
        || web::to(care_team::review),
    ),
    route(
        Method::GET,
        "/api/security/dashboard",
        API,
        audited(Action::View, "security_dashboard"),
        needs(Permission::SecurityRead),
        || web::to(security::dashboard),
    ),
    route(
        Method::GET,
        "/api/security/alerts",
        API,
        audited(Action::View, "security_alert"),
        needs(Permission::SecurityRead),
        || web::to(security::list_alerts),
    ),
    route(
        Method::POST,
        "/api/security/alerts/{id}/acknowledge",
        API,
        changes(Action::Update, "security_alert"),
        needs(Permission::SecurityRead),
        || web::to(security::acknowledge),
    ),
    route(
        Method::POST,
        "/api/security/alerts/{id}/resolve",
        API,
        changes(Action::Update, "security_alert"),
        needs(Permission::SecurityRead),
        || web::to(security::resolve),
    ),
    route(
        Method::GET,
        "/api/security/alert-deliveries",
        API,
        audited(Action::View, "alert_delivery"),
        needs(Permission::SecurityRead),
        || web::to(security::list_deliveries),
    ),
    route(
        Method::GET,
        "/api/security/blocks",
        API,
        audited(Action::View, "block"),
        needs(Permission::SecurityRead),
        || web::to(security::list_blocks),
    ),
    route(
        Method::POST,
        "/api/security/blocks",
        API,
        changes(Action::Create, "block"),
        needs(Permission::SecurityRead),
        || web::to(security::add_block),
    ),
    route(
        Method::POST,
        "/api/security/blocks/{id}/lift",
        API,
        changes(Action::Update, "block"),
        needs(Permission::SecurityRead),
        || web::to(security::lift_block),
    ),
    route(
        Method::PUT,
        "/api/security/watched-patients/{id}",
        API,
        changes(Action::Update, "watched_patient"),
        needs(Permission::SecurityRead),
        || web::to(security::watch),
    ),
    route(
        Method::DELETE,
        "/api/security/watched-patients/{id}",
        API,
        changes(Action::Delete, "watched_patient"),
        needs(Permission::SecurityRead),
        || web::to(security::unwatch),
    ),
    route(
        Method::GET,
        "/api/lifecycle/holds",
        API,
        audited(Action::View, "legal_hold"),
        needs(Permission::LegalHold),
        || web::to(lifecycle::list_holds),
    ),
    route(
        Method::POST,
        "/api/lifecycle/holds",
        API,
        changes(Action::LegalHold, "legal_hold"),
        needs(Permission::LegalHold),
        || web::to(lifecycle::place_hold),
    ),
    route(
        Method::POST,
        "/api/lifecycle/holds/{id}/release",
        API,
        changes(Action::LegalHoldRelease, "legal_hold"),
        needs(Permission::LegalHold),
        || web::to(lifecycle::release_hold),
    ),
    route(
        Method::GET,
        "/api/lifecycle/erasures",
        API,
        audited(Action::View, "erasure_request"),
        needs(Permission::Erasure),
        || web::to(lifecycle::list_erasures),
    ),
    route(
        Method::POST,
        "/api/lifecycle/erasures",
        API,
        changes(Action::ErasureRequest, "erasure_request"),
        needs(Permission::Erasure),
        || web::to(lifecycle::request_erasure),
    ),
    route(
        Method::GET,
        "/api/lifecycle/erasures/{id}",
        API,
        audited(Action::View, "erasure_request"),
        needs(Permission::Erasure),
        || web::to(lifecycle::get_erasure),
    ),
    route(
        Method::POST,
        "/api/lifecycle/erasures/{id}/approve",
        API,
        changes(Action::Erasure, "erasure_request"),
        needs(Permission::Erasure),
        || web::to(lifecycle::approve_erasure),
    ),
    route(
        Method::POST,
        "/api/lifecycle/erasures/{id}/reject",
        API,
        changes(Action::Reject, "erasure_request"),
        needs(Permission::Erasure),
        || web::to(lifecycle::reject_erasure),
    ),
];

/// A reason a person typed (lifting a block, relabelling a note): trimmed, 5 to 500 characters,
/// no control characters.
pub(crate) fn reason_text(field: &'static str, value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    let n = value.chars().count();
    if (5..=500).contains(&n) && !value.chars().any(char::is_control) {
        Ok(value.to_owned())
    } else {
        Err(ApiError::InvalidField {
            field,
            reason: "must be 5 to 500 printable characters".into(),
        })
    }
}

const fn route(
    method: Method,
    path: &'static str,
    rate_class: Option<RateClass>,
    audit: Option<AuditDeclaration>,
    access: Access,
    handler: fn() -> actix_web::Route,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        rate_class,
        audit,
        access,
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
        cfg.service(
            resource
                .default_service(web::to(move || method_not_allowed(allow.clone())))
                .wrap(from_fn(crate::middleware::panics::catch_panic)),
        );
    }
}

async fn method_not_allowed(allow: String) -> actix_web::HttpResponse {
    let mut response = ApiError::MethodNotAllowed.error_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The route-table entry of a request, found once by the outermost layer
/// (`crate::middleware::context`) and carried in the request's extensions, so the throttle,
/// audit and authorisation layers read the same entry instead of each scanning the table.
#[derive(Debug, Clone, Copy)]
pub struct MatchedRoute(pub &'static RouteSpec);

impl MatchedRoute {
    /// The entry of the route the request matches; `None` for a path outside the table (or a
    /// method it does not declare there).
    pub fn find(req: &HttpRequest) -> Option<Self> {
        let pattern = req.match_pattern()?;
        ROUTES
            .iter()
            .find(|r| r.path == pattern && r.method == req.method())
            .map(Self)
    }

    /// The entry the outermost layer found for this request.
    pub fn of(req: &HttpRequest) -> Option<Self> {
        req.extensions().get::<Self>().copied()
    }

    /// The routes whose handler checks the caller's session in the statement that reads the
    /// record (`session_confirmed`, migration 0031): the patient read and search, the hot read
    /// paths. The authorisation layer admits their callers on a session this instance checked
    /// within the last minute, and checks in full whatever the handler did not confirm
    /// (`crate::middleware::authorize`). Only reads: nothing is written before confirmation.
    pub fn confirms_session_in_statement(self) -> bool {
        matches!(
            (self.0.method.as_str(), self.0.path),
            ("GET", "/api/patients/{id}") | ("POST", "/api/patients/search")
        )
    }
}

//! The OpenAPI 3.1 document (`/api/openapi.json`) and Swagger UI (`/api/docs/`), whose assets
//! are compiled into the binary (no CDN at run time, no download at build time).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::problem::Problem;
use crate::routes::{
    admin, appointments, audit, auth, care_team, files, health, keys, mfa, notes, patients,
    proposals, roles,
};

pub const OPENAPI_PATH: &str = "/api/openapi.json";
pub const DOCS_PATH_PREFIX: &str = "/api/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clinicd",
        description = "Clinic patient management API. Every error is `application/problem+json` \
            (RFC 7807) with a stable `code`; every response carries `X-Request-Id`, and rate-limited \
            routes carry `RateLimit-Policy` and `RateLimit`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(health::health, health::ready, auth::login, auth::refresh, auth::logout, auth::me, auth::change_password, auth::list_sessions, auth::revoke_session, mfa::complete_mfa, mfa::begin_totp, mfa::confirm_totp, mfa::disable_mfa, mfa::regenerate_backup_codes, mfa::list_devices, mfa::revoke_device, mfa::send_code, audit::verify, audit::events, audit::stats, audit::disclosures, audit::export, audit::values, admin::list_users, admin::create_user, admin::get_user, admin::update_user, admin::set_roles, admin::disable_user, admin::enable_user, admin::unlock_user, admin::reset_password, admin::reset_mfa, admin::revoke_sessions, proposals::list, proposals::get, proposals::approve, proposals::reject, roles::list_permissions, roles::list_roles, roles::create_role, roles::update_role, roles::delete_role, keys::status, patients::create, patients::read, patients::update, patients::search, patients::export, appointments::book, appointments::list, appointments::read, appointments::change, notes::create, notes::list, notes::read, notes::edit, notes::sign, notes::amend, notes::history, files::upload, files::list, files::download, files::delete, care_team::list, care_team::assign, care_team::unassign, care_team::break_glass, care_team::reviews, care_team::review),
    components(schemas(Problem, health::Health, auth::LoginRequest, auth::RefreshRequest, auth::TokenResponse, auth::Me, auth::ChangePasswordRequest, auth::SessionView, mfa::MfaChallengeResponse, mfa::MfaRequest, mfa::TotpEnrolment, mfa::ConfirmTotpRequest, mfa::BackupCodes, mfa::DisableMfaRequest, mfa::RegenerateBackupCodesRequest, mfa::DeviceView, mfa::SendCodeRequest, mfa::CodeSent, audit::AuditVerification, audit::AuditEventView, audit::DisclosureView, audit::EventPage, audit::AuditStats, audit::ExportFormat, audit::AuditValues, admin::UserView, admin::UserPage, admin::CreateUserRequest, admin::CreatedUser, admin::UpdateUserRequest, admin::SetRolesRequest, admin::PasswordReset, proposals::ProposalView, proposals::Approval, roles::PermissionView, roles::RoleView, roles::RoleBody, roles::CreateRoleRequest, keys::BranchKeyView, patients::AddressBody, patients::InsuranceBody, patients::EmergencyContactBody, patients::PatientBody, patients::PatientPatch, patients::PatientView, patients::SearchRequest, patients::PatientPage, patients::PatientExport, patients::Purpose, appointments::BookingRequest, appointments::BookingChange, appointments::AppointmentView, notes::NoteRequest, notes::NoteEdit, notes::AmendmentRequest, notes::NoteView, files::UploadForm, files::FileBytes, files::FileView, care_team::CareTeamMember, care_team::AssignRequest, care_team::BreakGlassRequest, care_team::BreakGlassGrant, care_team::BreakGlassReview)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "operations", description = "Liveness and readiness probes"),
        (name = "auth", description = "Login, sessions and the current user"),
        (name = "audit", description = "The tamper-evident audit trail"),
        (name = "admin", description = "Users, roles and role assignment"),
        (name = "access", description = "Care teams and break-the-glass"),
        (name = "patients", description = "Patient registration, records and search"),
        (name = "appointments", description = "Booking providers"),
        (name = "notes", description = "Clinical notes, signing and amendments"),
        (name = "files", description = "Patients' documents, encrypted at rest and streamed both ways"),
    ),
)]
#[derive(Debug)]
pub struct ApiDoc;

/// Declares how callers authenticate: a bearer access token for API clients, or the
/// `__Host-` access cookie for browsers (with a CSRF token on unsafe methods).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("__Host-clinicd-access"))),
        );
    }
}

pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.service(
        SwaggerUi::new(format!("{DOCS_PATH_PREFIX}/{{_:.*}}")).url(OPENAPI_PATH, ApiDoc::openapi()),
    );
    cfg.route(DOCS_PATH_PREFIX, web::get().to(redirect_to_docs));
}

async fn redirect_to_docs() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, format!("{DOCS_PATH_PREFIX}/")))
        .finish()
}

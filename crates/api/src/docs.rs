//! The OpenAPI 3.1 document (`/api/openapi.json`) and Swagger UI (`/api/docs/`), whose assets
//! are compiled into the binary (no CDN at run time, no download at build time).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::problem::Problem;
use crate::routes::admin::{audit, dual_control, keys, proposals, roles, users};
use crate::routes::auth::{login, mfa, session};
use crate::routes::records::{appointments, care_team, consents, files, notes, patients};
use crate::routes::security;
use crate::routes::{health, lifecycle};

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
    paths(health::health, health::ready, login::login, login::refresh, login::logout, login::me, login::change_password, login::list_sessions, login::revoke_session, mfa::complete_mfa, mfa::begin_totp, mfa::confirm_totp, mfa::disable_mfa, mfa::regenerate_backup_codes, mfa::list_devices, mfa::revoke_device, mfa::send_code, audit::verify, audit::events, audit::stats, audit::disclosures, audit::export, audit::values, users::list_users, users::create_user, users::get_user, users::update_user, users::set_roles, users::disable_user, users::enable_user, users::unlock_user, users::reset_password, users::reset_mfa, users::revoke_sessions, proposals::list, proposals::get, proposals::approve, proposals::reject, roles::list_permissions, roles::list_roles, roles::create_role, roles::update_role, roles::delete_role, keys::status, patients::create, patients::read, patients::update, patients::search, patients::export, patients::label, patients::relabel, consents::record, consents::list, consents::revoke, appointments::book, appointments::list, appointments::read, appointments::change, notes::create, notes::list, notes::read, notes::edit, notes::sign, notes::relabel, notes::amend, notes::history, files::upload, files::list, files::download, files::delete, files::relabel, care_team::list, care_team::assign, care_team::unassign, care_team::break_glass, care_team::reviews, care_team::review, security::dashboard, security::list_alerts, security::acknowledge, security::resolve, security::list_deliveries, security::list_blocks, security::add_block, security::lift_block, security::watch, security::unwatch, lifecycle::list_holds, lifecycle::place_hold, lifecycle::release_hold, lifecycle::list_erasures, lifecycle::request_erasure, lifecycle::get_erasure, lifecycle::approve_erasure, lifecycle::reject_erasure),
    components(schemas(Problem, health::Health, login::LoginRequest, login::RefreshRequest, session::TokenResponse, login::Me, login::ChangePasswordRequest, login::SessionView, session::MfaChallengeResponse, mfa::MfaRequest, mfa::TotpEnrolment, mfa::ConfirmTotpRequest, mfa::BackupCodes, mfa::DisableMfaRequest, mfa::RegenerateBackupCodesRequest, mfa::DeviceView, mfa::SendCodeRequest, mfa::CodeSent, audit::AuditVerification, audit::AuditEventView, audit::DisclosureView, audit::EventPage, audit::AuditStats, audit::ExportFormat, audit::AuditValues, users::UserView, users::UserPage, users::CreateUserRequest, users::CreatedUser, users::UpdateUserRequest, users::SetRolesRequest, dual_control::PasswordReset, dual_control::ProposalView, proposals::Approval, roles::PermissionView, roles::RoleView, roles::RoleBody, roles::CreateRoleRequest, keys::BranchKeyView, patients::AddressBody, patients::InsuranceBody, patients::EmergencyContactBody, patients::PatientBody, patients::PatientPatch, patients::PatientView, patients::SearchRequest, patients::PatientPage, patients::PatientExport, patients::Purpose, patients::PatientLabelView, consents::NewConsent, consents::RevokeConsent, consents::ConsentView, appointments::BookingRequest, appointments::BookingChange, appointments::AppointmentView, notes::NoteRequest, notes::NoteEdit, notes::AmendmentRequest, notes::NoteView, notes::LabelRequest, files::UploadForm, files::FileBytes, files::FileView, care_team::CareTeamMember, care_team::AssignRequest, care_team::BreakGlassRequest, care_team::BreakGlassGrant, care_team::BreakGlassReview, security::AlertView, security::BlockView, security::DeliveryView, security::ResolveRequest, security::NewBlockRequest, security::LiftRequest, security::WatchRequest, security::AlertState, security::DeliveryState, lifecycle::HoldView, lifecycle::NewHoldRequest, lifecycle::ReasonRequest, lifecycle::ErasureView, lifecycle::NewErasureRequest)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "operations", description = "Liveness and readiness probes"),
        (name = "auth", description = "Login, sessions and the current user"),
        (name = "audit", description = "The tamper-evident audit trail"),
        (name = "admin", description = "Users, roles and role assignment"),
        (name = "access", description = "Care teams and break-the-glass"),
        (name = "security", description = "Security operations: dashboard, alerts, blocks, watched patients"),
        (name = "lifecycle", description = "Data lifecycle: legal holds, erasure requests and certificates of destruction"),
        (name = "patients", description = "Patient registration, records and search"),
        (name = "appointments", description = "Booking providers"),
        (name = "consents", description = "Consents patients have signed: 42 CFR Part 2 disclosure of substance-use records"),
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

const PRINTABLE: &str = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$";

/// What the middleware and extractors answer on every operation, declared once here rather than
/// on each of seventy handlers (and so never forgotten on the seventy-first): a malformed query
/// or path (400), an unauthenticated or unauthorised caller (401, 403, on operations that need
/// a session), the audit trail unavailable (503: the request fails closed); and for a JSON body,
/// one that is not JSON or not an object (400), too large (413), not `application/json` (415)
/// or with a control character in a string (422). Each string a JSON body takes is declared
/// printable, since the extractor refuses the rest.
/// Done on the JSON: utoipa's types do not read their own output back.
pub fn document() -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    apply_field_rules(&mut document);
    refuse_controls_in_parameters(&mut document);
    add_common_answers(&mut document);
    add_links(&mut document);
    document
}

/// OpenAPI links: what a created resource's id opens next (create a patient, then read it, write
/// a note for it, upload a file to it). Clients and stateful fuzzers follow them. Each is
/// (operation that creates, its success status, where the id is in its body, the operations it
/// leads to, the path parameter that takes the id). utoipa's attribute macros cannot declare
/// links, so they are added here; `operationRef` because several handlers share a function name.
type Link = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const LINKS: &[Link] = &[
    (
        "/api/patients",
        "post",
        "201",
        "/id",
        &[
            ("/api/patients/{id}", "get"),
            ("/api/patients/{id}", "patch"),
            ("/api/patients/{id}/notes", "get"),
            ("/api/patients/{id}/notes", "post"),
            ("/api/patients/{id}/files", "get"),
            ("/api/patients/{id}/files", "post"),
            ("/api/patients/{id}/care-team", "get"),
            ("/api/patients/{id}/consents", "get"),
            ("/api/patients/{id}/label", "get"),
        ],
        "id",
    ),
    (
        "/api/patients/{id}/notes",
        "post",
        "201",
        "/id",
        &[
            ("/api/notes/{id}", "get"),
            ("/api/notes/{id}", "patch"),
            ("/api/notes/{id}/sign", "post"),
            ("/api/notes/{id}/history", "get"),
        ],
        "id",
    ),
    (
        "/api/patients/{id}/files",
        "post",
        "201",
        "/id",
        &[("/api/files/{id}", "get"), ("/api/files/{id}", "delete")],
        "id",
    ),
    (
        "/api/appointments",
        "post",
        "201",
        "/id",
        &[
            ("/api/appointments/{id}", "get"),
            ("/api/appointments/{id}", "patch"),
        ],
        "id",
    ),
    (
        "/api/patients/{id}/consents",
        "post",
        "201",
        "/id",
        &[("/api/consents/{id}/revoke", "post")],
        "id",
    ),
    (
        "/api/admin/users",
        "post",
        "201",
        "/user/id",
        &[
            ("/api/admin/users/{id}", "get"),
            ("/api/admin/users/{id}", "patch"),
        ],
        "id",
    ),
    (
        "/api/admin/roles",
        "post",
        "201",
        "/name",
        &[
            ("/api/admin/roles/{name}", "put"),
            ("/api/admin/roles/{name}", "delete"),
        ],
        "name",
    ),
    (
        "/api/lifecycle/holds",
        "post",
        "201",
        "/id",
        &[("/api/lifecycle/holds/{id}/release", "post")],
        "id",
    ),
    (
        "/api/lifecycle/erasures",
        "post",
        "201",
        "/id",
        &[("/api/lifecycle/erasures/{id}", "get")],
        "id",
    ),
    (
        "/api/security/blocks",
        "post",
        "201",
        "/id",
        &[("/api/security/blocks/{id}/lift", "post")],
        "id",
    ),
];

fn add_links(document: &mut Value) {
    for (path, method, status, field, targets, parameter) in LINKS {
        let mut links = serde_json::Map::new();
        for (target, target_method) in *targets {
            // Only to operations the document has: a link to nowhere would mislead a client.
            if document
                .pointer(&format!(
                    "/paths/{}/{target_method}",
                    pointer_escape(target)
                ))
                .is_none()
            {
                continue;
            }
            links.insert(
                link_name(target, target_method),
                json!({
                    "operationRef": format!("#/paths/{}/{target_method}", pointer_escape(target)),
                    "parameters": { *parameter: format!("$response.body#{field}") },
                }),
            );
        }
        if let Some(response) = document
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                pointer_escape(path)
            ))
            .and_then(Value::as_object_mut)
        {
            response.insert("links".to_owned(), Value::Object(links));
        }
    }
}

/// A JSON pointer token (RFC 6901): `~` and `/` escaped.
fn pointer_escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// `GET /api/patients/{id}/notes` → `getPatientsIdNotes`: a stable key for the link map.
fn link_name(path: &str, method: &str) -> String {
    let mut name = method.to_owned();
    for word in path
        .trim_start_matches("/api/")
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    name
}

// The rules the parsers enforce, as schema. Each is exactly its parser's rule or looser (a value
// the server accepts always matches its schema), so a generated client never refuses what the
// server takes, and rules a pattern cannot say (a Luhn digit, a date in the past) answer 422.
const USERNAME: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$";
const ROLE_NAME: &str = "^[A-Za-z][A-Za-z0-9_-]{0,63}$";
/// One `@`, a dotted domain, no spaces (clinicd_identity::users::Email, clinicd_domain's
/// EmailAddress).
const EMAIL: &str = "^[^\\s@]{1,64}@[^\\s@.][^\\s@]*\\.[^\\s@]*[^\\s@.]$";
const SSN: &str = "^[0-9]{3}-?[0-9]{2}-?[0-9]{4}$";
const PHONE: &str = "^\\+[1-9][0-9]{6,14}$";
const MEMBER_NUMBER: &str = "^[A-Za-z0-9-]{1,30}$";
const COUNTRY: &str = "^[A-Za-z]{2}$";
const MRN: &str = "^[0-9]{9}$";
/// Path and query strings: no control characters (the middleware answers 400).
const NO_CONTROLS: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// (schema, property, rule): merged into the component schema's property; `items` rules apply
/// to each element of an array.
fn field_rules() -> Vec<(&'static str, &'static str, Value)> {
    use clinicd_domain::appointment::{Kind, Status};
    use clinicd_domain::types::{PatientStatus, Sex};
    let permissions: Vec<&str> = clinicd_rbac::Permission::ALL
        .iter()
        .map(|p| p.as_str())
        .collect();
    let sexes: Vec<&str> = Sex::ALL.iter().map(|s| s.as_str()).collect();
    let statuses: Vec<&str> = PatientStatus::ALL.iter().map(|s| s.as_str()).collect();
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let appointment_statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    let categories: Vec<&str> = clinicd_files::Category::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    let text = |min: usize, max: usize| json!({ "minLength": min, "maxLength": max });
    let name = text(1, 100);
    let date = json!({ "format": "date" });
    let email = json!({ "pattern": EMAIL, "maxLength": 254 });
    let phone = json!({ "pattern": PHONE });
    let role_items = json!({ "items": { "pattern": ROLE_NAME } });
    let permission_items = json!({ "items": { "enum": permissions } });
    let mut rules = vec![
        (
            "CreateUserRequest",
            "username",
            json!({ "pattern": USERNAME }),
        ),
        ("CreateUserRequest", "email", email.clone()),
        ("CreateUserRequest", "display_name", name.clone()),
        ("CreateUserRequest", "roles", role_items.clone()),
        ("UpdateUserRequest", "email", email.clone()),
        ("UpdateUserRequest", "display_name", name.clone()),
        ("SetRolesRequest", "roles", role_items),
        ("CreateRoleRequest", "name", json!({ "pattern": ROLE_NAME })),
        (
            "CreateRoleRequest",
            "description",
            json!({ "maxLength": 500 }),
        ),
        ("CreateRoleRequest", "permissions", permission_items.clone()),
        ("CreateRoleRequest", "delegable", permission_items.clone()),
        ("RoleBody", "description", json!({ "maxLength": 500 })),
        ("RoleBody", "permissions", permission_items.clone()),
        ("RoleBody", "delegable", permission_items),
        ("AssignRequest", "reason", text(10, 500)),
        ("BreakGlassRequest", "reason", text(20, 1000)),
        ("AddressBody", "line1", text(1, 200)),
        ("AddressBody", "line2", json!({ "maxLength": 200 })),
        ("AddressBody", "city", text(1, 100)),
        ("AddressBody", "region", text(1, 100)),
        ("AddressBody", "postal_code", text(1, 20)),
        ("AddressBody", "country", json!({ "pattern": COUNTRY })),
        ("InsuranceBody", "payer", text(1, 100)),
        (
            "InsuranceBody",
            "member_number",
            json!({ "pattern": MEMBER_NUMBER }),
        ),
        ("EmergencyContactBody", "name", name.clone()),
        ("EmergencyContactBody", "relationship", text(1, 50)),
        ("EmergencyContactBody", "phone", phone.clone()),
        ("SearchRequest", "mrn", json!({ "pattern": MRN })),
        ("SearchRequest", "ssn", json!({ "pattern": SSN })),
        ("SearchRequest", "family_name", name.clone()),
        ("SearchRequest", "date_of_birth", date.clone()),
        ("SearchRequest", "name", text(1, 200)),
        (
            "SearchRequest",
            "limit",
            json!({ "minimum": 1, "maximum": 100 }),
        ),
        ("NoteRequest", "encounter_date", date.clone()),
        ("NoteRequest", "body", text(1, 50_000)),
        ("NoteEdit", "encounter_date", date.clone()),
        ("NoteEdit", "body", text(1, 50_000)),
        ("AmendmentRequest", "encounter_date", date.clone()),
        ("AmendmentRequest", "body", text(1, 50_000)),
        ("BookingRequest", "kind", json!({ "enum": kinds })),
        ("BookingChange", "kind", json!({ "enum": kinds })),
        (
            "BookingChange",
            "status",
            json!({ "enum": appointment_statuses }),
        ),
        ("UploadForm", "category", json!({ "enum": categories })),
    ];
    for schema in ["PatientBody", "PatientPatch"] {
        rules.extend([
            (schema, "given_name", name.clone()),
            (schema, "family_name", name.clone()),
            (schema, "date_of_birth", date.clone()),
            (schema, "sex", json!({ "enum": sexes })),
            (schema, "ssn", json!({ "pattern": SSN })),
            (schema, "phone", phone.clone()),
            (schema, "email", email.clone()),
            (schema, "status", json!({ "enum": statuses })),
        ]);
    }
    // A patch may leave a required field out but not clear it: `null` is refused for these.
    for field in [
        "given_name",
        "family_name",
        "date_of_birth",
        "sex",
        "status",
    ] {
        rules.push(("PatientPatch", field, json!({ "type": "string" })));
    }
    rules
}

fn apply_field_rules(document: &mut Value) {
    // The upload form takes its two parts and no others (a multipart form has no serde
    // `deny_unknown_fields` for utoipa to read).
    if let Some(form) = document
        .pointer_mut("/components/schemas/UploadForm")
        .and_then(Value::as_object_mut)
    {
        form.insert("additionalProperties".into(), false.into());
    }
    for (schema, property, rule) in field_rules() {
        let pointer = format!("/components/schemas/{schema}/properties/{property}");
        let Some(target) = document
            .pointer_mut(&pointer)
            .and_then(Value::as_object_mut)
        else {
            // A renamed field must not silently lose its rule; the tests catch this.
            tracing::error!(schema, property, "a field rule names no schema property");
            continue;
        };
        for (key, value) in rule.as_object().into_iter().flatten() {
            match (key.as_str(), target.get_mut("items")) {
                ("items", Some(Value::Object(items))) => {
                    items.extend(value.as_object().cloned().unwrap_or_default());
                }
                _ => {
                    target.insert(key.clone(), value.clone());
                }
            }
        }
        // An enumeration of a nullable string keeps `null` allowed.
        if let (Some(Value::Array(types)), Some(Value::Array(values))) =
            (target.get("type").cloned(), target.get_mut("enum"))
            && types.iter().any(|t| t == "null")
            && !values.contains(&Value::Null)
        {
            values.push(Value::Null);
        }
    }
}

/// Every string a path or query takes is declared free of control characters, which the
/// middleware refuses with 400 before any handler runs.
fn refuse_controls_in_parameters(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for parameter in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("parameters"))
        .filter_map(Value::as_array_mut)
        .flatten()
    {
        if !matches!(parameter["in"].as_str(), Some("path" | "query")) {
            continue;
        }
        let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut) else {
            continue;
        };
        let is_string = match schema.get("type") {
            Some(Value::String(t)) => t == "string",
            Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
            _ => false,
        };
        if is_string
            && !["pattern", "format", "enum"]
                .iter()
                .any(|k| schema.contains_key(*k))
        {
            schema.insert("pattern".into(), NO_CONTROLS.into());
        }
    }
}

fn add_common_answers(document: &mut Value) {
    let mut body_schemas = Vec::new();
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        for operation in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(Value::as_object_mut)
        {
            let json_body = operation
                .get("requestBody")
                .and_then(|body| body.pointer("/content/application~1json/schema"))
                .cloned();
            let secured = operation.contains_key("security");
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let mut answers = vec![(
                "400",
                "Malformed query or path parameters (invalid_parameters)",
            )];
            if secured {
                answers.push(("401", "Not authenticated"));
                answers.push(("403", "Not permitted"));
            }
            answers.push((
                "503",
                "The database or the audit trail is unavailable: nothing was done",
            ));
            if let Some(schema) = json_body {
                answers.push((
                    "400",
                    "The body is not JSON, not an object, or not of this shape (invalid_body)",
                ));
                answers.push(("413", "The body is larger than CLINICD_JSON_BODY_LIMIT"));
                answers.push((
                    "415",
                    "The body is not sent as application/json (unsupported_media_type)",
                ));
                answers.push((
                    "422",
                    "A field is not valid, e.g. a string holds a control character (invalid_field)",
                ));
                body_schemas.push(schema);
            }
            for (status, description) in answers {
                responses
                    .entry(status)
                    .or_insert_with(|| problem_response(description));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for schema in body_schemas {
        printable_strings(document, &schema, &mut seen);
    }
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": {
            "schema": { "$ref": "#/components/schemas/Problem" }
        } }
    })
}

/// Declares every free-text string under `schema` (following `$ref`s into components)
/// printable, unless it already has a pattern, a format or an enumeration.
fn printable_strings(
    document: &mut Value,
    schema: &Value,
    seen: &mut std::collections::BTreeSet<String>,
) {
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let pointer = format!(
            "/components/schemas/{}",
            name.replace('~', "~0").replace('/', "~1")
        );
        let Some(target) = document.pointer(&pointer).cloned() else {
            return;
        };
        let mut target = target;
        mark(document, &mut target, seen);
        if let Some(slot) = document.pointer_mut(&pointer) {
            *slot = target;
        }
        return;
    }
    let mut inline = schema.clone();
    mark(document, &mut inline, seen);
}

fn mark(document: &mut Value, schema: &mut Value, seen: &mut std::collections::BTreeSet<String>) {
    let Some(fields) = schema.as_object_mut() else {
        return;
    };
    let is_string = match fields.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
        _ => false,
    };
    if is_string
        && !["pattern", "format", "enum", "const"]
            .iter()
            .any(|k| fields.contains_key(*k))
    {
        fields.insert("pattern".into(), PRINTABLE.into());
    }
    if fields.contains_key("$ref") {
        let reference = Value::Object(fields.clone());
        printable_strings(document, &reference, seen);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = fields.get_mut(key) {
            mark(document, child, seen);
        }
    }
    if let Some(properties) = fields.get_mut("properties").and_then(Value::as_object_mut) {
        for child in properties.values_mut() {
            mark(document, child, seen);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(children) = fields.get_mut(key).and_then(Value::as_array_mut) {
            for child in children {
                mark(document, child, seen);
            }
        }
    }
}

pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.service(
        SwaggerUi::new(format!("{DOCS_PATH_PREFIX}/{{_:.*}}"))
            .external_url_unchecked(OPENAPI_PATH, document()),
    );
    cfg.route(DOCS_PATH_PREFIX, web::get().to(redirect_to_docs));
}

async fn redirect_to_docs() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, format!("{DOCS_PATH_PREFIX}/")))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A renamed field or schema must not silently lose its rule (the document only logs it).
    #[test]
    fn every_field_rule_names_a_property_of_the_document() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let missing: Vec<String> = field_rules()
            .into_iter()
            .map(|(schema, property, _)| format!("{schema}.{property}"))
            .filter(|name| {
                let (schema, property) = name.split_once('.').unwrap();
                document
                    .pointer(&format!(
                        "/components/schemas/{schema}/properties/{property}"
                    ))
                    .is_none()
            })
            .collect();
        assert!(missing.is_empty(), "rules for no property: {missing:?}");
    }
}

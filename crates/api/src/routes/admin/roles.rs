//! Role administration (`role:manage`): the permission catalogue, roles with their permission
//! sets, and custom roles. Built-in roles are fixed (docs/rbac.md documents them, and a test
//! holds the database to that table). No one creates or changes a role to hand out permissions
//! they could not grant themselves, or changes a role they hold; widening a role by a
//! permission under dual control waits for a second administrator.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use clinicd_rbac::administration::{self, Change, Outcome};
use clinicd_rbac::roles::{self, Role, RoleSpec};
use clinicd_rbac::{Permission, Permissions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{Audit, AuditNote};
use crate::extract::{Granted, Json};
use crate::problem::{ApiError, Problem};
use crate::routes::admin::dual_control::{actor, proposed};
use crate::state::ApiState;

/// One permission of the closed set.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PermissionView {
    /// Stable name, e.g. `patient:read`.
    pub name: String,
    pub description: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleView {
    pub name: String,
    pub description: String,
    /// What holders may do.
    pub permissions: Vec<String>,
    /// What holders may grant to others without using it themselves.
    pub delegable: Vec<String>,
    /// Holders must have a second factor; without one they are refused with
    /// `mfa_enrolment_required`.
    pub privileged: bool,
    pub built_in: bool,
    /// How many users hold it.
    pub members: i64,
}

impl From<Role> for RoleView {
    fn from(r: Role) -> Self {
        Self {
            permissions: names(r.permissions),
            delegable: names(r.delegable),
            name: r.name,
            description: r.description,
            privileged: r.privileged,
            built_in: r.built_in,
            members: r.members,
        }
    }
}

fn names(set: Permissions) -> Vec<String> {
    set.names().into_iter().map(str::to_owned).collect()
}

/// A custom role's content.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<String>,
    #[serde(default)]
    pub delegable: Vec<String>,
    #[serde(default)]
    pub privileged: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    /// A letter, then up to 63 letters, digits, `_` or `-`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<String>,
    #[serde(default)]
    pub delegable: Vec<String>,
    #[serde(default)]
    pub privileged: bool,
}

fn spec(
    description: &str,
    permissions: &[String],
    delegable: &[String],
    privileged: bool,
) -> Result<RoleSpec, ApiError> {
    let parse = |field: &'static str, list: &[String]| {
        Permissions::parse_names(list).map_err(|_| ApiError::InvalidField {
            field,
            reason: "names a permission that does not exist (GET /api/admin/permissions)".into(),
        })
    };
    Ok(RoleSpec {
        description: description.trim().to_owned(),
        permissions: parse("permissions", permissions)?,
        delegable: parse("delegable", delegable)?,
        privileged,
    })
}

fn audited(name: &str, before: Option<&Role>, after: Option<&Role>) -> AuditNote {
    let value = |r: Option<&Role>| r.map(Role::audit_value).unwrap_or_default();
    AuditNote {
        resource_id: Some(name.to_owned()),
        values: Some((value(before), value(after))),
        ..AuditNote::default()
    }
}

/// The closed set of permissions.
#[utoipa::path(
    get,
    path = "/api/admin/permissions",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every permission", body = [PermissionView]),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `role:manage` (permission_denied), or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_permissions() -> HttpResponse {
    HttpResponse::Ok().json(
        Permission::ALL
            .iter()
            .map(|p| PermissionView {
                name: p.as_str().to_owned(),
                description: p.describe().to_owned(),
            })
            .collect::<Vec<_>>(),
    )
}

/// Every role, built-in first.
#[utoipa::path(
    get,
    path = "/api/admin/roles",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every role", body = [RoleView]),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `role:manage` (permission_denied), or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_roles(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let roles = roles::list(&state.db).await?;
    Ok(HttpResponse::Ok().json(roles.into_iter().map(RoleView::from).collect::<Vec<_>>()))
}

/// Creates a custom role.
#[utoipa::path(
    post,
    path = "/api/admin/roles",
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreateRoleRequest,
    responses(
        (status = 201, description = "Created", body = RoleView),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `role:manage`, or permissions the caller cannot grant (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A role with this name exists (conflict)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid name or description, or an unknown permission (invalid_field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_role(
    granted: Granted,
    audit: Audit,
    body: Json<CreateRoleRequest>,
) -> Result<HttpResponse, ApiError> {
    let spec = spec(
        &body.description,
        &body.permissions,
        &body.delegable,
        body.privileged,
    )?;
    let mut tx = audit.begin().await?;
    let role = roles::create(&mut tx, &granted.0, body.name.trim(), &spec).await?;
    let note = audited(&role.name, None, Some(&role));
    audit.commit(tx, StatusCode::CREATED, note).await?;
    Ok(HttpResponse::Created().json(RoleView::from(role)))
}

/// Replaces a custom role's description, permissions and flags.
#[utoipa::path(
    put,
    path = "/api/admin/roles/{name}",
    tag = "admin",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Role name")),
    request_body = RoleBody,
    responses(
        (status = 200, description = "The role after the change", body = RoleView),
        (status = 202, description = "It widens the role by permissions that need a second administrator: waiting in a proposal", body = crate::routes::admin::dual_control::ProposalView),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `role:manage`, a role the caller holds (own_account), or permissions the caller cannot grant (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A built-in role (built_in_role)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid description or an unknown permission (invalid_field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_role(
    state: web::Data<ApiState>,
    granted: Granted,
    audit: Audit,
    name: web::Path<String>,
    body: Json<RoleBody>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    let spec = spec(
        &body.description,
        &body.permissions,
        &body.delegable,
        body.privileged,
    )?;
    let mut tx = audit.begin().await?;
    let change = Change::Role {
        name: name.clone(),
        spec,
    };
    let outcome =
        administration::request(&mut tx, &state.identity, actor(&state, &granted), change).await?;
    match outcome {
        Outcome::Applied(applied) => {
            let after = roles::get(&mut tx, &name)
                .await?
                .ok_or(ApiError::NotFound)?;
            let note = AuditNote {
                resource_id: Some(name),
                values: Some((applied.before, applied.after)),
                ..AuditNote::default()
            };
            audit.commit(tx, StatusCode::OK, note).await?;
            Ok(HttpResponse::Ok().json(RoleView::from(after)))
        }
        Outcome::Proposed {
            proposal,
            before,
            after,
        } => proposed(&audit, tx, &name, proposal, before, after).await,
    }
}

/// Deletes a custom role no one holds.
#[utoipa::path(
    delete,
    path = "/api/admin/roles/{name}",
    tag = "admin",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Role name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `role:manage`, a role the caller holds (own_account), or permissions the caller cannot grant (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A built-in role (built_in_role) or one still held (role_in_use)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_role(
    granted: Granted,
    audit: Audit,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut tx = audit.begin().await?;
    let role = roles::delete(&mut tx, &granted.0, &name).await?;
    let note = audited(&name, Some(&role), None);
    audit.commit(tx, StatusCode::NO_CONTENT, note).await?;
    Ok(HttpResponse::NoContent().finish())
}

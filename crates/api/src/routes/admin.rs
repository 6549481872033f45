//! User administration (`user:manage`): list, create with roles, change profile, set roles,
//! disable and enable, unlock, reset the password or the second factor, end every session.
//!
//! Every change is audited with the account before and after (sealed under the audit key).
//! An administrator acts on other accounts only, never on one whose roles reach permissions
//! they could not grant themselves, and never leaves the clinic without an active
//! administrator. Role names in a request are checked against `roles`; a field the endpoint
//! does not take (such as `roles` in a profile change) is refused, never ignored.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use clinicd_identity::users::{
    self, DisplayName, Email, NewUser, UserError, UserId, UserSummary, Username,
};
use clinicd_rbac::roles;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::AuditNote;
use crate::extract::Granted;
use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

/// An account as administrators see it (never a password hash or a secret).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub display_name: String,
    /// `active`, `disabled` or `locked`.
    pub status: String,
    /// Set while the account is locked out after failed logins.
    pub locked_until: Option<DateTime<Utc>>,
    pub must_change_password: bool,
    pub mfa_enabled: bool,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl From<UserSummary> for UserView {
    fn from(u: UserSummary) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            display_name: u.display_name,
            status: u.status,
            locked_until: u.locked_until,
            must_change_password: u.must_change_password,
            mfa_enabled: u.mfa_enabled,
            roles: u.roles,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UserListQuery {
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    pub users: Vec<UserView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    pub email: String,
    pub display_name: String,
    /// Roles to give at once; each must be grantable by the caller.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A new account and its one-time password, shown once; it must be changed at first login.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedUser {
    pub user: UserView,
    pub one_time_password: String,
}

/// A profile change. Roles and status have their own endpoints; any other field is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub email: Option<String>,
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRolesRequest {
    /// The complete set of roles the user will hold.
    pub roles: Vec<String>,
}

/// A password reset: the one-time password, shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PasswordReset {
    pub one_time_password: String,
}

fn user_error(error: UserError) -> ApiError {
    match error {
        UserError::InvalidUsername => invalid("username", &error),
        UserError::InvalidEmail => invalid("email", &error),
        UserError::InvalidDisplayName => invalid("display_name", &error),
        UserError::UsernameTaken => ApiError::Conflict("that username is taken"),
        UserError::EmailTaken => ApiError::Conflict("that e-mail address is taken"),
        UserError::Database(_) => ApiError::unexpected(error),
    }
}

fn invalid(field: &'static str, error: &UserError) -> ApiError {
    ApiError::InvalidField {
        field,
        reason: error.to_string(),
    }
}

async fn summary(state: &ApiState, id: UserId) -> Result<UserSummary, ApiError> {
    users::summary(&state.db, id)
        .await
        .map_err(user_error)?
        .ok_or(ApiError::NotFound)
}

/// The answer to a change: the account after it, audited with before and after.
fn changed(before: Option<&UserSummary>, after: UserSummary) -> HttpResponse {
    let mut response = HttpResponse::Ok().json(UserView::from(after.clone()));
    note(&mut response, after.id, before, &after);
    response
}

fn note(response: &mut HttpResponse, id: Uuid, before: Option<&UserSummary>, after: &UserSummary) {
    let value = |u: Option<&UserSummary>| serde_json::to_value(u).unwrap_or_default();
    AuditNote {
        resource_id: Some(id.to_string()),
        values: Some((value(before), value(Some(after)))),
        ..AuditNote::default()
    }
    .attach(response);
}

/// Checks the target exists and the caller may act on it; returns it as it is now.
async fn target(state: &ApiState, granted: &Granted, id: Uuid) -> Result<UserSummary, ApiError> {
    let before = summary(state, UserId(id)).await?;
    roles::guard_target(&state.db, &granted.0, UserId(id)).await?;
    Ok(before)
}

/// Every account, by username.
#[utoipa::path(
    get,
    path = "/api/admin/users",
    tag = "admin",
    security(("bearer" = [])),
    params(UserListQuery),
    responses(
        (status = 200, description = "One page of accounts", body = UserPage),
        (status = 400, description = "A malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage` (permission_denied), or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_users(
    state: web::Data<ApiState>,
    query: web::Query<UserListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::InvalidParameters);
    }
    let mut page = users::summaries(&state.db, query.after.as_deref(), limit + 1)
        .await
        .map_err(user_error)?;
    let next = (page.len() as i64 > limit).then(|| {
        page.truncate(limit as usize);
        page.last().map(|u| u.username.clone())
    });
    let returned = page.len();
    let mut response = HttpResponse::Ok().json(UserPage {
        users: page.into_iter().map(UserView::from).collect(),
        next: next.flatten(),
    });
    AuditNote {
        metadata: Some(serde_json::json!({ "returned": returned })),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// One account.
#[utoipa::path(
    get,
    path = "/api/admin/users/{id}",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The account", body = UserView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage` (permission_denied), or a privileged role without MFA (mfa_enrolment_required)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_user(
    state: web::Data<ApiState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let user = summary(&state, UserId(id)).await?;
    let mut response = HttpResponse::Ok().json(UserView::from(user));
    AuditNote {
        resource_id: Some(id.to_string()),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// Creates an account with a one-time password and, in the same transaction, its roles: if a
/// role cannot be granted, no account is created.
#[utoipa::path(
    post,
    path = "/api/admin/users",
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Created; the one-time password is shown once", body = CreatedUser),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage`, or a role reaching permissions the caller cannot grant (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The username or e-mail address is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid username, e-mail, display name or unknown role (invalid_field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_user(
    state: web::Data<ApiState>,
    granted: Granted,
    body: web::Json<CreateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let username = Username::parse(&body.username).map_err(user_error)?;
    let email = Email::parse(&body.email).map_err(user_error)?;
    let display_name = DisplayName::parse(&body.display_name).map_err(user_error)?;
    let password =
        clinicd_identity::bootstrap::one_time_password().map_err(ApiError::unexpected)?;
    let password_hash = state
        .identity
        .login
        .hasher()
        .hash(&password)
        .await
        .map_err(ApiError::unexpected)?;
    let mut tx = state.db.begin().await.map_err(ApiError::unexpected)?;
    let id = users::create(
        &mut *tx,
        NewUser {
            username,
            email,
            display_name,
            password_hash,
            must_change_password: true,
        },
    )
    .await
    .map_err(user_error)?;
    roles::set_user_roles(&mut tx, &granted.0, id, &body.roles).await?;
    let created = users::summary(&mut *tx, id)
        .await
        .map_err(user_error)?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await.map_err(ApiError::unexpected)?;
    let mut response = HttpResponse::Created().json(CreatedUser {
        user: UserView::from(created.clone()),
        one_time_password: password.expose_secret().to_owned(),
    });
    note(&mut response, id.0, None, &created);
    Ok(response)
}

/// Changes an account's e-mail address or display name.
#[utoipa::path(
    patch,
    path = "/api/admin/users/{id}",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The account after the change", body = UserView),
        (status = 400, description = "Malformed JSON or a field this endpoint does not take, such as `roles` (unknown_field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage`, the caller's own account (own_account), or a more powerful account (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The e-mail address is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid e-mail or display name (invalid_field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_user(
    state: web::Data<ApiState>,
    granted: Granted,
    id: web::Path<Uuid>,
    body: web::Json<UpdateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let email = body
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(user_error)?;
    let display_name = body
        .display_name
        .as_deref()
        .map(DisplayName::parse)
        .transpose()
        .map_err(user_error)?;
    let before = target(&state, &granted, id).await?;
    users::update_profile(&state.db, UserId(id), email.as_ref(), display_name.as_ref())
        .await
        .map_err(user_error)?;
    Ok(changed(Some(&before), summary(&state, UserId(id)).await?))
}

/// Sets the complete set of roles of an account.
#[utoipa::path(
    put,
    path = "/api/admin/users/{id}/roles",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = SetRolesRequest,
    responses(
        (status = 200, description = "The account after the change", body = UserView),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage`, the caller's own roles (own_account), or a role reaching permissions the caller cannot grant (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It would leave no active administrator (last_administrator)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown role (invalid_field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_roles(
    state: web::Data<ApiState>,
    granted: Granted,
    id: web::Path<Uuid>,
    body: web::Json<SetRolesRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId(id.into_inner());
    let before = target(&state, &granted, id.0).await?;
    let mut tx = state.db.begin().await.map_err(ApiError::unexpected)?;
    roles::set_user_roles(&mut tx, &granted.0, id, &body.roles).await?;
    tx.commit().await.map_err(ApiError::unexpected)?;
    Ok(changed(Some(&before), summary(&state, id).await?))
}

macro_rules! account_action {
    ($name:ident, $path:tt, $doc:tt) => {
        #[doc = $doc]
        #[utoipa::path(
            post,
            path = $path,
            tag = "admin",
            security(("bearer" = [])),
            params(("id" = Uuid, Path, description = "User id")),
            responses(
                (status = 200, description = "The account after the change", body = UserView),
                (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
                (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
                (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
                (status = 403, description = "Without `user:manage`, the caller's own account (own_account), or a more powerful account (permission_not_held)", body = Problem, content_type = "application/problem+json"),
                (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "It would leave no active administrator (last_administrator)", body = Problem, content_type = "application/problem+json"),
            )
        )]
        pub async fn $name(
            state: web::Data<ApiState>,
            granted: Granted,
            id: web::Path<Uuid>,
        ) -> Result<HttpResponse, ApiError> {
            let id = UserId(id.into_inner());
            let before = target(&state, &granted, id.0).await?;
            actions::$name(&state, granted.0.user, id).await?;
            Ok(changed(Some(&before), summary(&state, id).await?))
        }
    };
}

account_action!(
    disable_user,
    "/api/admin/users/{id}/disable",
    "Disables an account: it cannot log in and its sessions end at once."
);
account_action!(
    enable_user,
    "/api/admin/users/{id}/enable",
    "Enables a disabled account."
);
account_action!(
    unlock_user,
    "/api/admin/users/{id}/unlock",
    "Clears a lockout after failed logins."
);
account_action!(
    reset_mfa,
    "/api/admin/users/{id}/reset-mfa",
    "Removes the second factor (a lost phone): sessions and trusted devices end, and the user enrols again."
);
account_action!(
    revoke_sessions,
    "/api/admin/users/{id}/revoke-sessions",
    "Ends every session of the account at once."
);

/// What each account action does once it is allowed.
mod actions {
    use super::*;

    pub async fn disable_user(state: &ApiState, actor: UserId, id: UserId) -> Result<(), ApiError> {
        // The status changes under the role lock, so two administrators cannot disable each
        // other at once and leave none.
        let mut tx = state.db.begin().await.map_err(ApiError::unexpected)?;
        roles::guard_last_admin(&mut tx, id).await?;
        users::set_status(&mut *tx, id, "disabled")
            .await
            .map_err(user_error)?;
        tx.commit().await.map_err(ApiError::unexpected)?;
        state
            .identity
            .disable_user(id, Some(actor))
            .await
            .map_err(ApiError::unexpected)
    }

    pub async fn enable_user(state: &ApiState, actor: UserId, id: UserId) -> Result<(), ApiError> {
        state
            .identity
            .enable_user(id, Some(actor))
            .await
            .map_err(ApiError::unexpected)
    }

    pub async fn unlock_user(state: &ApiState, _actor: UserId, id: UserId) -> Result<(), ApiError> {
        state
            .identity
            .login
            .unlock(id)
            .await
            .map_err(ApiError::unexpected)
    }

    pub async fn reset_mfa(state: &ApiState, actor: UserId, id: UserId) -> Result<(), ApiError> {
        state
            .identity
            .admin_reset_mfa(id, Some(actor))
            .await
            .map_err(ApiError::unexpected)
    }

    pub async fn revoke_sessions(
        state: &ApiState,
        _actor: UserId,
        id: UserId,
    ) -> Result<(), ApiError> {
        state
            .identity
            .sessions
            .revoke_all(id, None, "admin_revoked")
            .await
            .map(|_| ())
            .map_err(ApiError::unexpected)
    }
}

/// Resets the password to a one-time password (shown once) that must be changed at the next
/// login; every session ends. The second factor stays, so a reset never skips MFA.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/reset-password",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The one-time password", body = PasswordReset),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage`, the caller's own account (own_account), or a more powerful account (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reset_password(
    state: web::Data<ApiState>,
    granted: Granted,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId(id.into_inner());
    let before = target(&state, &granted, id.0).await?;
    let password = state
        .identity
        .admin_reset_password(id, Some(granted.0.user))
        .await
        .map_err(ApiError::unexpected)?;
    let after = summary(&state, id).await?;
    let mut response = HttpResponse::Ok().json(PasswordReset {
        one_time_password: password.expose_secret().to_owned(),
    });
    note(&mut response, id.0, Some(&before), &after);
    Ok(response)
}

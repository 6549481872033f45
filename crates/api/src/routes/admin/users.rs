//! User administration (`user:manage`): list, create with roles, change profile, set roles,
//! disable and enable, unlock, reset the password or the second factor, end every session.
//!
//! Changes that hand out access to clinical data, or administration, wait for a second
//! administrator (`clinicd_rbac::administration`; answered 202 with the proposal). One-time
//! passwords reach their owner out of band in production, never the administrator.
//!
//! Every change is audited with the account before and after (sealed under the audit key),
//! committed in the change's own transaction.
//! An administrator acts on other accounts only, never on one whose roles reach permissions
//! they could not grant themselves, and never leaves the clinic without an active
//! administrator. Role names in a request are checked against `roles`; a field the endpoint
//! does not take (such as `roles` in a profile change) is refused, never ignored.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use clinicd_identity::otp::{OtpMessage, OtpPurpose};
use clinicd_identity::users::{self, DisplayName, Email, NewUser, UserId, UserSummary, Username};
use clinicd_rbac::administration::{self, Applied, Change, Outcome};
use clinicd_rbac::roles;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{Attach, Audit, AuditNote};
use crate::extract::{Granted, Json};
use crate::problem::{ApiError, Problem};
use crate::routes::admin::dual_control::{PasswordReset, ProposalView, actor, proposed};
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
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// The `next` cursor of the previous page (a username).
    #[param(max_length = 64)]
    pub after: Option<String>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
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

/// A new account. Its one-time password (to be changed at first login) goes to the account's
/// e-mail address through the out-of-band channel in production, and never into this answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedUser {
    pub user: UserView,
    /// Development mode only: the one-time password, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_time_password: Option<String>,
    /// `shown` (development) or the channel the password went through (`email`).
    pub credential_delivery: String,
    /// Roles that need a second administrator wait in this proposal (`roles` then holds the
    /// others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal: Option<ProposalView>,
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

async fn summary(db: impl sqlx::PgExecutor<'_>, id: UserId) -> Result<UserSummary, ApiError> {
    users::summary(db, id).await?.ok_or(ApiError::NotFound)
}

/// The audit note of a change to account `id`, with its values before and after.
fn note(id: Uuid, before: serde_json::Value, after: serde_json::Value) -> AuditNote {
    AuditNote {
        resource_id: Some(id.to_string()),
        values: Some((before, after)),
        ..AuditNote::default()
    }
}

/// Answers an administrative change to account `id`: 200 with the account after it, or 202
/// with the proposal waiting for a second administrator. Either way the event is committed
/// with the change.
async fn answer(
    audit: &Audit,
    mut tx: Transaction<'static, Postgres>,
    id: UserId,
    outcome: Outcome,
) -> Result<HttpResponse, ApiError> {
    match outcome {
        Outcome::Applied(applied) => {
            let after = summary(&mut *tx, id).await?;
            audit
                .commit(
                    tx,
                    StatusCode::OK,
                    note(id.0, applied.before, applied.after),
                )
                .await?;
            Ok(HttpResponse::Ok().json(UserView::from(after)))
        }
        Outcome::Proposed {
            proposal,
            before,
            after,
        } => proposed(audit, tx, &id.0.to_string(), proposal, before, after).await,
    }
}

/// Hands a new or reset account's one-time password to its owner: out of band in production
/// (never to the administrator), in the answer in development. Returns what the answer may
/// show and how it was delivered.
pub(crate) async fn deliver(
    state: &ApiState,
    user: &UserSummary,
    password: &SecretString,
) -> Result<(Option<String>, String), ApiError> {
    if !state.settings.production {
        return Ok((Some(password.expose_secret().to_owned()), "shown".into()));
    }
    let sender = state
        .identity
        .login
        .otp_sender()
        .ok_or(ApiError::CredentialChannelUnavailable)?;
    let message = OtpMessage {
        user_id: user.id,
        to: &user.email,
        purpose: OtpPurpose::OneTimePassword,
        code: password,
        expires_at: None,
    };
    sender.send(&message).await.map_err(|error| {
        tracing::warn!(error = %error, "one-time password not delivered: nothing changed");
        ApiError::Unavailable
    })?;
    Ok((None, sender.channel().to_owned()))
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
        (status = 400, description = "A malformed query (invalid_parameters)", body = Problem, content_type = "application/problem+json"),
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
    let after_fits = query.after.as_ref().is_none_or(|a| a.chars().count() <= 64);
    if !(1..=200).contains(&limit) || !after_fits {
        return Err(ApiError::InvalidParameters);
    }
    let mut page = users::summaries(&state.db, query.after.as_deref(), limit + 1).await?;
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
    let user = summary(&state.db, UserId(id)).await?;
    let mut response = HttpResponse::Ok().json(UserView::from(user));
    AuditNote {
        resource_id: Some(id.to_string()),
        ..AuditNote::default()
    }
    .attach(&mut response);
    Ok(response)
}

/// Creates an account with a one-time password and, in the same transaction, its roles: if a
/// role cannot be granted, no account is created. Roles that hand out access to clinical data
/// (or administration) wait for a second administrator in a proposal; the account exists
/// meanwhile without them. The password reaches the owner out of band in production.
#[utoipa::path(
    post,
    path = "/api/admin/users",
    tag = "admin",
    security(("bearer" = [])),
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Created (roles needing dual control are in `proposal`)", body = CreatedUser),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage`, or a role reaching permissions the caller cannot grant (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The username or e-mail address is taken (conflict), or production without an out-of-band channel (credential_channel_unavailable)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid username, e-mail, display name or unknown role (invalid_field)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The one-time password could not be delivered; nothing was created", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_user(
    state: web::Data<ApiState>,
    granted: Granted,
    audit: Audit,
    body: Json<CreateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let username = Username::parse(&body.username)?;
    let email = Email::parse(&body.email)?;
    let display_name = DisplayName::parse(&body.display_name)?;
    if state.settings.production && state.identity.login.otp_sender().is_none() {
        return Err(ApiError::CredentialChannelUnavailable);
    }
    let password =
        clinicd_identity::bootstrap::one_time_password().map_err(ApiError::unexpected)?;
    let password_hash = state
        .identity
        .login
        .hasher()
        .hash(&password)
        .await
        .map_err(ApiError::unexpected)?;
    let mut tx = audit.begin().await?;
    let new_user = NewUser {
        username,
        email,
        display_name,
        password_hash,
        must_change_password: true,
    };
    let (id, outcome) = administration::create_user(
        &mut tx,
        &state.identity,
        actor(&state, &granted),
        new_user,
        body.roles,
    )
    .await?;
    let created = summary(&mut *tx, id).await?;
    let proposal = match outcome {
        Outcome::Proposed { proposal, .. } => Some(ProposalView::of(&proposal, state.rbac.now())),
        Outcome::Applied(_) => None,
    };
    let (shown, credential_delivery) = deliver(&state, &created, &password).await?;
    let mut note = note(
        id.0,
        serde_json::Value::Null,
        serde_json::to_value(&created).unwrap_or_default(),
    );
    note.metadata = Some(serde_json::json!({
        "credential_delivery": credential_delivery,
        "proposal": proposal.as_ref().map(|p| p.id),
    }));
    audit.commit(tx, StatusCode::CREATED, note).await?;
    Ok(HttpResponse::Created().json(CreatedUser {
        user: UserView::from(created),
        one_time_password: shown,
        credential_delivery,
        proposal,
    }))
}

/// Changes an account's e-mail address or display name. A new e-mail address of an account
/// that reaches clinical data (or administers) waits for a second administrator: one-time
/// passwords go there, so changing it could hand the account to someone else.
#[utoipa::path(
    patch,
    path = "/api/admin/users/{id}",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The account after the change", body = UserView),
        (status = 202, description = "The display name changed; the e-mail address waits for a second administrator", body = ProposalView),
        (status = 400, description = "Malformed JSON or a field this endpoint does not take, such as `roles` (unknown_field)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage`, the caller's own account (own_account), or a more powerful account (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The e-mail address is taken", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid e-mail or display name (invalid_field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_user(
    state: web::Data<ApiState>,
    granted: Granted,
    audit: Audit,
    id: web::Path<Uuid>,
    body: Json<UpdateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId(id.into_inner());
    let email = body.email.as_deref().map(Email::parse).transpose()?;
    let display_name = body
        .display_name
        .as_deref()
        .map(DisplayName::parse)
        .transpose()?;
    let mut tx = audit.begin().await?;
    let before = summary(&mut *tx, id).await?;
    roles::guard_target(&mut *tx, &granted.0, id).await?;
    if display_name.is_some() {
        users::update_profile(&mut *tx, id, None, display_name.as_ref()).await?;
    }
    let outcome = match email {
        Some(email) => {
            let change = Change::Email { user: id, email };
            administration::request(&mut tx, &state.identity, actor(&state, &granted), change)
                .await?
        }
        None => Outcome::Applied(Applied {
            before: serde_json::Value::Null,
            after: serde_json::Value::Null,
            credential: None,
        }),
    };
    let before = serde_json::to_value(&before).unwrap_or_default();
    match outcome {
        Outcome::Applied(_) => {
            let after = summary(&mut *tx, id).await?;
            let values = serde_json::to_value(&after).unwrap_or_default();
            audit
                .commit(tx, StatusCode::OK, note(id.0, before, values))
                .await?;
            Ok(HttpResponse::Ok().json(UserView::from(after)))
        }
        Outcome::Proposed {
            proposal, after, ..
        } => proposed(&audit, tx, &id.0.to_string(), proposal, before, after).await,
    }
}

/// Sets the complete set of roles of an account. Adding a role that reaches clinical data,
/// exports, emergency access, sealed audit values or administration waits for a second
/// administrator (202 with the proposal).
#[utoipa::path(
    put,
    path = "/api/admin/users/{id}/roles",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = SetRolesRequest,
    responses(
        (status = 200, description = "The account after the change", body = UserView),
        (status = 202, description = "Waiting for a second administrator", body = ProposalView),
        (status = 400, description = "Malformed JSON or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage`, the caller's own roles (own_account), or a role reaching permissions the caller cannot grant (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It would leave no active administrator (last_administrator)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown role (invalid_field)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_roles(
    state: web::Data<ApiState>,
    granted: Granted,
    audit: Audit,
    id: web::Path<Uuid>,
    body: Json<SetRolesRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId(id.into_inner());
    let change = Change::Roles {
        user: id,
        roles: body.into_inner().roles,
    };
    let mut tx = audit.begin().await?;
    let outcome =
        administration::request(&mut tx, &state.identity, actor(&state, &granted), change).await?;
    answer(&audit, tx, id, outcome).await
}

macro_rules! account_action {
    ($name:ident, $change:path, $path:tt, $doc:tt) => {
        #[doc = $doc]
        #[utoipa::path(
            post,
            path = $path,
            tag = "admin",
            security(("bearer" = [])),
            params(("id" = Uuid, Path, description = "User id")),
            responses(
                (status = 200, description = "The account after the change", body = UserView),
                (status = 202, description = "Waiting for a second administrator (docs/rbac.md, dual control)", body = ProposalView),
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
            audit: Audit,
            id: web::Path<Uuid>,
        ) -> Result<HttpResponse, ApiError> {
            let id = UserId(id.into_inner());
            let mut tx = audit.begin().await?;
            let outcome = administration::request(
                &mut tx,
                &state.identity,
                actor(&state, &granted),
                $change(id),
            )
            .await?;
            answer(&audit, tx, id, outcome).await
        }
    };
}

account_action!(
    disable_user,
    Change::Disable,
    "/api/admin/users/{id}/disable",
    "Disables an account: it cannot log in and its sessions end at once. An administrator's account takes a second administrator."
);
account_action!(
    enable_user,
    Change::Enable,
    "/api/admin/users/{id}/enable",
    "Enables a disabled account. One that reaches clinical data (or administers) takes a second administrator."
);
account_action!(
    reset_mfa,
    Change::ResetMfa,
    "/api/admin/users/{id}/reset-mfa",
    "Removes the second factor (a lost phone): sessions and trusted devices end, and the user enrols again. An administrator's account takes a second administrator; a reset of an account that reaches clinical data raises a security event naming the administrator."
);

/// Clears a lockout after failed logins.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/unlock",
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
    )
)]
pub async fn unlock_user(
    state: web::Data<ApiState>,
    granted: Granted,
    audit: Audit,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId(id.into_inner());
    let mut tx = audit.begin().await?;
    let before = summary(&mut *tx, id).await?;
    roles::guard_target(&mut *tx, &granted.0, id).await?;
    state
        .identity
        .login
        .unlock(&mut tx, id, Some(granted.0.user))
        .await
        .map_err(ApiError::unexpected)?;
    changed(&audit, tx, before).await
}

/// Ends every session of the account at once.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/revoke-sessions",
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
    )
)]
pub async fn revoke_sessions(
    state: web::Data<ApiState>,
    granted: Granted,
    audit: Audit,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId(id.into_inner());
    let mut tx = audit.begin().await?;
    let before = summary(&mut *tx, id).await?;
    roles::guard_target(&mut *tx, &granted.0, id).await?;
    state
        .identity
        .sessions
        .revoke_all_in(&mut tx, id, None, "admin_revoked")
        .await
        .map_err(ApiError::unexpected)?;
    changed(&audit, tx, before).await
}

/// 200 with the account after a single-control change, its event committed with it.
async fn changed(
    audit: &Audit,
    mut tx: Transaction<'static, Postgres>,
    before: UserSummary,
) -> Result<HttpResponse, ApiError> {
    let after = summary(&mut *tx, UserId(before.id)).await?;
    let values = (
        serde_json::to_value(&before).unwrap_or_default(),
        serde_json::to_value(&after).unwrap_or_default(),
    );
    audit
        .commit(tx, StatusCode::OK, note(before.id, values.0, values.1))
        .await?;
    Ok(HttpResponse::Ok().json(UserView::from(after)))
}

/// Resets the password to a one-time password that must be changed at the next login; every
/// session ends. The second factor stays, so a reset never skips MFA. In production the
/// password goes to the account's owner out of band, never to the administrator. An
/// administrator's account takes a second administrator; a reset of an account that reaches
/// clinical data raises a security event naming the administrator.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/reset-password",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "Reset; how the password was delivered", body = PasswordReset),
        (status = 202, description = "Waiting for a second administrator", body = ProposalView),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Without `user:manage`, the caller's own account (own_account), or a more powerful account (permission_not_held)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Production without an out-of-band channel (credential_channel_unavailable)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The password could not be delivered; nothing changed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn reset_password(
    state: web::Data<ApiState>,
    granted: Granted,
    audit: Audit,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = UserId(id.into_inner());
    if state.settings.production && state.identity.login.otp_sender().is_none() {
        return Err(ApiError::CredentialChannelUnavailable);
    }
    let mut tx = audit.begin().await?;
    let outcome = administration::request(
        &mut tx,
        &state.identity,
        actor(&state, &granted),
        Change::ResetPassword(id),
    )
    .await?;
    match outcome {
        Outcome::Applied(applied) => {
            let reset = reset_answer(&state, &mut tx, id, applied.credential.as_ref()).await?;
            audit
                .commit(
                    tx,
                    StatusCode::OK,
                    note(id.0, applied.before, applied.after),
                )
                .await?;
            Ok(HttpResponse::Ok().json(reset))
        }
        Outcome::Proposed {
            proposal,
            before,
            after,
        } => proposed(&audit, tx, &id.0.to_string(), proposal, before, after).await,
    }
}

/// Delivers a reset's one-time password and says how.
pub(crate) async fn reset_answer(
    state: &ApiState,
    tx: &mut sqlx::PgConnection,
    id: UserId,
    credential: Option<&SecretString>,
) -> Result<PasswordReset, ApiError> {
    let credential =
        credential.ok_or_else(|| ApiError::unexpected("a reset without a password"))?;
    let user = summary(&mut *tx, id).await?;
    let (shown, credential_delivery) = deliver(state, &user, credential).await?;
    Ok(PasswordReset {
        one_time_password: shown,
        credential_delivery,
    })
}

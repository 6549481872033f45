//! The authorisation layer: deny by default. It sits inside the audit layer (so every refusal
//! is an audit event) and before every extractor and handler (so a caller without the
//! permission learns nothing from validation errors, and no handler runs).
//!
//! For a route that needs a permission it authenticates the caller, refuses a pending password
//! change, loads the caller's grants (from memory while the access version that the session
//! check read is unchanged, so a role change applies to the next request on every instance;
//! see `clinicd_rbac::grants`), and answers 403 `mfa_enrolment_required` to a holder of a
//! privileged role without a second factor and 403 `permission_denied` to anyone else without
//! the permission. The principal and grants stay with the request for the handler. An allowed
//! request then counts against its route's class rate limit, keyed by user.
//!
//! The patient read and search ([`MatchedRoute::confirms_session_in_statement`]) skip the
//! session query when this instance checked the session in full within the last minute: the
//! caller is admitted on what that check found, as a [`Provisional`] caller, and the handler's
//! statement confirms the session (`session_confirmed`, migration 0031). Whatever the handler
//! answered without confirming it waits here for a full check.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use clinicd_identity::sessions::{Principal, Recalled};
use clinicd_rbac::{Decision, Grants, Permission};

use crate::audit::{Attach, AuditNote};
use crate::extract;
use crate::extract::caller::Provisional;
use crate::metrics::SessionCheckKind;
use crate::problem::ApiError;
use crate::rate_limit::{PolicyState, RateKey, Refusal};
use crate::routes::{Access, MatchedRoute};
use crate::state::ApiState;
use clinicd_identity::users::UserId;

pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let route = MatchedRoute::of(req.request());
    let Some(Access::Permission(permission)) = route.map(|route| route.0.access) else {
        // Public and session routes authenticate in their extractors; unmatched paths 404.
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let state = super::state(req.request()).clone();
    if route.is_some_and(|route| route.confirms_session_in_statement()) {
        match extract::caller::recalled(req.request()) {
            Err(error) => return Ok(refuse(req, &error, None)),
            Ok(Some(recalled)) => match admit(&state, &recalled.principal, permission).await {
                Ok(grants) => return provisionally(req, next, &state, recalled, grants).await,
                // Refused on what this instance remembers: the full check below answers.
                Err(_) => state.identity.sessions.forget(recalled.check.session),
            },
            Ok(None) => {}
        }
    }
    match admit_in_full(req.request()).await {
        Ok((principal, grants)) => allowed(req, next, &state, principal.user_id, grants).await,
        Err((error, required)) => Ok(refuse(req, &error, required)),
    }
}

/// Authenticates the caller with the full session check and decides the route's permission;
/// the principal and grants stay with the request. The refusal names the permission that was
/// required, if that was the reason.
pub(crate) async fn admit_in_full(
    req: &HttpRequest,
) -> Result<(Principal, Grants), (ApiError, Option<Permission>)> {
    let Some(Access::Permission(permission)) = MatchedRoute::of(req).map(|route| route.0.access)
    else {
        return Err((ApiError::PermissionDenied, None));
    };
    let state = super::state(req).clone();
    let principal = extract::principal(req)
        .await
        .map_err(|error| (error, None))?;
    req.extensions_mut().insert(principal.clone());
    let grants = admit(&state, &principal, permission).await?;
    req.extensions_mut().remove::<Provisional>();
    req.extensions_mut().insert(grants.clone());
    Ok((principal, grants))
}

/// Whether `principal` may call a route that needs `permission`: a pending password change
/// refuses, then the grants of their access version decide.
async fn admit(
    state: &ApiState,
    principal: &Principal,
    permission: Permission,
) -> Result<Grants, (ApiError, Option<Permission>)> {
    if principal.must_change_password {
        return Err((ApiError::PasswordChangeRequired, None));
    }
    let grants = state
        .rbac
        .grants_at(principal.user_id, principal.access_version)
        .await
        .map_err(|error| (ApiError::unexpected(error), None))?;
    match grants.decide(permission) {
        Decision::Allowed => Ok(grants),
        Decision::MfaEnrolmentRequired => Err((ApiError::MfaEnrolmentRequired, Some(permission))),
        Decision::Denied => Err((
            ApiError::MissingPermission(permission.as_str()),
            Some(permission),
        )),
    }
}

/// An allowed request: counted against its class limit, then handled.
async fn allowed(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    state: &ApiState,
    user: UserId,
    grants: Grants,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let counted = match class_limit(&req, state, user).await {
        Ok(counted) => counted,
        Err(error) => return Ok(refuse(req, &error, None)),
    };
    if let Some(Err(refusal)) = counted {
        return Ok(refuse_over_limit(req, state, refusal));
    }
    req.extensions_mut().insert(grants);
    let mut response = next.call(req).await?.map_into_boxed_body();
    if let Some(Ok(passed)) = counted {
        // For the throttle layer's `RateLimit` headers.
        response.response_mut().extensions_mut().insert(passed);
    }
    Ok(response)
}

/// A request admitted on what this instance remembers of its session. Its handler confirms the
/// session in the statement that reads the record (and on a failed confirmation checks it in
/// full itself). If the handler answered without that (an invalid request, an error), the
/// session is checked in full here, before the answer leaves: a refusal replaces it. So no
/// answer of such a route goes out on what is remembered alone.
async fn provisionally(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    state: &ApiState,
    recalled: Recalled,
    grants: Grants,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let user = recalled.principal.user_id;
    req.extensions_mut().insert(Provisional(recalled));
    let response = allowed(req, next, state, user, grants).await?;
    if response
        .request()
        .extensions()
        .get::<Provisional>()
        .is_none()
    {
        return Ok(response);
    }
    state
        .metrics
        .count_session_check(SessionCheckKind::AfterHandler);
    let (request, answer) = response.into_parts();
    match admit_in_full(&request).await {
        Ok(_) => Ok(ServiceResponse::new(request, answer)),
        Err((error, required)) => {
            request.extensions_mut().remove::<Provisional>();
            Ok(ServiceResponse::new(request, refusal(&error, required)))
        }
    }
}

/// The route's class limit (`api`, `upload`), keyed by user. Counted only once the caller is
/// allowed, so a request refused for a missing permission uses no quota (the per-IP limit in
/// the throttle layer still counts it).
async fn class_limit(
    req: &ServiceRequest,
    state: &ApiState,
    user: UserId,
) -> Result<Option<Result<PolicyState, Refusal>>, ApiError> {
    let Some(class) = MatchedRoute::of(req.request()).and_then(|r| r.0.rate_class) else {
        return Ok(None);
    };
    crate::rate_limit::check_class(state, class, &RateKey::User(user.0))
        .await
        .map(Some)
}

/// 429, carrying the refusal for the throttle layer's headers.
fn refuse_over_limit(req: ServiceRequest, state: &ApiState, refusal: Refusal) -> ServiceResponse {
    state.metrics.count_rate_limited(refusal.policy);
    tracing::warn!(policy = refusal.policy, "rate limit exceeded");
    let mut response = refuse(
        req,
        &ApiError::RateLimited {
            retry_after: refusal.retry_after,
        },
        None,
    );
    response.response_mut().extensions_mut().insert(refusal);
    response
}

/// Answers the refusal; the audit layer records it with the permission that was required.
fn refuse(
    req: ServiceRequest,
    error: &ApiError,
    required: Option<Permission>,
) -> ServiceResponse<BoxBody> {
    req.into_response(refusal(error, required))
}

fn refusal(error: &ApiError, required: Option<Permission>) -> HttpResponse {
    let mut response = error.error_response();
    if let Some(permission) = required {
        AuditNote {
            metadata: Some(serde_json::json!({ "required": permission.as_str() })),
            ..AuditNote::default()
        }
        .attach(&mut response);
    }
    response
}

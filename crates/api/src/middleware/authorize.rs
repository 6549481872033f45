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

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use clinicd_rbac::{Decision, Permission};

use crate::audit::{Attach, AuditNote};
use crate::extract;
use crate::problem::ApiError;
use crate::rate_limit::{PolicyState, RateKey, Refusal};
use crate::routes::{Access, MatchedRoute};
use crate::state::ApiState;
use clinicd_identity::users::UserId;

pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let access = MatchedRoute::of(req.request()).map(|route| route.0.access);
    let Some(Access::Permission(permission)) = access else {
        // Public and session routes authenticate in their extractors; unmatched paths 404.
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let state = super::state(req.request()).clone();
    let principal = match extract::principal(req.request()).await {
        Ok(principal) => principal,
        Err(error) => return Ok(refuse(req, &error, None)),
    };
    req.extensions_mut().insert(principal.clone());
    if principal.must_change_password {
        return Ok(refuse(req, &ApiError::PasswordChangeRequired, None));
    }
    let grants = match state
        .rbac
        .grants_at(principal.user_id, principal.access_version)
        .await
    {
        Ok(grants) => grants,
        Err(error) => return Ok(refuse(req, &ApiError::unexpected(error), None)),
    };
    match grants.decide(permission) {
        Decision::Allowed => {
            let counted = match class_limit(&req, &state, principal.user_id).await {
                Ok(counted) => counted,
                Err(error) => return Ok(refuse(req, &error, None)),
            };
            if let Some(Err(refusal)) = counted {
                return Ok(refuse_over_limit(req, &state, refusal));
            }
            req.extensions_mut().insert(grants);
            let mut response = next.call(req).await?.map_into_boxed_body();
            if let Some(Ok(passed)) = counted {
                // For the throttle layer's `RateLimit` headers.
                response.response_mut().extensions_mut().insert(passed);
            }
            Ok(response)
        }
        Decision::MfaEnrolmentRequired => Ok(refuse(
            req,
            &ApiError::MfaEnrolmentRequired,
            Some(permission),
        )),
        Decision::Denied => Ok(refuse(
            req,
            &ApiError::MissingPermission(permission.as_str()),
            Some(permission),
        )),
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
    let mut response = error.error_response();
    if let Some(permission) = required {
        AuditNote {
            metadata: Some(serde_json::json!({ "required": permission.as_str() })),
            ..AuditNote::default()
        }
        .attach(&mut response);
    }
    req.into_response(response)
}

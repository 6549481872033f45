//! Rate limits: the per-client-IP limit on every route, then, for public and session routes,
//! the limit of the route's class (from the route table) by IP; the class limits of routes
//! that need a permission are counted per user by the authorisation layer and reported here.
//! Every limited response carries `RateLimit-Policy` and `RateLimit`; a refusal is 429
//! problem+json with `Retry-After`, counted and logged for the security dashboard.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};

use crate::client_ip::ClientIp;
use crate::problem::{ApiError, retry_after_secs};
use crate::rate_limit::{PolicyState, RateClass, RateKey, Refusal, policy_header, state_header};
use crate::routes::{Access, MatchedRoute};

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

pub async fn throttle(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = super::state(req.request()).clone();
    let ip = req
        .extensions()
        .get::<ClientIp>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |client| client.0);
    // Here, before authentication, the caller is known only by address, so the class limits
    // counted here are those of public and session routes, keyed by it. Routes that need a
    // permission count theirs per user in the authorisation layer, the login class in its
    // handler (by address and username).
    let class = MatchedRoute::of(req.request()).and_then(|route| {
        let per_user = matches!(route.0.access, Access::Permission(_));
        route
            .0
            .rate_class
            .filter(|class| !per_user && *class != RateClass::Login)
    });

    let mut passed: Vec<PolicyState> = Vec::with_capacity(2);
    let mut outcome = state.limits.check_ip(ip).map(|s| passed.push(s));
    if let (Ok(()), Some(class)) = (&outcome, class) {
        outcome = state
            .limits
            .check(class, &RateKey::Ip(ip))
            .map(|s| passed.push(s));
    }
    if let Err(refusal) = outcome {
        state.metrics.count_rate_limited(refusal.policy);
        tracing::warn!(policy = refusal.policy, "rate limit exceeded");
        let mut response = ApiError::RateLimited {
            retry_after: refusal.retry_after,
        }
        .error_response();
        set_headers(response.headers_mut(), &passed, Some(&refusal));
        return Ok(req.into_response(response));
    }
    let mut response = next.call(req).await?.map_into_boxed_body();
    // A class limit counted per user further in (see the authorisation layer).
    let inner = response.response().extensions();
    passed.extend(inner.get::<PolicyState>().cloned());
    let refusal = inner.get::<Refusal>().cloned();
    drop(inner);
    set_headers(response.headers_mut(), &passed, refusal.as_ref());
    Ok(response)
}

fn set_headers(headers: &mut HeaderMap, passed: &[PolicyState], refusal: Option<&Refusal>) {
    let mut policies: Vec<_> = passed.iter().map(|s| (s.policy, s.spec)).collect();
    let mut states = passed.to_vec();
    if let Some(refusal) = refusal {
        policies.push((refusal.policy, refusal.spec));
        states.push(PolicyState {
            policy: refusal.policy,
            spec: refusal.spec,
            remaining: 0,
            reset_secs: retry_after_secs(refusal.retry_after),
        });
    }
    if let Ok(value) = HeaderValue::from_str(&policy_header(&policies)) {
        headers.insert(RATELIMIT_POLICY, value);
    }
    if let Ok(value) = HeaderValue::from_str(&state_header(&states)) {
        headers.insert(RATELIMIT, value);
    }
}

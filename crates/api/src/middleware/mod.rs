//! The middleware stack, outermost first: request context (id, client IP, log span, access
//! log), security headers (and problem+json for every error), metrics, blocks and attack
//! signals (`guard`), CORS, rate limits,
//! audit (it sees exactly what the caller was answered), authorisation (deny by default,
//! before any extractor or handler runs), input hygiene (no control characters in a path or
//! query). Each route's resource is wrapped once more, to turn a panic into a 500.
//!
//! None of these layers returns `Err`: they answer refusals with responses. Handlers and
//! extractors turn their errors into responses inside actix too, so every error response
//! passes back out through every layer and gets its headers. (A layer cannot keep a clone of
//! the `HttpRequest` across the inner call to convert a stray `Err` itself: actix's router
//! needs the request uniquely owned and panics otherwise.)

pub mod audit;
pub mod authorize;
pub mod context;
pub mod cors;
pub mod guard;
pub mod hygiene;
pub mod observe;
pub mod panics;
pub mod security_headers;
pub mod throttle;

use actix_web::{HttpRequest, web};

use crate::state::ApiState;

/// The shared state. Registered by `crate::app`; its absence is a programming error that
/// the first test catches, so this fails loudly rather than degrading open.
#[expect(
    clippy::expect_used,
    reason = "registered by clinicd_api::app on every app; a missing one fails every test"
)]
fn state(request: &HttpRequest) -> &web::Data<ApiState> {
    request
        .app_data::<web::Data<ApiState>>()
        .expect("ApiState is registered as app data by clinicd_api::app")
}

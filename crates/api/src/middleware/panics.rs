//! A panic is a bug, never an answer: it is caught here, logged (where, not what: a panic's
//! message can quote a value, so it is left out, as the server's panic hook does), and answered
//! 500 problem+json like any other unexpected error. It wraps each resource of the route table
//! (after routing, where holding the request does not upset the router), inside every app-wide
//! layer, so the failure is audited and carries the security headers like any other.

use std::panic::AssertUnwindSafe;

use actix_web::ResponseError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use futures_util::FutureExt;

use crate::problem::ApiError;

pub async fn catch_panic(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let request = req.request().clone();
    match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(response) => Ok(response?.map_into_boxed_body()),
        Err(_) => {
            let error = ApiError::unexpected("a request handler panicked");
            Ok(ServiceResponse::new(request, error.error_response()))
        }
    }
}

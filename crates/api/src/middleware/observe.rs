//! Request metrics per method, route template and status.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

use super::context::route_label;

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = super::state(req.request()).metrics.clone();
    let response = next.call(req).await?.map_into_boxed_body();
    metrics.observe_request(
        response.request().method().as_str(),
        &route_label(&response),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    Ok(response)
}

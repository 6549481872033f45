//! Outermost layer: gives the request its id and client address, opens the log span every
//! line of the request is written in, and writes one access-log line.
//!
//! The access log names the route *template*, never the path or query string: both can carry
//! identifiers or PHI. Headers and bodies are never logged.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::middleware::Next;
use tracing::Instrument;

use crate::client_ip::ClientIp;
use crate::request_id::{self, RequestId};
use crate::routes::MatchedRoute;

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = RequestId::from_headers(req.headers());
    let peer = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
    let client = super::state(req.request())
        .settings
        .trusted_proxies
        .client_ip(peer, req.headers());
    req.extensions_mut().insert(id.clone());
    req.extensions_mut().insert(ClientIp(client));
    if let Some(route) = MatchedRoute::find(req.request()) {
        req.extensions_mut().insert(route);
    }

    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = tracing::field::Empty,
    );
    let mut response = request_id::scope(id.clone(), next.call(req))
        .instrument(span.clone())
        .await?
        .map_into_boxed_body();

    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(request_id::HEADER, value);
    }
    let route = route_label(&response);
    span.record("route", route.as_str());
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            client_ip = %client,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request completed"
        );
    });
    Ok(response)
}

/// The matched route template, or a fixed label for unmatched paths (never the raw path).
pub(crate) fn route_label<B>(response: &ServiceResponse<B>) -> String {
    response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned())
}

//! The HTTP API of clinicd.
//!
//! Owns: routes and the route table, the middleware stack (request ids, security headers,
//! CORS, rate limits, metrics), the mapping of every error to RFC 7807 problem+json, request
//! extraction and the OpenAPI document.
//!
//! Must not: hold business rules or SQL beyond a readiness probe (handlers extract, authorize,
//! call a domain crate, audit and respond); log bodies, query strings or raw paths.

pub mod audit;
pub mod client_ip;
pub mod cookies;
pub mod docs;
pub mod extract;
pub mod metrics;
pub mod middleware;
pub mod precondition;
pub mod problem;
pub mod rate_limit;
pub mod request_id;
pub mod routes;
pub mod settings;
pub mod state;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, ResponseError, web};

pub use metrics::Metrics;
pub use problem::{ApiError, Problem};
pub use settings::HttpSettings;
pub use state::{ApiState, Services, WorkerPools};

use crate::middleware::{context, cors, guard, observe, security_headers, throttle};

/// The API application.
pub fn app(
    state: ApiState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    app_with(state, |_| {})
}

/// The API application with extra services mounted inside the full middleware stack (tests
/// use this to exercise extractors through the real stack).
pub fn app_with(
    state: ApiState,
    extra: impl FnOnce(&mut web::ServiceConfig),
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let state = state.for_worker();
    let json_limit = state.settings.json_limit;
    App::new()
        .app_data(web::Data::new(state))
        .app_data(extract::json_config(json_limit))
        .app_data(extract::query_config())
        .app_data(extract::path_config())
        .configure(routes::register)
        .configure(docs::register)
        .configure(extra)
        .default_service(web::to(not_found))
        .wrap(from_fn(middleware::hygiene::hygiene))
        .wrap(from_fn(middleware::authorize::authorize))
        .wrap(from_fn(middleware::audit::audit))
        .wrap(from_fn(throttle::throttle))
        .wrap(from_fn(cors::cors))
        .wrap(from_fn(guard::guard))
        .wrap(from_fn(observe::observe))
        .wrap(from_fn(security_headers::security_headers))
        .wrap(from_fn(context::request_context))
}

/// The admin application (served on its own listener): Prometheus metrics.
pub fn admin_app(
    metrics: Metrics,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(web::Data::new(metrics))
        .route("/metrics", web::get().to(render_metrics))
        .default_service(web::to(not_found))
        .wrap(from_fn(security_headers::security_headers))
}

async fn render_metrics(metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    let body = metrics.render().map_err(ApiError::unexpected)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body))
}

async fn not_found() -> HttpResponse {
    ApiError::NotFound.error_response()
}

//! Liveness and readiness, reachable without authentication (load balancers and
//! orchestrators probe them). They reveal nothing but up or down.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::problem::{ApiError, Problem};
use crate::state::ApiState;

const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` for liveness, `ready` for readiness.
    #[schema(example = "ok")]
    pub status: String,
}

/// Liveness: the process is serving requests.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "The process is alive", body = Health),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the process can reach Postgres and so can serve real work.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ready(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let probe = sqlx::query_scalar!(r#"SELECT 1 AS "ready!""#).fetch_one(&state.db);
    match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(_)) => Ok(HttpResponse::Ok().json(Health {
            status: "ready".into(),
        })),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "readiness probe: database error");
            Err(ApiError::Unavailable)
        }
        Err(_) => {
            tracing::warn!("readiness probe: database timed out");
            Err(ApiError::Unavailable)
        }
    }
}

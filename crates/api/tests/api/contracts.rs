//! Snapshots of the API's contracts: the OpenAPI document and one problem+json body per error
//! class. A change to either shows in review as a diff of `snapshots/`; accept an intended
//! one with `INSTA_UPDATE=always` (or `cargo insta review`) and commit the new snapshot.

use std::time::Duration;

use actix_web::ResponseError;
use actix_web::body::to_bytes;
use actix_web::http::header;
use clinicd_api::ApiError;
use serde_json::{Value, json};

#[test]
fn the_openapi_document() {
    insta::assert_json_snapshot!("openapi", clinicd_api::docs::document());
}

/// One error of each class a client can meet (the status and `code` are the contract; the
/// wording of `detail` is reviewed with it).
fn one_of_each_class() -> Vec<ApiError> {
    vec![
        ApiError::MalformedJson { line: 1, column: 2 },
        ApiError::UnknownField {
            field: "is_admin".into(),
        },
        ApiError::InvalidParameters,
        ApiError::Unauthenticated,
        ApiError::InvalidCredentials,
        ApiError::CsrfTokenInvalid,
        ApiError::MissingPermission("patient:read"),
        ApiError::MfaEnrolmentRequired,
        ApiError::NotFound,
        ApiError::MethodNotAllowed,
        ApiError::LastAdministrator,
        ApiError::DataDestroyed,
        ApiError::PreconditionFailed,
        ApiError::PayloadTooLarge { limit: 65536 },
        ApiError::UnsupportedMediaType {
            expected: "application/json",
        },
        ApiError::InvalidField {
            field: "date_of_birth",
            reason: "is in the future".into(),
        },
        ApiError::PreconditionRequired,
        ApiError::RateLimited {
            retry_after: Duration::from_secs(7),
        },
        ApiError::Unexpected("a database detail that must not leak".into()),
        ApiError::FileIntegrity,
        ApiError::Unavailable,
    ]
}

#[actix_web::test]
async fn one_problem_body_per_error_class() {
    let mut rendered = Vec::new();
    for error in one_of_each_class() {
        let response = error.error_response();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = to_bytes(response.into_body()).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            !body.to_string().contains("must not leak"),
            "an internal error's text reached the body: {body}"
        );
        rendered.push(json!({
            "status": status,
            "content_type": content_type,
            "retry_after": retry_after,
            "body": body,
        }));
    }
    insta::assert_json_snapshot!("problems", rendered);
}

//! Extractor configuration and the authenticated-principal extractor.
//!
//! Body, query and path failures are mapped to [`ApiError`] here, once, so every endpoint
//! answers them the same way. Request DTOs use `#[serde(deny_unknown_fields)]`.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{FromRequest, HttpRequest, web};

use crate::problem::ApiError;

const JSON: &str = "application/json";

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(true)
        .error_handler(move |error, _req| json_error(error, limit).into())
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error: QueryPayloadError, _req| {
        tracing::debug!(error = %error, "query string rejected");
        ApiError::InvalidParameters.into()
    })
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error: PathError, _req| {
        tracing::debug!(error = %error, "path parameters rejected");
        ApiError::InvalidParameters.into()
    })
}

/// Never echoes serde's message for data errors: it quotes the submitted value
/// (`invalid type: string "123-45-6789"`), which may be PHI. Only positions and, for unknown
/// fields, the field name are reported.
fn json_error(error: JsonPayloadError, limit: usize) -> ApiError {
    match error {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType { expected: JSON },
        JsonPayloadError::Deserialize(err) if err.is_data() => match unknown_field(&err) {
            Some(field) => ApiError::UnknownField { field },
            None => ApiError::InvalidBody {
                line: err.line(),
                column: err.column(),
            },
        },
        JsonPayloadError::Deserialize(err) => ApiError::MalformedJson {
            line: err.line(),
            column: err.column(),
        },
        JsonPayloadError::Payload(actix_web::error::PayloadError::Overflow) => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::Payload(_) => ApiError::MalformedJson { line: 0, column: 0 },
        other => ApiError::unexpected(other.to_string()),
    }
}

fn unknown_field(err: &serde_json::Error) -> Option<String> {
    let message = err.to_string();
    let rest = message.strip_prefix("unknown field `")?;
    let name = &rest[..rest.find('`')?];
    // Field names are identifiers; anything else is not worth reflecting.
    let plausible =
        name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    Some(if plausible {
        name.to_owned()
    } else {
        "?".to_owned()
    })
}

/// The authenticated caller.
///
/// Until the identity crate can authenticate anyone, extraction always fails with 401: deny by
/// default, and no fake principal exists to be mistaken for a real one. The identity issue
/// replaces the body of `from_request`.
#[derive(Debug)]
pub struct Authenticated {
    _cannot_be_built_yet: (),
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(_req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Err(ApiError::Unauthenticated))
    }
}

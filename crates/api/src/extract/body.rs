//! Request bodies, query strings and paths.
//!
//! Body, query and path failures are mapped to [`ApiError`] here, once, so every endpoint
//! answers them the same way. Request DTOs use `#[serde(deny_unknown_fields)]`.

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

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

/// A JSON request body. Content type, size limit and syntax are checked as for `web::Json`
/// (its configuration above); then the body must be an object (a positional array or a bare
/// value is refused, 400 `invalid_body`), and no string in it may hold a NUL or another control
/// character but tab and line breaks (422 `invalid_field` naming where): Postgres refuses NUL
/// in text, and a control character in a stored value only deceives whoever reads it later.
/// Only then is it deserialized into `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::Json::<Value>::from_request(req, payload);
        Box::pin(async move {
            let web::Json(value) = body.await?;
            Ok(Self(body_of(value)?))
        })
    }
}

fn body_of<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::NotAnObject);
    }
    if let Some(field) = unprintable(&value, String::new()) {
        return Err(ApiError::UnprintableText { field });
    }
    let mut value = value;
    integral_numbers(&mut value);
    serde_json::from_value(value).map_err(|err| match unknown_field(&err) {
        Some(field) => ApiError::UnknownField { field },
        None => ApiError::InvalidBody { line: 0, column: 0 },
    })
}

/// JSON has one number type: `3.0` is the integer 3 (JSON Schema counts it as an `integer`, and
/// a generated client may send it so), but serde refuses it for an integer field. A float that is
/// a whole number within i64 becomes that integer before the body is typed; fields that want a
/// float take the integer just as well.
fn integral_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                // Exactly representable and in range: the round trip through i64 is lossless.
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_precision_loss,
                    reason = "checked: whole and within ±2^53"
                )]
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// Where in `value` a string (or an object's key) holds a character no text field takes.
fn unprintable(value: &Value, at: String) -> Option<String> {
    let bad = |s: &str| {
        s.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    };
    let join = |at: &str, name: &str| {
        if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        }
    };
    match value {
        Value::String(s) if bad(s) => Some(if at.is_empty() { "body".into() } else { at }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| unprintable(item, format!("{at}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(name, item)| {
            let here = join(&at, if plausible(name) { name } else { "?" });
            if bad(name) {
                return Some(here);
            }
            unprintable(item, here)
        }),
        _ => None,
    }
}

/// A field name worth reflecting in a problem: an identifier.
fn plausible(name: &str) -> bool {
    name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn unknown_field(err: &serde_json::Error) -> Option<String> {
    let message = err.to_string();
    let rest = message.strip_prefix("unknown field `")?;
    let name = rest.get(..rest.find('`')?)?;
    // Field names are identifiers; anything else is not worth reflecting.
    Some(if plausible(name) {
        name.to_owned()
    } else {
        "?".to_owned()
    })
}

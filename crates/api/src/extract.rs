//! Extractor configuration and the authenticated-principal extractor.
//!
//! Body, query and path failures are mapped to [`ApiError`] here, once, so every endpoint
//! answers them the same way. Request DTOs use `#[serde(deny_unknown_fields)]`.

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use serde::de::DeserializeOwned;
use serde_json::Value;

use clinicd_identity::sessions::{Principal, SessionError};
use clinicd_rbac::Grants;
use futures_util::future::LocalBoxFuture;

use crate::cookies;
use crate::problem::ApiError;
use crate::state::ApiState;

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
    serde_json::from_value(value).map_err(|err| match unknown_field(&err) {
        Some(field) => ApiError::UnknownField { field },
        None => ApiError::InvalidBody { line: 0, column: 0 },
    })
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

/// The authenticated caller: a valid access token (`Authorization: Bearer`, or the session
/// cookie plus `X-CSRF-Token` on unsafe methods; see [`crate::cookies`]) of a live session
/// of an active user who need not change their password first. No token or a bad one is 401
/// `unauthenticated`; a pending forced password change is 403 `password_change_required`. The
/// session is checked on every request, so a revoked session's tokens stop working at once.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// Any caller with a live session, including one who must change their password first: only
/// for the password change itself, `me` and logout.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let principal = principal(req);
        let req = req.clone();
        Box::pin(async move {
            let principal = remember(&req, principal.await?);
            if principal.must_change_password {
                return Err(ApiError::PasswordChangeRequired);
            }
            Ok(Self(principal))
        })
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let principal = principal(req);
        let req = req.clone();
        Box::pin(async move { Ok(Self(remember(&req, principal.await?))) })
    }
}

/// The caller's grants, as loaded by the authorisation layer for a route that needs a
/// permission (which it has checked). On any other route this refuses: fail closed.
#[derive(Debug, Clone)]
pub struct Granted(pub Grants);

impl FromRequest for Granted {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Grants>()
                .cloned()
                .map(Self)
                .ok_or(ApiError::PermissionDenied),
        )
    }
}

/// Keeps the principal with the request, for the audit layer's actor and session.
fn remember(req: &HttpRequest, principal: Principal) -> Principal {
    req.extensions_mut().insert(principal.clone());
    principal
}

/// How the caller presented their access token.
enum Credential {
    Bearer(String),
    /// From the session cookie; `csrf` is the `X-CSRF-Token` header if the method needs one.
    Cookie {
        token: String,
        csrf: Option<Option<String>>,
    },
}

fn credential(req: &HttpRequest) -> Option<Credential> {
    // An explicit header wins: a request carrying one was made by code, not by a browser
    // attaching cookies on its own.
    if let Some(token) = bearer_token(req) {
        return Some(Credential::Bearer(token));
    }
    let token = cookies::access_token(req)?;
    let csrf =
        cookies::is_unsafe(req.method()).then(|| cookies::csrf_header(req).map(str::to_owned));
    Some(Credential::Cookie { token, csrf })
}

/// Authenticates the caller, once per request: the authorisation layer may already have done
/// it for this request, and then its principal is reused.
pub(crate) fn principal(req: &HttpRequest) -> LocalBoxFuture<'static, Result<Principal, ApiError>> {
    if let Some(principal) = req.extensions().get::<Principal>().cloned() {
        return Box::pin(std::future::ready(Ok(principal)));
    }
    let credential = credential(req);
    let state = req.app_data::<web::Data<ApiState>>().cloned();
    Box::pin(async move {
        let (Some(credential), Some(state)) = (credential, state) else {
            return Err(ApiError::Unauthenticated);
        };
        let (token, csrf) = match credential {
            Credential::Bearer(token) => (token, None),
            Credential::Cookie { token, csrf } => (token, csrf),
        };
        let sessions = &state.identity.sessions;
        let principal = match sessions.authenticate(&token).await {
            Ok(principal) => principal,
            Err(SessionError::Database(error)) => return Err(ApiError::unexpected(error)),
            Err(_) => return Err(ApiError::Unauthenticated),
        };
        if let Some(presented) = csrf {
            let valid = presented
                .is_some_and(|value| sessions.csrf_token_matches(principal.session_id, &value));
            if !valid {
                tracing::warn!(session_id = %principal.session_id, "cookie request without a valid CSRF token refused");
                return Err(ApiError::CsrfTokenInvalid);
            }
        }
        Ok(principal)
    })
}

fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_owned())
}

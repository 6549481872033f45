//! Optimistic concurrency: every mutable resource has a version, shown as a strong `ETag`
//! (`"3"`). An update must send it back in `If-Match`: without it the answer is 428
//! `precondition_required` (a client that never read the resource cannot overwrite it), and
//! with a stale one 412 `precondition_failed`.

use actix_web::HttpRequest;
use actix_web::http::header;

use crate::problem::ApiError;

pub fn etag(version: i32) -> String {
    format!("\"{version}\"")
}

/// Matches no stored version (versions start at 1).
const NO_VERSION: i32 = 0;

/// The version named by `If-Match`. A weak or malformed tag cannot match a strong one: it
/// names no version, so the change fails its comparison (412) like a stale one, after the
/// change itself has been judged (a malformed body is 422 whatever the tag). `*` names no
/// version either, so it is treated as missing (428).
pub fn if_match(req: &HttpRequest) -> Result<i32, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Err(ApiError::PreconditionRequired);
    };
    let Ok(value) = value.to_str() else {
        return Ok(NO_VERSION);
    };
    let value = value.trim();
    if value == "*" {
        return Err(ApiError::PreconditionRequired);
    }
    Ok(value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .and_then(|v| v.parse().ok())
        .filter(|v: &i32| *v > 0)
        .unwrap_or(NO_VERSION))
}

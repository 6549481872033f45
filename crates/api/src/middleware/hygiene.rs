//! Input hygiene for what a route does not parse itself: a path or query string that carries a
//! NUL or another control character (percent-encoded or not) is refused with 400
//! `invalid_parameters` before any extractor or handler sees it. Postgres refuses NUL in text,
//! and no identifier, name or filter of ours has a use for a control character.

use actix_web::ResponseError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use percent_encoding::percent_decode_str;

use crate::problem::ApiError;

pub async fn hygiene(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let uri = req.uri();
    let clean = printable(uri.path()) && uri.query().is_none_or(printable);
    if !clean {
        tracing::debug!("a path or query with control characters refused");
        return Ok(req.into_response(ApiError::InvalidParameters.error_response()));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

fn printable(raw: &str) -> bool {
    !percent_decode_str(raw)
        .decode_utf8_lossy()
        .chars()
        .any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_and_raw_controls_are_caught() {
        assert!(printable("/api/admin/roles/Billing"));
        assert!(printable("after=dr.quinn&limit=5"));
        assert!(printable("name=Jos%C3%A9"));
        assert!(!printable("/api/admin/roles/Bil%00ling"));
        assert!(!printable("after=a%0Ab"));
        assert!(!printable("after=%C2%85"), "a C1 control, UTF-8 encoded");
    }
}

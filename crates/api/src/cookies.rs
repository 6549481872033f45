//! Session cookies for browser clients, and their CSRF defence.
//!
//! A browser client asks for cookies at login (`"cookies": true`). Its tokens then never reach
//! JavaScript: the access and refresh tokens travel in `__Host-` cookies (HttpOnly, Secure,
//! SameSite=Strict, Path=/, no Domain, so no sibling host or plain-HTTP page can set or read
//! them). Because a browser attaches cookies by itself, every unsafe request authenticated by
//! cookie must also carry the session's CSRF token in `X-CSRF-Token`: an HMAC of the session id
//! (signed double submit), returned in the login body and in the readable `__Host-clinicd-csrf`
//! cookie so a reloaded page can find it again. A cross-site page can neither read that cookie
//! nor set the header without a CORS grant. API clients send `Authorization: Bearer` and need
//! no CSRF token: no browser adds that header on its own.

use actix_web::HttpRequest;
use actix_web::HttpResponseBuilder;
use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::http::Method;
use chrono::Utc;
use clinicd_identity::devices::NewDevice;
use clinicd_identity::sessions::IssuedTokens;
use secrecy::ExposeSecret;

pub const ACCESS_COOKIE: &str = "__Host-clinicd-access";
pub const REFRESH_COOKIE: &str = "__Host-clinicd-refresh";
pub const CSRF_COOKIE: &str = "__Host-clinicd-csrf";
pub const DEVICE_COOKIE: &str = "__Host-clinicd-device";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A `__Host-` cookie: Secure, Path=/, no Domain; SameSite=Strict.
fn host_cookie(
    name: &'static str,
    value: String,
    max_age_secs: i64,
    http_only: bool,
) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .secure(true)
        .http_only(http_only)
        .same_site(SameSite::Strict)
        .max_age(time::Duration::seconds(max_age_secs.max(0)))
        .finish()
}

/// Sets the session's cookies on a login or refresh response.
pub fn set_session(response: &mut HttpResponseBuilder, tokens: &IssuedTokens, csrf_token: &str) {
    let now = Utc::now();
    let access_secs = (tokens.access_expires_at - now).num_seconds();
    // The refresh cookie lives as long as the session may; the server enforces idle and
    // absolute limits regardless of what the browser keeps.
    let session_secs = (tokens.session_expires_at - now).num_seconds();
    response.cookie(host_cookie(
        ACCESS_COOKIE,
        tokens.access_token.clone(),
        access_secs,
        true,
    ));
    response.cookie(host_cookie(
        REFRESH_COOKIE,
        tokens.refresh_token.expose_secret().to_owned(),
        session_secs,
        true,
    ));
    // Readable by the page's own script (that is its purpose); useless to anyone else.
    response.cookie(host_cookie(
        CSRF_COOKIE,
        csrf_token.to_owned(),
        session_secs,
        false,
    ));
}

/// Remembers a trusted device (HttpOnly; kept across logouts, since it belongs to the device).
pub fn set_device(response: &mut HttpResponseBuilder, device: &NewDevice) {
    let secs = (device.expires_at - Utc::now()).num_seconds();
    response.cookie(host_cookie(
        DEVICE_COOKIE,
        device.token.expose_secret().to_owned(),
        secs,
        true,
    ));
}

pub fn device_token(req: &HttpRequest) -> Option<String> {
    non_empty(req.cookie(DEVICE_COOKIE)?.value())
}

/// Expires all three session cookies (logout, or a refresh that failed).
pub fn clear_session(response: &mut HttpResponseBuilder) {
    for name in [ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE] {
        response.cookie(host_cookie(name, String::new(), 0, name != CSRF_COOKIE));
    }
}

pub fn access_token(req: &HttpRequest) -> Option<String> {
    non_empty(req.cookie(ACCESS_COOKIE)?.value())
}

pub fn refresh_token(req: &HttpRequest) -> Option<String> {
    non_empty(req.cookie(REFRESH_COOKIE)?.value())
}

pub fn csrf_header(req: &HttpRequest) -> Option<&str> {
    req.headers().get(CSRF_HEADER)?.to_str().ok()
}

/// Methods that change state and so need the CSRF token when authenticated by cookie.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

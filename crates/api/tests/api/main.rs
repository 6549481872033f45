//! The HTTP layer driven in process through the full middleware stack.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::type_complexity,
    reason = "tests: a panic is the report"
)]

mod accounting;
mod admin;
mod atomic;
mod audit;
mod auth;
mod bad_input;
mod care_team;
mod challenge;
mod consents;
mod contracts;
mod cookies;
mod cors;
mod files;
mod headers;
mod health;
mod labels;
mod lifecycle;
mod login_throttle;
mod mfa;
mod openapi;
mod patients;
mod problems;
mod rate_limits;
mod rbac;
mod records;
mod remembered_sessions;
mod request_ids;
mod scope;
mod security;
mod separation;
mod shredding;

/// Status and JSON body (`null` when empty) of one request.
async fn json_of(
    app: &clinicd_test_support::TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let response = app
        .call(clinicd_test_support::send(method, path, token, body))
        .await;
    let value = if response.body.is_empty() {
        serde_json::Value::Null
    } else {
        response.json()
    };
    (response.status.as_u16(), value)
}

/// The ids a search answers with, sorted; the search must answer 200.
async fn search_ids(
    app: &clinicd_test_support::TestApp,
    token: &str,
    criteria: &serde_json::Value,
) -> Vec<String> {
    let response = app
        .call(clinicd_test_support::send(
            "POST",
            "/api/patients/search",
            token,
            Some(criteria.clone()),
        ))
        .await;
    assert_eq!(
        response.status,
        200,
        "{criteria}: {}",
        String::from_utf8_lossy(&response.body)
    );
    let mut ids: Vec<String> = response.json()["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

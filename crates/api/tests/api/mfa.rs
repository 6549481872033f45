use std::sync::Arc;

use actix_web::test::TestRequest;
use clinicd_identity::otp::WebhookOtpSender;
use clinicd_test_support::fake_http::FakeHttpServer;
use clinicd_test_support::{TestApp, settings};
use secrecy::SecretSlice;
use serde_json::{Value, json};
use sqlx::PgPool;
use totp_rs::{Builder, Secret};

const PASSWORD: &str = "correct horse battery staple";

async fn app_with_user(pool: PgPool) -> TestApp {
    clinicd_test_support::keyring(pool.clone())
        .bootstrap()
        .await
        .unwrap();
    clinicd_test_support::create_user(&pool, "dr.two", PASSWORD, false).await;
    TestApp::with_pool(settings(), pool)
}

fn post(path: &str, body: Value) -> TestRequest {
    clinicd_test_support::post(path, &body)
}

fn authorized(request: TestRequest, token: &str) -> TestRequest {
    request.insert_header(("Authorization", format!("Bearer {token}")))
}

fn current_code(secret: &str) -> String {
    let totp = Builder::new()
        .with_secret(Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap();
    totp.generate(u64::try_from(chrono::Utc::now().timestamp()).unwrap())
        .to_string()
}

#[sqlx::test(migrations = "../../migrations")]
async fn enrol_then_log_in_with_a_second_factor(pool: PgPool) {
    let app = app_with_user(pool).await;
    let login = || {
        post(
            "/api/auth/login",
            json!({ "username": "dr.two", "password": PASSWORD }),
        )
    };
    let tokens = app.call(login()).await.json();
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    let enrolment = app
        .call(authorized(post("/api/auth/mfa/totp", json!({})), &access))
        .await;
    assert_eq!(enrolment.status, 200);
    let enrolment = enrolment.json();
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    assert!(
        enrolment["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    assert!(enrolment["qr_png_base64"].as_str().unwrap().len() > 100);

    app.call(authorized(
        post("/api/auth/mfa/totp/confirm", json!({ "code": "000000" })),
        &access,
    ))
    .await
    .assert_problem(422, "invalid_mfa_code");
    let confirmed = app
        .call(authorized(
            post(
                "/api/auth/mfa/totp/confirm",
                json!({ "code": current_code(&secret) }),
            ),
            &access,
        ))
        .await;
    assert_eq!(confirmed.status, 200);
    let backup_codes: Vec<String> = confirmed.json()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(backup_codes.len(), 10);
    app.call(authorized(post("/api/auth/mfa/totp", json!({})), &access))
        .await
        .assert_problem(409, "mfa_already_enrolled");

    // The password alone now yields a challenge, not a session.
    let step = app.call(login()).await;
    assert_eq!(step.status, 202);
    let challenge = step.json()["challenge_token"].as_str().unwrap().to_owned();
    assert!(step.json().get("access_token").is_none());
    app.call(authorized(
        TestRequest::get().uri("/api/auth/me"),
        &challenge,
    ))
    .await
    .assert_problem(401, "unauthenticated");

    let done = app
        .call(post(
            "/api/auth/mfa",
            json!({ "challenge_token": challenge, "code": backup_codes[0] }),
        ))
        .await;
    assert_eq!(done.status, 200);
    let session = done.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(authorized(TestRequest::get().uri("/api/auth/me"), &session))
            .await
            .json()["mfa_enabled"],
        true
    );

    app.call(post(
        "/api/auth/mfa",
        json!({ "challenge_token": challenge, "code": backup_codes[1] }),
    ))
    .await
    .assert_problem(401, "invalid_mfa");
    app.call(post(
        "/api/auth/mfa",
        json!({ "challenge_token": access, "code": backup_codes[1] }),
    ))
    .await
    .assert_problem(401, "invalid_mfa");
}

/// Logs in, enrols TOTP; returns the session's access token and the backup codes.
async fn enrolled(app: &TestApp) -> (String, Vec<String>) {
    let tokens = app
        .call(post(
            "/api/auth/login",
            json!({ "username": "dr.two", "password": PASSWORD }),
        ))
        .await
        .json();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let enrolment = app
        .call(authorized(post("/api/auth/mfa/totp", json!({})), &access))
        .await
        .json();
    let secret = enrolment["secret"].as_str().unwrap();
    let confirmed = app
        .call(authorized(
            post(
                "/api/auth/mfa/totp/confirm",
                json!({ "code": current_code(secret) }),
            ),
            &access,
        ))
        .await
        .json();
    let codes = confirmed["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (access, codes)
}

async fn password_step(app: &TestApp, extra: Value) -> actix_web::http::StatusCode {
    let mut body = json!({ "username": "dr.two", "password": PASSWORD });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    app.call(post("/api/auth/login", body)).await.status
}

async fn challenge(app: &TestApp) -> String {
    let step = app
        .call(post(
            "/api/auth/login",
            json!({ "username": "dr.two", "password": PASSWORD }),
        ))
        .await;
    assert_eq!(step.status, 202);
    step.json()["challenge_token"].as_str().unwrap().to_owned()
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_trusted_device_logs_in_with_the_password_alone_until_revoked(pool: PgPool) {
    let app = app_with_user(pool).await;
    let (access, codes) = enrolled(&app).await;
    let challenge_token = challenge(&app).await;
    let done = app
        .call(post(
            "/api/auth/mfa",
            json!({ "challenge_token": challenge_token, "code": codes[0], "trust_device": true }),
        ))
        .await;
    assert_eq!(done.status, 200);
    let device_token = done.json()["device_token"].as_str().unwrap().to_owned();

    assert_eq!(
        password_step(&app, json!({ "device_token": device_token })).await,
        200
    );
    assert_eq!(
        password_step(&app, json!({ "device_token": "not-a-device" })).await,
        202
    );
    let listed = app
        .call(authorized(
            TestRequest::get().uri("/api/auth/devices"),
            &access,
        ))
        .await;
    assert_eq!(listed.status, 200);
    let devices = listed.json();
    assert_eq!(devices.as_array().unwrap().len(), 1, "{devices}");
    let id = devices[0]["id"].as_str().unwrap();
    assert!(devices[0].get("token_hash").is_none());

    let delete = |path: String| authorized(TestRequest::delete().uri(&path), &access);
    app.call(delete("/api/auth/devices/not-a-uuid".into()))
        .await
        .assert_problem(400, "invalid_parameters");
    app.call(delete(format!(
        "/api/auth/devices/{}",
        uuid::Uuid::now_v7()
    )))
    .await
    .assert_problem(404, "not_found");
    assert_eq!(
        app.call(delete(format!("/api/auth/devices/{id}")))
            .await
            .status,
        204
    );
    assert_eq!(
        password_step(&app, json!({ "device_token": device_token })).await,
        202,
        "a revoked device needs the second factor again"
    );
    app.call(TestRequest::get().uri("/api/auth/devices"))
        .await
        .assert_problem(401, "unauthenticated");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_browser_keeps_its_trusted_device_in_a_host_cookie(pool: PgPool) {
    let app = app_with_user(pool).await;
    let (_, codes) = enrolled(&app).await;
    let challenge_token = challenge(&app).await;
    let done = app
        .call(post(
            "/api/auth/mfa",
            json!({ "challenge_token": challenge_token, "code": codes[1], "trust_device": true, "cookies": true }),
        ))
        .await;
    assert_eq!(done.status, 200);
    assert!(
        done.json().get("device_token").is_none(),
        "not script-readable"
    );
    let device = done
        .headers
        .get_all("set-cookie")
        .map(|v| actix_web::cookie::Cookie::parse(v.to_str().unwrap().to_owned()).unwrap())
        .find(|c| c.name() == "__Host-clinicd-device")
        .expect("device cookie");
    assert_eq!(device.http_only(), Some(true));
    assert_eq!(device.secure(), Some(true));
    assert_eq!(
        device.max_age().unwrap().whole_days(),
        29,
        "30 days less a moment"
    );

    let login = app
        .call(
            post(
                "/api/auth/login",
                json!({ "username": "dr.two", "password": PASSWORD, "cookies": true }),
            )
            .cookie(actix_web::cookie::Cookie::new(
                "__Host-clinicd-device",
                device.value().to_owned(),
            )),
        )
        .await;
    assert_eq!(login.status, 200, "{:?}", login.json());
}

#[sqlx::test(migrations = "../../migrations")]
async fn turning_mfa_off_needs_the_password_and_a_code(pool: PgPool) {
    let app = app_with_user(pool).await;
    let (access, codes) = enrolled(&app).await;
    let disable = |body: Value| authorized(post("/api/auth/mfa/disable", body), &access);

    app.call(disable(
        json!({ "password": "wrong password, sorry", "code": codes[0] }),
    ))
    .await
    .assert_problem(403, "current_password_incorrect");
    app.call(disable(
        json!({ "password": PASSWORD, "code": "ZZZZ-ZZZZ-ZZZZ-ZZZZ" }),
    ))
    .await
    .assert_problem(422, "invalid_mfa_code");
    app.call(disable(json!({ "password": PASSWORD })))
        .await
        .assert_problem(400, "invalid_body");
    app.call(post(
        "/api/auth/mfa/disable",
        json!({ "password": PASSWORD, "code": codes[0] }),
    ))
    .await
    .assert_problem(401, "unauthenticated");

    let off = app
        .call(disable(json!({ "password": PASSWORD, "code": codes[0] })))
        .await;
    assert_eq!(off.status, 204);
    let me = app
        .call(authorized(TestRequest::get().uri("/api/auth/me"), &access))
        .await
        .json();
    assert_eq!(me["mfa_enabled"], false, "the current session stays");
    assert_eq!(password_step(&app, json!({})).await, 200);
    app.call(disable(json!({ "password": PASSWORD, "code": codes[1] })))
        .await
        .assert_problem(409, "mfa_not_enrolled");
}

#[sqlx::test(migrations = "../../migrations")]
async fn new_backup_codes_need_a_current_code_and_replace_the_old_ones(pool: PgPool) {
    let app = app_with_user(pool).await;
    let (access, codes) = enrolled(&app).await;
    let regenerate = |code: &str| {
        authorized(
            post("/api/auth/mfa/backup-codes", json!({ "code": code })),
            &access,
        )
    };

    app.call(regenerate("ZZZZ-ZZZZ-ZZZZ-ZZZZ"))
        .await
        .assert_problem(422, "invalid_mfa_code");
    let fresh = app.call(regenerate(&codes[0])).await;
    assert_eq!(fresh.status, 200);
    let fresh: Vec<String> = fresh.json()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fresh.len(), 10);
    assert!(fresh.iter().all(|c| !codes.contains(c)));

    let old = app
        .call(post(
            "/api/auth/mfa",
            json!({ "challenge_token": challenge(&app).await, "code": codes[1] }),
        ))
        .await;
    old.assert_problem(401, "invalid_mfa");
    let new = app
        .call(post(
            "/api/auth/mfa",
            json!({ "challenge_token": challenge(&app).await, "code": fresh[0] }),
        ))
        .await;
    assert_eq!(new.status, 200);
}

const GATEWAY_KEY: [u8; 32] = [21; 32];

async fn app_with_gateway(pool: PgPool, status: u16) -> (TestApp, FakeHttpServer) {
    clinicd_test_support::keyring(pool.clone())
        .bootstrap()
        .await
        .unwrap();
    clinicd_test_support::create_user(&pool, "dr.two", PASSWORD, false).await;
    let gateway = FakeHttpServer::start(status, "{}").await;
    let sender = WebhookOtpSender::new(
        gateway.url.parse().unwrap(),
        &SecretSlice::from(GATEWAY_KEY.to_vec()),
    )
    .unwrap();
    let identity = clinicd_test_support::identity_with(pool.clone(), |identity| {
        identity.with_otp_sender(Arc::new(sender))
    });
    (TestApp::with_identity(settings(), pool, identity), gateway)
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_code_sent_through_the_gateway_completes_the_login(pool: PgPool) {
    let (app, gateway) = app_with_gateway(pool, 200).await;
    enrolled(&app).await;
    let challenge_token = challenge(&app).await;

    let sent = app
        .call(post(
            "/api/auth/mfa/send",
            json!({ "challenge_token": challenge_token }),
        ))
        .await;
    assert_eq!(sent.status, 202, "{:?}", sent.json());
    assert_eq!(sent.json()["channel"], "email");
    assert!(sent.json().get("code").is_none());

    let requests = gateway.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let timestamp = request.header("x-clinicd-timestamp").unwrap();
    assert_eq!(
        request.header("x-clinicd-signature").unwrap(),
        format!(
            "sha256={}",
            WebhookOtpSender::signature(&GATEWAY_KEY, &timestamp, &request.body)
        ),
        "the gateway can check the request came from us"
    );
    let message: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(message["to"], "dr.two@clinic.example");
    let code = message["code"].as_str().unwrap().to_owned();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );

    let done = app
        .call(post(
            "/api/auth/mfa",
            json!({ "challenge_token": challenge_token, "code": code }),
        ))
        .await;
    assert_eq!(done.status, 200, "{:?}", done.json());
    // The code belonged to that challenge, which is used up.
    app.call(post(
        "/api/auth/mfa",
        json!({ "challenge_token": challenge(&app).await, "code": code }),
    ))
    .await
    .assert_problem(401, "invalid_mfa");
}

#[sqlx::test(migrations = "../../migrations")]
async fn sends_are_capped_per_challenge_and_a_failing_gateway_is_503(pool: PgPool) {
    let (app, gateway) = app_with_gateway(pool.clone(), 200).await;
    enrolled(&app).await;
    let challenge_token = challenge(&app).await;
    let send = || {
        post(
            "/api/auth/mfa/send",
            json!({ "challenge_token": challenge_token }),
        )
    };
    for _ in 0..3 {
        assert_eq!(app.call(send()).await.status, 202);
    }
    app.call(send()).await.assert_problem(401, "invalid_mfa");
    assert_eq!(gateway.requests().len(), 3);
    app.call(post(
        "/api/auth/mfa/send",
        json!({ "challenge_token": "forged" }),
    ))
    .await
    .assert_problem(401, "invalid_mfa");
    app.call(post("/api/auth/mfa/send", json!({})))
        .await
        .assert_problem(400, "invalid_body");

    let broken = FakeHttpServer::start(500, "{}").await;
    let sender = WebhookOtpSender::new(
        broken.url.parse().unwrap(),
        &SecretSlice::from(GATEWAY_KEY.to_vec()),
    )
    .unwrap();
    let identity = clinicd_test_support::identity_with(pool.clone(), |identity| {
        identity.with_otp_sender(Arc::new(sender))
    });
    let app = TestApp::with_identity(settings(), pool, identity);
    app.call(post(
        "/api/auth/mfa/send",
        json!({ "challenge_token": challenge(&app).await }),
    ))
    .await
    .assert_problem(503, "service_unavailable");
}

#[sqlx::test(migrations = "../../migrations")]
async fn without_a_configured_channel_there_is_no_fallback(pool: PgPool) {
    let app = app_with_user(pool).await;
    enrolled(&app).await;
    app.call(post(
        "/api/auth/mfa/send",
        json!({ "challenge_token": challenge(&app).await }),
    ))
    .await
    .assert_problem(409, "mfa_fallback_disabled");
}

use actix_web::test::TestRequest;
use clinicd_test_support::{TestApp, settings};
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
    TestRequest::post()
        .uri(path)
        .peer_addr("192.0.2.60:4000".parse().unwrap())
        .insert_header(("Content-Type", "application/json"))
        .set_payload(body.to_string())
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

use actix_web::test::TestRequest;
use clinicd::telemetry;
use clinicd_test_support::{LogCapture, TestApp, settings};

const SSN: &str = "123-45-6789";
const PASSWORD: &str = "correct-horse-battery-staple-42";
const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl";
const COOKIE: &str = "session-cookie-value-77";

#[actix_web::test]
async fn requests_carrying_phi_and_secrets_leave_none_in_the_logs() {
    let capture = LogCapture::default();
    let _guard = tracing::subscriber::set_default(telemetry::subscriber("debug", capture.clone()));
    let app = TestApp::new(settings());

    let body = format!(r#"{{"name":"{SSN}","count":1,"password":"{PASSWORD}","ssn":"{SSN}"}}"#);
    let requests = [
        TestRequest::post()
            .uri(&format!("/test/echo?ssn={SSN}&token={TOKEN}"))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .insert_header(("Cookie", format!("__Host-clinicd-access={COOKIE}")))
            .set_payload(body.clone()),
        TestRequest::post()
            .uri("/test/echo")
            .insert_header(("Content-Type", "application/json"))
            .set_payload(format!(r#"{{"name":"x","count":"{SSN}"}}"#)),
        TestRequest::get().uri(&format!("/patients/{SSN}/password/{PASSWORD}")),
        TestRequest::get().uri(&format!("/test/items/{SSN}")),
        TestRequest::get()
            .uri("/test/private")
            .insert_header(("Authorization", format!("Bearer {TOKEN}"))),
        TestRequest::get()
            .uri("/test/boom")
            .insert_header(("X-Request-Id", "log-test-1")),
    ];
    for request in requests {
        app.call(request).await;
    }
    // Fields with sensitive names are redacted even if some code logs them by mistake.
    tracing::info!(
        password = PASSWORD,
        patient_ssn = SSN,
        access_token = TOKEN,
        "a careless event"
    );

    let logs = capture.contents();
    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("request completed"))
            .count()
            >= 6,
        "the capture must see the access log: {logs}"
    );
    assert!(
        logs.contains("log-test-1"),
        "log lines carry the request id: {logs}"
    );
    assert!(logs.contains("unexpected error"), "{logs}");
    assert!(logs.contains("[REDACTED]"), "{logs}");
    for line in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "every line is JSON: {line}"
        );
        for secret in [SSN, PASSWORD, TOKEN, COOKIE, "c2VjcmV0LXRva2Vu"] {
            assert!(
                !line.contains(secret),
                "{secret} appeared in a log line: {line}"
            );
        }
    }
}

#[actix_web::test]
async fn every_line_of_a_request_carries_its_request_id() {
    let capture = LogCapture::default();
    let _guard = tracing::subscriber::set_default(telemetry::subscriber("info", capture.clone()));
    let app = TestApp::new(settings());
    app.call(
        TestRequest::get()
            .uri("/test/boom")
            .insert_header(("X-Request-Id", "trace-me-1")),
    )
    .await;
    let logs = capture.contents();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.len() >= 2,
        "an error line and the access line: {logs}"
    );
    for line in lines {
        assert_eq!(line["span"]["request_id"], "trace-me-1", "{line}");
    }
}

#[actix_web::test]
async fn the_development_otp_sender_logs_that_a_code_was_sent_and_never_the_code() {
    use clinicd_identity::otp::{LogOtpSender, OtpMessage, OtpSender};
    let capture = LogCapture::default();
    let _guard = tracing::subscriber::set_default(telemetry::subscriber("debug", capture.clone()));
    let code = secrecy::SecretString::from("424242".to_owned());
    let user_id = uuid::Uuid::now_v7();
    LogOtpSender
        .send(&OtpMessage {
            user_id,
            to: "dr.quinn@clinic.example",
            purpose: clinicd_identity::otp::OtpPurpose::MfaCode,
            code: &code,
            expires_at: Some(chrono::Utc::now()),
        })
        .await
        .unwrap();
    let logs = capture.contents();
    assert!(logs.contains("one-time code sent"), "{logs}");
    assert!(logs.contains(&user_id.to_string()), "{logs}");
    assert!(!logs.contains("424242"), "{logs}");
    assert!(
        !logs.contains("dr.quinn@clinic.example"),
        "no address either: {logs}"
    );
}

#[test]
fn a_panic_is_logged_where_it_happened_without_its_message() {
    let capture = LogCapture::default();
    let _guard = tracing::subscriber::set_default(telemetry::subscriber("info", capture.clone()));
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(telemetry::log_panic));
    let secret = "123-45-6789";
    let caught = std::panic::catch_unwind(|| panic!("the SSN was {secret}"));
    std::panic::set_hook(previous);
    assert!(caught.is_err());
    let logs = capture.contents();
    assert!(logs.contains("\"panic\""), "{logs}");
    assert!(logs.contains("logs.rs:"), "where: {logs}");
    assert!(!logs.contains(secret), "{logs}");
}

//! Helpers shared by clinicd's tests: app state with a live or a dead database, probe routes
//! that exercise extractors through the real middleware stack, a log capture, and the
//! assertions every response must pass.
//!
//! Must not: be a dependency of anything but tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::missing_panics_doc,
    reason = "test helpers: a panic is the test's report"
)]

pub use clinicd_test_kit::{
    MASTER_KEY, dead_pool, fake_http, keyring, moto_config, moto_kms_key, moto_s3_bucket,
    openssl_aes_gcm, s3_object,
};

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use actix_web::test::{self, TestRequest};
use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use clinicd_api::extract::{Authenticated, Json};
use clinicd_api::{ApiError, ApiState, HttpSettings, Metrics};
use clinicd_audit::{AuditWriter, WriterSettings};
use clinicd_domain::read_connections::ReadConnections;
use clinicd_identity::clock::SystemClock;
use clinicd_identity::password::PasswordHasherPool;
use clinicd_identity::users::{self, DisplayName, Email, NewUser, UserId, Username};
use clinicd_identity::{Identity, IdentitySettings};
use secrecy::{SecretSlice, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgPool;
use tracing_subscriber::fmt::MakeWriter;

/// The signing key of every test app, so tests can mint tokens of their own.
pub const SIGNING_KEY: [u8; 32] = [11; 32];

pub fn identity(pool: PgPool) -> Arc<Identity> {
    identity_with(pool, |identity| identity)
}

/// Identity services with something added (an OTP sender, a challenge verifier).
pub fn identity_with(pool: PgPool, extend: impl FnOnce(Identity) -> Identity) -> Arc<Identity> {
    let key = SecretSlice::from(SIGNING_KEY.to_vec());
    let keyring = keyring(pool.clone());
    let identity = Identity::new(
        pool,
        &key,
        keyring,
        IdentitySettings::default(),
        Arc::new(SystemClock),
    )
    .unwrap();
    Arc::new(extend(identity))
}

pub fn state(settings: HttpSettings, pool: PgPool) -> ApiState {
    state_with(settings, pool.clone(), identity(pool))
}

pub fn state_with(settings: HttpSettings, pool: PgPool, identity: Arc<Identity>) -> ApiState {
    let audit = AuditWriter::start(
        pool.clone(),
        keyring(pool.clone()),
        WriterSettings::default(),
    );
    compose(pool, settings, identity, audit, file_store())
}

/// The API's state over `pool`, composed for tests as the binary composes it
/// (`crates/clinicd/src/startup.rs`), from the identity, trail and object store a test chose.
pub fn compose(
    pool: PgPool,
    settings: HttpSettings,
    identity: Arc<Identity>,
    audit: AuditWriter,
    file_store: Arc<dyn clinicd_files::ObjectStore>,
) -> ApiState {
    let keyring = identity.keyring.clone();
    let files = clinicd_files::Files::new(
        pool.clone(),
        keyring.clone(),
        file_store,
        settings.files.clone(),
    );
    let services = clinicd_api::Services {
        rbac: Arc::new(clinicd_rbac::Rbac::new(
            pool.clone(),
            keyring.clone(),
            identity.clock.clone(),
            settings.break_glass_minutes,
        )),
        patients: clinicd_domain::PatientStore::new(pool.clone(), keyring.clone()),
        appointments: clinicd_domain::AppointmentStore::new(pool.clone()),
        notes: clinicd_domain::NoteStore::new(pool.clone(), keyring.clone()),
        files: files.clone(),
        secops: clinicd_secops::SecOps::new(pool.clone(), keyring.clone(), roomy_secops()),
        lifecycle: clinicd_lifecycle::Lifecycle {
            db: pool.clone(),
            keyring: keyring.clone(),
            patients: clinicd_domain::PatientStore::new(pool.clone(), keyring),
            files,
            ledger: ledger_store(),
            policy: clinicd_lifecycle::RetentionPolicy::default(),
        },
        identity,
        audit,
    };
    let mut state = ApiState::new(pool.clone(), settings, Metrics::new().unwrap(), services);
    // As the binary does, the patient store reads through connections of its own, so every
    // API test goes through that path. One set for all the apps built from this state (a test
    // builds one per request), where the binary makes one per worker.
    state.worker_pools =
        clinicd_api::WorkerPools::one(ReadConnections::new((*pool.connect_options()).clone(), 2));
    state
}

/// Security operations whose automatic blocking is out of the way of tests that walk every
/// route many times from one address; the tests of blocking set their own thresholds.
pub fn roomy_secops() -> clinicd_secops::SecOpsSettings {
    let roomy = clinicd_secops::Threshold {
        count: 1_000_000,
        window: std::time::Duration::from_secs(60),
    };
    let mut settings = clinicd_secops::SecOpsSettings::default();
    settings.abuse.stuffing = roomy;
    settings.abuse.spraying = roomy;
    settings.abuse.enumeration = roomy;
    settings.abuse.token = roomy;
    settings.abuse.origin = roomy;
    settings.export.default = 1_000_000;
    settings
}

/// The erasure ledger's outside copy in a fresh directory of its own.
pub fn ledger_store() -> Arc<dyn clinicd_lifecycle::LedgerStore> {
    let dir = std::env::temp_dir()
        .join("clinicd-test-ledger")
        .join(uuid::Uuid::now_v7().to_string());
    Arc::new(clinicd_lifecycle::LocalLedger::new(dir))
}

/// A local object store in a fresh directory of its own (left for the OS to clean).
pub fn file_store() -> Arc<dyn clinicd_files::ObjectStore> {
    let dir = std::env::temp_dir()
        .join("clinicd-test-files")
        .join(uuid::Uuid::now_v7().to_string());
    Arc::new(clinicd_files::LocalStore::new(dir))
}

/// The API application driven in process: each call goes through the full middleware stack
/// and routing, with the probe routes mounted. State (rate-limit buckets, metrics) persists
/// across calls.
#[derive(Debug, Clone)]
pub struct TestApp {
    pub state: ApiState,
}

impl TestApp {
    /// With a database that cannot be reached.
    pub fn new(settings: HttpSettings) -> Self {
        Self::with_pool(settings, dead_pool())
    }

    pub fn with_pool(settings: HttpSettings, pool: PgPool) -> Self {
        Self {
            state: state(settings, pool),
        }
    }

    pub fn with_identity(settings: HttpSettings, pool: PgPool, identity: Arc<Identity>) -> Self {
        Self {
            state: state_with(settings, pool, identity),
        }
    }

    pub async fn call(&self, request: TestRequest) -> TestResponse {
        let service =
            test::init_service(clinicd_api::app_with(self.state.clone(), probe_routes)).await;
        let response = test::call_service(&service, request.to_request()).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = test::read_body(response).await;
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.call(TestRequest::get().uri(path)).await
    }

    /// POSTs a raw body as `application/json` to the JSON probe route.
    pub async fn post_json(&self, body: impl Into<Bytes>) -> TestResponse {
        let request = TestRequest::post()
            .uri("/test/echo")
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(body.into());
        self.call(request).await
    }
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    /// The body as JSON, or `null` when it is empty or not JSON (a 204, a stream).
    pub fn json_or_null(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts a problem+json body with this status and code, and returns the body.
    pub fn assert_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "status; body: {:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let problem = self.json();
        assert_eq!(problem["code"], code, "{problem}");
        assert_eq!(problem["status"], status, "{problem}");
        assert_eq!(
            problem["type"],
            format!("urn:clinicd:problem:{code}"),
            "{problem}"
        );
        assert!(
            problem["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{problem}"
        );
        assert!(
            problem["detail"].as_str().is_some_and(|t| !t.is_empty()),
            "{problem}"
        );
        assert_eq!(
            problem["request_id"].as_str(),
            self.header("x-request-id"),
            "problem carries the request id"
        );
        assert_security_headers(&self.headers);
        problem
    }
}

/// Development-mode settings with nothing else changed.
pub fn settings() -> HttpSettings {
    HttpSettings {
        production: false,
        ..HttpSettings::default()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "read back only through Debug in the probe route")]
struct EchoBody {
    name: String,
    count: u32,
}

/// Probe routes mounted only in tests, inside the real stack, to exercise what no production
/// route does yet: a JSON body, a typed path parameter, the authenticated extractor and an
/// unexpected error.
pub fn probe_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/test/echo", web::post().to(echo))
        .route("/test/items/{id}", web::get().to(item))
        .route("/test/private", web::get().to(private))
        .route("/test/boom", web::get().to(boom))
        .service(
            web::resource("/test/panic")
                .route(web::get().to(panics))
                .wrap(actix_web::middleware::from_fn(
                    clinicd_api::middleware::panics::catch_panic,
                )),
        );
}

/// A handler with a bug, wrapped as the route table wraps each of its resources.
async fn panics() -> HttpResponse {
    let values: Vec<u8> = Vec::new();
    let secret = "123-45-6789";
    panic!("{secret} {}", values.len());
}

async fn echo(body: Json<EchoBody>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "count": body.count }))
}

async fn item(id: web::Path<uuid::Uuid>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "id": *id }))
}

async fn private(_caller: Authenticated) -> HttpResponse {
    HttpResponse::Ok().finish()
}

async fn boom() -> Result<HttpResponse, ApiError> {
    Err(ApiError::unexpected(io::Error::other(
        "relation \"patients\" does not exist at /srv/clinicd/src/db.rs:42",
    )))
}

/// The headers every response must carry, errors included.
pub fn assert_security_headers(headers: &HeaderMap) {
    let expect = |name: &str, value: &str| {
        let got = headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(got.as_deref(), Some(value), "header {name}");
    };
    expect(
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    );
    expect("x-content-type-options", "nosniff");
    expect("x-frame-options", "DENY");
    expect("referrer-policy", "no-referrer");
    expect("cross-origin-opener-policy", "same-origin");
    expect("cross-origin-resource-policy", "same-origin");
    expect("cache-control", "no-store");
    let csp = headers
        .get("content-security-policy")
        .expect("CSP header")
        .to_str()
        .unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let permissions = headers
        .get("permissions-policy")
        .expect("Permissions-Policy")
        .to_str()
        .unwrap();
    assert!(
        permissions.contains("camera=()") && permissions.contains("geolocation=()"),
        "{permissions}"
    );
    assert!(headers.contains_key("x-request-id"), "X-Request-Id");
}

/// Captures log output in memory, for asserting what must never be logged.
#[derive(Clone, Default, Debug)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn contents(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A JSON POST from a fixed client address (the login rate limit keys on it).
pub fn post(path: &str, body: &Value) -> TestRequest {
    TestRequest::post()
        .uri(path)
        .peer_addr("192.0.2.60:4000".parse().unwrap())
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_string())
}

/// Creates an account with this password (hashed with the default parameters).
pub async fn create_user(
    pool: &PgPool,
    username: &str,
    password: &str,
    must_change_password: bool,
) -> UserId {
    let hash = PasswordHasherPool::new(Default::default(), 1)
        .unwrap()
        .hash(&SecretString::from(password.to_owned()))
        .await
        .unwrap();
    users::create(
        pool,
        NewUser {
            username: Username::parse(username).unwrap(),
            email: Email::parse(&format!("{username}@clinic.example")).unwrap(),
            display_name: DisplayName::parse("Test User").unwrap(),
            password_hash: hash,
            must_change_password,
        },
    )
    .await
    .unwrap()
}

/// A user who holds `roles`, with a confirmed second factor when any of them is privileged (as
/// the authorisation layer demands), and a live session. Returns the id and an access token.
pub async fn member(app: &TestApp, username: &str, roles: &[&str]) -> (UserId, String) {
    // As the server does at start: the branch keys exist before the first request.
    app.state.identity.keyring.bootstrap().await.unwrap();
    let pool = app.state.db.clone();
    let user = create_user(&pool, username, "correct horse battery staple", false).await;
    for role in roles {
        users::assign_role(&pool, user, role, None).await.unwrap();
    }
    if users::mfa_required(&pool, user).await.unwrap() {
        enrol_totp(app, user).await;
    }
    (user, session_token(app, user).await)
}

/// Confirms a TOTP factor for `user`.
pub async fn enrol_totp(app: &TestApp, user: UserId) {
    use secrecy::ExposeSecret;
    let mfa = &app.state.identity.mfa;
    let mut tx = app.state.db.begin().await.unwrap();
    let enrolment = mfa.begin(&mut tx, user, "test").await.unwrap();
    tx.commit().await.unwrap();
    let totp = totp_rs::Builder::new()
        .with_secret(
            totp_rs::Secret::try_from_base32(enrolment.secret_base32.expose_secret()).unwrap(),
        )
        .build()
        .unwrap();
    let code = totp.generate(u64::try_from(chrono::Utc::now().timestamp()).unwrap());
    let mut tx = app.state.db.begin().await.unwrap();
    mfa.confirm(&mut tx, user, &code.to_string()).await.unwrap();
    tx.commit().await.unwrap();
}

/// An access token of a new session of `user`, as if they had just logged in.
pub async fn session_token(app: &TestApp, user: UserId) -> String {
    app.state
        .identity
        .sessions
        .start(user, false, &Default::default())
        .await
        .unwrap()
        .access_token
}

/// `request` with a bearer token.
pub fn bearer(request: TestRequest, token: &str) -> TestRequest {
    request.insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
}

/// Test settings with rate limits high enough for tests that walk every route many times.
pub fn roomy_settings() -> HttpSettings {
    let mut settings = settings();
    let roomy = clinicd_api::rate_limit::QuotaSpec {
        count: std::num::NonZeroU32::new(1_000_000).unwrap(),
        window: std::time::Duration::from_secs(60),
    };
    settings.rate_limits.per_ip = roomy;
    settings.rate_limits.api = roomy;
    settings
}

/// A registered patient on no one's care team: (family name, given name, date of birth, SSN).
pub async fn unassigned_patient(
    app: &TestApp,
    names: (&str, &str),
    dob: &str,
    ssn: Option<&str>,
) -> uuid::Uuid {
    use clinicd_domain::types::{DateOfBirth, PatientStatus, PersonName, Sex, Ssn};
    let today = chrono::Utc::now().date_naive();
    let data = clinicd_domain::PatientData {
        family_name: PersonName::parse("family_name", names.0).unwrap(),
        given_name: PersonName::parse("given_name", names.1).unwrap(),
        date_of_birth: DateOfBirth::parse("date_of_birth", dob, today).unwrap(),
        sex: Sex::Unknown,
        ssn: ssn.map(|s| Ssn::parse("ssn", s).unwrap()),
        address: None,
        phone: None,
        email: None,
        insurance_primary: None,
        insurance_secondary: None,
        emergency_contact: None,
        status: PatientStatus::Active,
    };
    app.state.identity.keyring.bootstrap().await.unwrap();
    let prepared = app.state.patients.prepare(&data).await.unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    let patient = app.state.patients.create(&mut tx, &prepared, None).await;
    let patient = patient.unwrap();
    tx.commit().await.unwrap();
    patient.id
}

/// An API request with a bearer token and, if given, a JSON body.
pub fn send(method: &str, path: &str, token: &str, body: Option<Value>) -> TestRequest {
    let request = TestRequest::default()
        .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path);
    let request = match body {
        Some(body) => request
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(body.to_string()),
        None => request,
    };
    bearer(request, token)
}

/// An access token from a running server's login, for an account without MFA or a pending
/// password change.
pub async fn access_token(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> String {
    let login: Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["access_token"].as_str().expect("login").to_owned()
}

/// Every table's content as a digest, but the trail's own and `skip`: compare two to show
/// that a refused request changed nothing.
pub async fn table_digests(pool: &PgPool, skip: &[&str]) -> BTreeMap<String, String> {
    let tables: Vec<String> = sqlx::query_scalar!("SELECT tablename::text AS \"tablename!\" FROM pg_tables WHERE schemaname = 'public' \
         AND tablename NOT LIKE 'audit_events%' AND tablename NOT IN ('audit_heads', '_sqlx_migrations', 'abuse_signals', 'rate_buckets') \
         ORDER BY tablename")
    .fetch_all(pool)
    .await
    .unwrap();
    let mut digests = BTreeMap::new();
    for table in tables.into_iter().filter(|t| !skip.contains(&t.as_str())) {
        // Runtime query: one per table, named at run time from the catalog.
        let digest: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        digests.insert(table, digest);
    }
    digests
}

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use clinicd::{Application, Settings};
use sqlx::PgPool;

pub const SIGNING_KEY_BYTES: [u8; 48] = [7; 48];

/// A valid development configuration rooted in `dir` (which gets a master key).
pub fn dev_vars(dir: &Path) -> HashMap<String, String> {
    let key_file = dir.join("master.key");
    write_master_key(&key_file, 32, 0o600);
    HashMap::from([
        ("CLINICD_MODE".into(), "development".into()),
        (
            "DATABASE_URL".into(),
            "postgres://clinicd:db-password-s3cret@127.0.0.1:5432/clinicd".into(),
        ),
        (
            "CLINICD_TOKEN_SIGNING_KEY".into(),
            base64::engine::general_purpose::STANDARD.encode(SIGNING_KEY_BYTES),
        ),
        ("CLINICD_DATA_DIR".into(), dir.display().to_string()),
        (
            "CLINICD_MASTER_KEY_FILE".into(),
            key_file.display().to_string(),
        ),
    ])
}

/// A valid production configuration: TLS files generated under `dir`.
pub fn production_vars(dir: &Path) -> HashMap<String, String> {
    let (cert, key) = clinicd::tls::ensure_self_signed(&dir.join("tls")).unwrap();
    let mut vars = dev_vars(dir);
    vars.insert("CLINICD_MODE".into(), "production".into());
    vars.insert("CLINICD_TLS_CERT_FILE".into(), cert.display().to_string());
    vars.insert("CLINICD_TLS_KEY_FILE".into(), key.display().to_string());
    vars.insert("CLINICD_KEY_PROVIDER".into(), "local".into());
    vars
}

pub fn write_master_key(path: &Path, len: usize, mode: u32) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(&vec![0x5a; len]).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Runs the `clinicd` binary with `args` in a clean environment against the test's own
/// database (`pool`), with `extra` variables on top of a development configuration.
pub fn run_clinicd(
    pool: &sqlx::PgPool,
    dir: &Path,
    args: &[&str],
    extra: &[(&str, String)],
) -> Output {
    let base = std::env::var("DATABASE_URL").unwrap();
    let database = pool.connect_options().get_database().unwrap().to_owned();
    let mut vars = dev_vars(dir);
    vars.insert(
        "DATABASE_URL".into(),
        format!("{}/{database}", base.rsplit_once('/').unwrap().0),
    );
    vars.insert("CLINICD_MIGRATE_ON_START".into(), "false".into());
    vars.insert("CLINICD_LOG".into(), "warn".into());
    for (name, value) in extra {
        vars.insert((*name).into(), value.clone());
    }
    Command::new(env!("CARGO_BIN_EXE_clinicd"))
        .env_clear()
        .envs(vars)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

pub struct Running {
    pub app_ports: (u16, u16, Option<u16>),
    pub cert_pem: Vec<u8>,
    pub dir: tempfile::TempDir,
}

/// Starts the real server on port 0 for every listener, with a self-signed certificate, on a
/// pool of its own against the test's database, as a real instance would have: two servers on
/// the test's five-connection pool starve each other (each keeps LISTEN connections for jobs
/// and blocks), which made the two-instance tests time out on a busy machine.
pub async fn start(pool: PgPool, extra: &[(&str, &str)]) -> Running {
    install_crypto_provider();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut vars = dev_vars(dir.path());
    vars.insert("CLINICD_LISTEN_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("CLINICD_METRICS_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("CLINICD_HTTP_WORKERS".into(), "1".into());
    for (name, value) in extra {
        vars.insert((*name).into(), (*value).into());
    }
    let settings = Settings::from_vars(&vars).unwrap();
    let app = Application::build_with_pool(settings, pool).await.unwrap();
    let app_ports = (app.api_port(), app.metrics_port(), app.redirect_port());
    tokio::spawn(app.run_until_stopped());
    let cert_pem = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
    Running {
        app_ports,
        cert_pem,
        dir,
    }
}

/// The password of the users the server tests make.
pub const PASSWORD: &str = "correct horse battery staple";

/// A member of staff ("front.desk", role Staff) and their access token from the server at `base`.
pub async fn staff_token(pool: &PgPool, http: &reqwest::Client, base: &str) -> String {
    let staff = clinicd_test_support::create_user(pool, "front.desk", PASSWORD, false).await;
    clinicd_identity::users::assign_role(pool, staff, "Staff", None)
        .await
        .unwrap();
    clinicd_test_support::access_token(http, base, "front.desk", PASSWORD).await
}

pub fn client(cert_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The AWS variables that point a child clinicd at the suite's moto_server.
pub fn moto_env() -> Vec<(&'static str, String)> {
    vec![
        (
            "AWS_ENDPOINT_URL",
            std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (moto) must be set"),
        ),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
    ]
}

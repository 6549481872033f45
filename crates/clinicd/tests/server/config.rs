use std::collections::HashMap;
use std::time::Duration;

use clinicd::config::{
    ConfigError, KeyProviderSettings, Mode, Settings, StorageSettings, TlsSettings,
};
use secrecy::ExposeSecret;

use crate::support::{SIGNING_KEY_BYTES, dev_vars, production_vars, write_master_key};

fn problems(vars: &HashMap<String, String>) -> ConfigError {
    Settings::from_vars(vars).expect_err("configuration should be refused")
}

fn with(mut vars: HashMap<String, String>, changes: &[(&str, &str)]) -> HashMap<String, String> {
    for (name, value) in changes {
        vars.insert((*name).into(), (*value).into());
    }
    vars
}

fn without(mut vars: HashMap<String, String>, names: &[&str]) -> HashMap<String, String> {
    for name in names {
        vars.remove(*name);
    }
    vars
}

#[test]
fn a_development_configuration_gets_safe_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::from_vars(&dev_vars(dir.path())).unwrap();
    assert_eq!(settings.mode, Mode::Development);
    assert_eq!(settings.listen_addr.to_string(), "127.0.0.1:8443");
    assert_eq!(settings.metrics_addr.to_string(), "127.0.0.1:9464");
    assert_eq!(settings.public_https_port, 8443);
    assert!(settings.redirect_addr.is_none());
    assert!(matches!(settings.tls, TlsSettings::SelfSigned { ref dir } if dir.ends_with("tls")));
    assert_eq!(
        settings.token_signing_key.expose_secret(),
        &SIGNING_KEY_BYTES[..]
    );
    assert!(settings.database.migrate_on_start);
    assert_eq!(settings.http.json_limit, 1024 * 1024);
    assert_eq!(settings.http.rate_limits.login.count.get(), 5);
    assert_eq!(
        settings.http.rate_limits.login.window,
        Duration::from_secs(900)
    );
    assert_eq!(
        settings.http.rate_limits.upload.window,
        Duration::from_secs(3600)
    );
    assert!(matches!(settings.keys, KeyProviderSettings::Local { .. }));
    assert!(
        matches!(settings.storage, StorageSettings::Local { ref dir } if dir.ends_with("files"))
    );
}

#[test]
fn production_is_the_default_mode_and_requires_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let vars = without(dev_vars(dir.path()), &["CLINICD_MODE"]);
    let error = problems(&vars);
    assert_eq!(
        error.variables(),
        ["CLINICD_TLS_CERT_FILE", "CLINICD_KEY_PROVIDER"]
    );
    assert!(
        error.to_string().contains("required in production"),
        "{error}"
    );

    let settings = Settings::from_vars(&production_vars(dir.path())).unwrap();
    assert_eq!(settings.mode, Mode::Production);
    assert_eq!(settings.listen_addr.to_string(), "0.0.0.0:8443");
    assert!(!settings.database.migrate_on_start);
}

#[test]
fn every_problem_is_reported_at_once_each_naming_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let vars = with(
        without(
            dev_vars(dir.path()),
            &["DATABASE_URL", "CLINICD_TOKEN_SIGNING_KEY"],
        ),
        &[
            ("CLINICD_LISTEN_ADDR", "localhost"),
            ("ALLOWED_ORIGINS", "https://ok.example, not-an-origin"),
            ("CLINICD_RATE_LIMIT_LOGIN", "5 per minute"),
            ("CLINICD_JSON_BODY_LIMIT", "12"),
        ],
    );
    let error = problems(&vars);
    let mut named = error.variables();
    named.sort_unstable();
    assert_eq!(
        named,
        [
            "ALLOWED_ORIGINS",
            "CLINICD_JSON_BODY_LIMIT",
            "CLINICD_LISTEN_ADDR",
            "CLINICD_RATE_LIMIT_LOGIN",
            "CLINICD_TOKEN_SIGNING_KEY",
            "DATABASE_URL",
        ]
    );
    let text = error.to_string();
    assert!(
        text.contains("6 problem(s)") && text.contains("not-an-origin"),
        "{text}"
    );
}

#[test]
fn the_signing_key_must_be_present_base64_and_at_least_256_bits() {
    let dir = tempfile::tempdir().unwrap();
    let base = dev_vars(dir.path());
    for (value, expected) in [
        ("", "required"),
        ("   ", "required"),
        ("c2hvcnQ=", "too short: 5 bytes"),
        (
            "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MA==",
            "too short: 31 bytes",
        ),
        ("not base64 at all!", "not valid base64"),
    ] {
        let error = problems(&with(base.clone(), &[("CLINICD_TOKEN_SIGNING_KEY", value)]));
        assert_eq!(
            error.variables(),
            ["CLINICD_TOKEN_SIGNING_KEY"],
            "{value:?}"
        );
        assert!(error.to_string().contains(expected), "{value:?}: {error}");
    }
    // Exactly 32 bytes is enough.
    let ok = with(
        base,
        &[(
            "CLINICD_TOKEN_SIGNING_KEY",
            "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
        )],
    );
    assert!(Settings::from_vars(&ok).is_ok());
}

#[test]
fn origins_are_exact_and_https_only_in_production() {
    let dir = tempfile::tempdir().unwrap();
    let error = problems(&with(
        production_vars(dir.path()),
        &[("ALLOWED_ORIGINS", "http://app.example")],
    ));
    assert_eq!(error.variables(), ["ALLOWED_ORIGINS"]);
    for bad in ["*", "https://app.example/", "https://*.example"] {
        let error = problems(&with(dev_vars(dir.path()), &[("ALLOWED_ORIGINS", bad)]));
        assert_eq!(error.variables(), ["ALLOWED_ORIGINS"], "{bad}");
    }
    let settings = Settings::from_vars(&with(
        production_vars(dir.path()),
        &[(
            "ALLOWED_ORIGINS",
            "https://a.example,https://b.example:8443",
        )],
    ))
    .unwrap();
    assert!(
        settings
            .http
            .allowed_origins
            .allows("https://b.example:8443")
    );
}

#[test]
fn unreadable_or_mismatched_tls_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let vars = production_vars(dir.path());
    let error = problems(&with(
        vars.clone(),
        &[("CLINICD_TLS_CERT_FILE", "/nonexistent/cert.pem")],
    ));
    assert_eq!(error.variables(), ["CLINICD_TLS_CERT_FILE"]);
    assert!(
        error.to_string().contains("/nonexistent/cert.pem"),
        "{error}"
    );

    let not_pem = dir.path().join("garbage.pem");
    std::fs::write(&not_pem, "this is not a key").unwrap();
    let error = problems(&with(
        vars.clone(),
        &[("CLINICD_TLS_KEY_FILE", not_pem.to_str().unwrap())],
    ));
    assert_eq!(error.variables(), ["CLINICD_TLS_KEY_FILE"]);

    let (_, other_key) = clinicd::tls::ensure_self_signed(&dir.path().join("other")).unwrap();
    let error = problems(&with(
        vars.clone(),
        &[("CLINICD_TLS_KEY_FILE", other_key.to_str().unwrap())],
    ));
    assert_eq!(error.variables(), ["CLINICD_TLS_KEY_FILE"]);
    assert!(error.to_string().contains("does not match"), "{error}");

    let error = problems(&without(vars, &["CLINICD_TLS_KEY_FILE"]));
    assert_eq!(error.variables(), ["CLINICD_TLS_KEY_FILE"]);
}

#[test]
fn bad_ports_and_addresses_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [
        ("CLINICD_LISTEN_ADDR", "127.0.0.1:99999"),
        ("CLINICD_LISTEN_ADDR", "127.0.0.1"),
        ("CLINICD_METRICS_ADDR", "metrics"),
        ("CLINICD_HTTP_REDIRECT_ADDR", ":80"),
        ("CLINICD_PUBLIC_HTTPS_PORT", "70000"),
        ("CLINICD_HTTP_WORKERS", "0"),
        ("CLINICD_DB_MAX_CONNECTIONS", "0"),
        ("CLINICD_MIGRATE_ON_START", "maybe"),
        ("CLINICD_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal"),
        ("CLINICD_KEY_PROVIDER", "vault"),
        ("CLINICD_STORAGE", "ftp"),
        ("CLINICD_LOG", "info,[[["),
        ("DATABASE_URL", "mysql://db/clinicd"),
    ] {
        let error = problems(&with(dev_vars(dir.path()), &[(name, value)]));
        assert_eq!(error.variables(), [name], "{name}={value}: {error}");
    }
    // An unknown mode is named, and the rest is checked as production: fail closed.
    let error = problems(&with(dev_vars(dir.path()), &[("CLINICD_MODE", "prod")]));
    assert_eq!(
        error.variables(),
        [
            "CLINICD_MODE",
            "CLINICD_TLS_CERT_FILE",
            "CLINICD_KEY_PROVIDER"
        ]
    );
}

#[test]
fn the_master_key_file_must_be_32_bytes_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dev_vars(dir.path());
    let key = dir.path().join("master.key");
    write_master_key(&key, 32, 0o644);
    let error = problems(&vars);
    assert_eq!(error.variables(), ["CLINICD_MASTER_KEY_FILE"]);
    assert!(error.to_string().contains("chmod 600"), "{error}");

    write_master_key(&key, 16, 0o600);
    assert_eq!(problems(&vars).variables(), ["CLINICD_MASTER_KEY_FILE"]);

    std::fs::remove_file(&key).unwrap();
    assert_eq!(problems(&vars).variables(), ["CLINICD_MASTER_KEY_FILE"]);
}

#[test]
fn aws_kms_and_s3_need_their_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let vars = with(
        dev_vars(dir.path()),
        &[
            ("CLINICD_KEY_PROVIDER", "aws-kms"),
            ("CLINICD_STORAGE", "s3"),
        ],
    );
    let mut named = problems(&vars).variables();
    named.sort_unstable();
    assert_eq!(named, ["CLINICD_KMS_KEY_ID", "CLINICD_S3_BUCKET"]);
    let vars = with(
        vars,
        &[
            ("CLINICD_KMS_KEY_ID", "alias/clinicd"),
            ("CLINICD_S3_BUCKET", "phi-files"),
        ],
    );
    let settings = Settings::from_vars(&vars).unwrap();
    assert_eq!(
        settings.keys,
        KeyProviderSettings::AwsKms {
            key_id: "alias/clinicd".into()
        }
    );
}

#[test]
fn file_settings_are_checked_and_default_to_the_security_plan() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::from_vars(&dev_vars(dir.path())).unwrap();
    let files = &settings.http.files;
    assert_eq!(files.max_bytes, 50 * 1024 * 1024);
    assert_eq!(files.allowed.len(), 5);
    assert_eq!(files.idle_timeout, std::time::Duration::from_secs(60));

    let vars = with(
        dev_vars(dir.path()),
        &[
            ("CLINICD_FILE_TYPES", "pdf, exe"),
            ("CLINICD_FILE_MAX_BYTES", "0"),
            ("CLINICD_FILE_IDLE_TIMEOUT_SECS", "1"),
            ("CLINICD_FILE_RETENTION_DAYS", "-1"),
        ],
    );
    let mut named = problems(&vars).variables();
    named.sort_unstable();
    assert_eq!(
        named,
        [
            "CLINICD_FILE_IDLE_TIMEOUT_SECS",
            "CLINICD_FILE_MAX_BYTES",
            "CLINICD_FILE_RETENTION_DAYS",
            "CLINICD_FILE_TYPES"
        ]
    );

    let vars = with(
        dev_vars(dir.path()),
        &[
            ("CLINICD_FILE_TYPES", "pdf,png"),
            ("CLINICD_S3_SSE_KMS_KEY_ID", "alias/s3"),
        ],
    );
    let settings = Settings::from_vars(&vars).unwrap();
    let allowed: std::collections::HashSet<_> = ["pdf", "png"]
        .iter()
        .map(|t| t.parse::<clinicd_files::ContentType>().unwrap())
        .collect();
    assert_eq!(settings.http.files.allowed, allowed);
}

#[test]
fn secrets_never_reach_debug_output_or_error_text() {
    let dir = tempfile::tempdir().unwrap();
    let vars = dev_vars(dir.path());
    let settings = Settings::from_vars(&vars).unwrap();
    let debug = format!("{settings:?}");
    assert!(
        !debug.contains("db-password-s3cret"),
        "database password in Debug output"
    );
    assert!(
        !debug.contains(&vars["CLINICD_TOKEN_SIGNING_KEY"]),
        "signing key in Debug output"
    );
    assert!(
        !debug.contains("7, 7, 7"),
        "signing key bytes in Debug output"
    );

    let bad_url = "postgres://clinicd:db-password-s3cret@[::1/clinicd";
    let error = problems(&with(vars, &[("DATABASE_URL", bad_url)]));
    assert_eq!(error.variables(), ["DATABASE_URL"]);
    assert!(
        !error.to_string().contains("s3cret") && !format!("{error:?}").contains("s3cret"),
        "{error}"
    );
}

/// Every variable the configuration reads is documented in docs/configuration.md and shown in
/// .env.example, so the two cannot drift from the code.
#[test]
fn every_variable_is_documented_and_in_the_example() {
    let source = include_str!("../../src/config.rs");
    let docs = include_str!("../../../../docs/configuration.md");
    let example = include_str!("../../../../.env.example");
    let mut variables: Vec<&str> = source
        .split('"')
        .filter(|s| {
            (s.starts_with("CLINICD_") || *s == "DATABASE_URL" || *s == "ALLOWED_ORIGINS")
                && s.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
        .collect();
    variables.sort_unstable();
    variables.dedup();
    assert!(variables.len() >= 25, "found only {variables:?}");
    for variable in variables {
        assert!(
            docs.contains(&format!("`{variable}`")),
            "{variable} is not in docs/configuration.md"
        );
        assert!(
            example.contains(&format!("{variable}=")),
            "{variable} is not in .env.example"
        );
    }
}

#[test]
fn production_names_its_key_provider_and_reaches_a_remote_database_only_over_verified_tls() {
    let dir = tempfile::tempdir().unwrap();
    let production = production_vars(dir.path());
    let error = problems(&without(production.clone(), &["CLINICD_KEY_PROVIDER"]));
    assert_eq!(error.variables(), ["CLINICD_KEY_PROVIDER"]);
    let remote = |url: &str| with(production.clone(), &[("DATABASE_URL", url)]);
    for refused in [
        "postgres://clinicd@db.clinic.internal/clinicd",
        "postgres://clinicd@db.clinic.internal/clinicd?sslmode=require",
        "postgres://clinicd@10.0.0.5:5432/clinicd?sslmode=prefer",
    ] {
        let error = problems(&remote(refused));
        assert_eq!(error.variables(), ["DATABASE_URL"], "{refused}");
        assert!(error.to_string().contains("verify-full"), "{error}");
        assert!(
            !error.to_string().contains("db.clinic.internal"),
            "the URL is not echoed: {error}"
        );
    }
    for accepted in [
        "postgres://clinicd@db.clinic.internal/clinicd?sslmode=verify-full",
        "postgres://clinicd@db.clinic.internal/clinicd?sslmode=verify-ca",
        "postgres://clinicd@127.0.0.1/clinicd",
        "postgres://clinicd@[::1]:5432/clinicd",
        "postgres://clinicd@localhost/clinicd",
        "postgres://clinicd@localhost/clinicd?host=/run/postgresql",
    ] {
        assert!(Settings::from_vars(&remote(accepted)).is_ok(), "{accepted}");
    }
    // Development does not insist.
    let dev = with(
        dev_vars(dir.path()),
        &[(
            "DATABASE_URL",
            "postgres://clinicd@db.clinic.internal/clinicd",
        )],
    );
    assert!(Settings::from_vars(&dev).is_ok());
}

#[test]
fn an_access_token_may_not_outlive_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let vars = with(
        dev_vars(dir.path()),
        &[
            ("CLINICD_ACCESS_TOKEN_TTL_SECS", "1800"),
            ("CLINICD_SESSION_IDLE_TIMEOUT_SECS", "900"),
        ],
    );
    assert_eq!(
        problems(&vars).variables(),
        ["CLINICD_ACCESS_TOKEN_TTL_SECS"]
    );
    let equal = with(
        dev_vars(dir.path()),
        &[
            ("CLINICD_ACCESS_TOKEN_TTL_SECS", "900"),
            ("CLINICD_SESSION_IDLE_TIMEOUT_SECS", "900"),
        ],
    );
    assert!(Settings::from_vars(&equal).is_ok());
}

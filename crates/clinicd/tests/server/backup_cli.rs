//! `clinicd backup`: the check against moto (the bucket, the root key), and the backup
//! commands' parts (the whole runs in scripts/backup-drill).

use sqlx::PgPool;

use crate::support::{moto_env, run_clinicd};

fn kms_env(key_id: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("CLINICD_KEY_PROVIDER", "aws-kms".to_owned()),
        ("CLINICD_KMS_KEY_ID", key_id.to_owned()),
    ];
    env.extend(moto_env());
    env
}

fn check(pool: &PgPool, dir: &std::path::Path, env: &[(&str, String)]) -> (bool, String) {
    let output = run_clinicd(pool, dir, &["backup", "check"], env);
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_kms_key_pending_deletion_fails_the_check(pool: PgPool) {
    let (kms, key_id) = clinicd_test_support::moto_kms_key().await;
    let env = kms_env(&key_id);
    let dir = tempfile::tempdir().unwrap();

    let (passed, report) = check(&pool, dir.path(), &env);
    assert!(passed, "{report}");
    assert!(
        report.contains(&format!("ok      KMS key {key_id}: enabled")),
        "{report}"
    );
    assert!(
        report.contains(&format!("advice  KMS key {key_id}: single-Region")),
        "{report}"
    );

    kms.schedule_key_deletion()
        .key_id(&key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let (passed, report) = check(&pool, dir.path(), &env);
    assert!(!passed, "{report}");
    assert!(
        report.contains(&format!("FAIL    KMS key {key_id}: pending deletion on ")),
        "{report}"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_disabled_kms_key_fails_the_check(pool: PgPool) {
    let (kms, key_id) = clinicd_test_support::moto_kms_key().await;
    kms.disable_key().key_id(&key_id).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (passed, report) = check(&pool, dir.path(), &kms_env(&key_id));
    assert!(!passed, "{report}");
    assert!(
        report.contains(&format!("FAIL    KMS key {key_id}: Disabled")),
        "{report}"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_embedded_defaults_pass_with_advice(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let (passed, report) = check(&pool, dir.path(), &[]);
    assert!(passed, "{report}");
    assert!(
        report.contains("advice  files are on local disk"),
        "{report}"
    );
    assert!(report.contains("clinicd keys escrow-split"), "{report}");
    assert!(!report.contains("FAIL"), "{report}");
}

// ---- The backup commands' parts (the whole of them runs in scripts/backup-drill) ----

use std::collections::{BTreeMap, HashMap};

use clinicd::backup::manifest::{self, Manifest, TableDigest};
use clinicd::backup::passphrase;
use clinicd::config::{BackupEnv, BackupRepo};
use clinicd_crypto::{LocalKeyProvider, SecretKey};

fn backup_vars(dir: &std::path::Path, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let key = dir.join("master.key");
    if !key.exists() {
        std::fs::write(&key, [7u8; 32]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut vars: HashMap<String, String> = [
        ("CLINICD_MODE", "development".to_owned()),
        ("CLINICD_MASTER_KEY_FILE", key.display().to_string()),
        (
            "CLINICD_BACKUP_REPO",
            dir.join("repo").display().to_string(),
        ),
        (
            "CLINICD_BACKUP_PG_DATA",
            dir.join("pg").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (name, value) in extra {
        if value.is_empty() {
            vars.remove(*name);
        } else {
            vars.insert((*name).to_owned(), (*value).to_owned());
        }
    }
    vars
}

#[test]
fn backup_settings_have_safe_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let env = BackupEnv::from_vars(&backup_vars(dir.path(), &[])).unwrap();
    let backup = env.backup;
    assert_eq!(backup.repo, BackupRepo::Local(dir.path().join("repo")));
    assert_eq!((backup.retention_days, backup.retention_months), (35, 12));
    assert_eq!((backup.pg_port, backup.stanza.as_str()), (5432, "clinicd"));
    let text = clinicd::backup::pgbackrest::config_text(&backup);
    for line in [
        "repo1-cipher-type=aes-256-cbc",
        "repo1-retention-full-type=time",
        "repo1-retention-full=35",
        "repo2-cipher-type=aes-256-cbc",
        "repo2-retention-full-type=count",
        "repo2-retention-full=12",
        "compress-type=gz",
        "[clinicd]",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    assert!(
        !text.contains("cipher-pass"),
        "the passphrase never goes into the file"
    );
}

#[test]
fn monthly_retention_zero_means_one_repository() {
    let dir = tempfile::tempdir().unwrap();
    let vars = backup_vars(dir.path(), &[("CLINICD_BACKUP_RETENTION_MONTHS", "0")]);
    let backup = BackupEnv::from_vars(&vars).unwrap().backup;
    let text = clinicd::backup::pgbackrest::config_text(&backup);
    assert!(!text.contains("repo2"), "{text}");
}

#[test]
fn an_s3_repository_is_parsed_from_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let vars = backup_vars(
        dir.path(),
        &[
            ("CLINICD_BACKUP_REPO", "s3://clinic-backups/site-a/"),
            ("CLINICD_BACKUP_S3_REGION", "eu-west-1"),
        ],
    );
    let backup = BackupEnv::from_vars(&vars).unwrap().backup;
    let BackupRepo::S3 {
        bucket,
        prefix,
        endpoint,
        region,
        uri_style,
        ..
    } = &backup.repo
    else {
        panic!("{:?}", backup.repo)
    };
    assert_eq!(
        (
            bucket.as_str(),
            prefix.as_str(),
            endpoint.as_str(),
            region.as_str(),
            uri_style.as_str()
        ),
        (
            "clinic-backups",
            "/site-a",
            "s3.eu-west-1.amazonaws.com",
            "eu-west-1",
            "host"
        )
    );
    let text = clinicd::backup::pgbackrest::config_text(&backup);
    assert!(text.contains("repo1-path=/site-a/daily\n"), "{text}");
    assert!(text.contains("repo2-path=/site-a/monthly\n"), "{text}");
    assert!(!text.contains("storage-port"), "{text}");

    let vars = backup_vars(
        dir.path(),
        &[
            ("CLINICD_BACKUP_REPO", "s3://b"),
            ("CLINICD_BACKUP_S3_ENDPOINT", "minio.clinic.internal:9443"),
            ("CLINICD_BACKUP_S3_URI_STYLE", "path"),
        ],
    );
    let backup = BackupEnv::from_vars(&vars).unwrap().backup;
    let text = clinicd::backup::pgbackrest::config_text(&backup);
    for line in [
        "repo1-path=/daily",
        "repo1-s3-endpoint=minio.clinic.internal",
        "repo1-storage-port=9443",
        "repo1-s3-uri-style=path",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
}

#[test]
fn bad_backup_settings_are_each_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[("CLINICD_BACKUP_REPO", "")], "CLINICD_BACKUP_REPO"),
        (
            &[("CLINICD_BACKUP_REPO", "relative/dir")],
            "CLINICD_BACKUP_REPO",
        ),
        (
            &[("CLINICD_BACKUP_REPO", "s3:///no-bucket")],
            "CLINICD_BACKUP_REPO",
        ),
        (&[("CLINICD_BACKUP_PG_DATA", "")], "CLINICD_BACKUP_PG_DATA"),
        (
            &[("CLINICD_BACKUP_STANZA", "a b;rm")],
            "CLINICD_BACKUP_STANZA",
        ),
        (
            &[("CLINICD_BACKUP_RETENTION_DAYS", "0")],
            "CLINICD_BACKUP_RETENTION_DAYS",
        ),
        (
            &[("CLINICD_BACKUP_PG_PORT", "99999")],
            "CLINICD_BACKUP_PG_PORT",
        ),
    ];
    for (extra, variable) in cases {
        let error = BackupEnv::from_vars(&backup_vars(dir.path(), extra)).unwrap_err();
        assert!(
            error.variables().contains(&variable),
            "{extra:?}: expected a problem with {variable}, got {error}"
        );
    }
}

fn provider(byte: u8) -> LocalKeyProvider {
    LocalKeyProvider::new(SecretKey::from_bytes(&[byte; 32]).unwrap())
}

#[tokio::test]
async fn the_passphrase_is_kept_wrapped_and_opens_only_with_its_root_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passphrase.json");
    let made = passphrase::create(&provider(1), "clinicd", &path)
        .await
        .unwrap();
    assert_eq!(made.expose().len(), 64, "256 bits, hex");
    let stored = std::fs::read_to_string(&path).unwrap();
    assert!(!stored.contains(made.expose()), "never in clear on disk");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
    }
    let opened = passphrase::open(&provider(1), "clinicd", &path)
        .await
        .unwrap();
    assert_eq!(opened.expose(), made.expose());
    assert!(!format!("{opened:?}").contains(made.expose()));
    assert!(
        passphrase::open(&provider(2), "clinicd", &path)
            .await
            .is_err(),
        "another root key"
    );
    assert!(
        passphrase::open(&provider(1), "other", &path)
            .await
            .is_err(),
        "another stanza"
    );
    let again = passphrase::create(&provider(1), "clinicd", &path).await;
    assert!(
        again.is_err(),
        "never replaced: old backups would be orphaned"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), stored);
}

fn sample_manifest() -> Manifest {
    let mut tables = BTreeMap::new();
    tables.insert(
        "patients".to_owned(),
        TableDigest {
            rows: 3,
            digest: "a".repeat(32),
        },
    );
    Manifest {
        version: 1,
        label: "20261203-093102F".into(),
        kind: "full".into(),
        repo: 1,
        taken_at: chrono::Utc::now(),
        restore_point: "clinicd-20261203-093102F".into(),
        lsn: "0/4000000".into(),
        tables,
        checkpoint: None,
        files: BTreeMap::new(),
        mac: String::new(),
    }
}

#[tokio::test]
async fn a_manifest_altered_or_from_another_repository_fails_its_seal() {
    let dir = tempfile::tempdir().unwrap();
    let ours = passphrase::create(&provider(1), "clinicd", &dir.path().join("a"))
        .await
        .unwrap();
    let theirs = passphrase::create(&provider(1), "clinicd", &dir.path().join("b"))
        .await
        .unwrap();
    let mut sealed = sample_manifest();
    sealed.seal(&ours).unwrap();
    sealed.check(&ours).unwrap();
    assert!(sealed.check(&theirs).is_err());
    let mut altered = sealed.clone();
    altered.tables.get_mut("patients").unwrap().rows = 4;
    assert!(altered.check(&ours).is_err());

    // Through the store, as `list`, `verify` and `drill` read it.
    let store = clinicd_files::LocalStore::new(dir.path().join("manifests"));
    manifest::store(&store, &sealed).await.unwrap();
    let loaded = manifest::load(&store, &sealed.label, &ours).await.unwrap();
    assert_eq!(loaded, Some(sealed.clone()));
    assert!(
        manifest::load(&store, &sealed.label, &theirs)
            .await
            .is_err()
    );
    assert_eq!(
        manifest::load(&store, "20200101-000000F", &ours)
            .await
            .unwrap(),
        None
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_snapshot_counts_every_table_and_sees_any_change(pool: PgPool) {
    let checkpoints_dir = tempfile::tempdir().unwrap();
    let checkpoints = clinicd_audit::checkpoint::LocalCheckpoints::new(checkpoints_dir.path());
    let first = manifest::snapshot(&pool, "clinicd-test-1", &checkpoints)
        .await
        .unwrap();
    assert!(first.tables.contains_key("patients") && first.tables.contains_key("audit_heads"));
    assert!(first.lsn.contains('/'), "{}", first.lsn);
    let mut conn = pool.acquire().await.unwrap();
    let tables = manifest::tables(&mut conn).await.unwrap();
    let again = manifest::digests(&mut conn, &tables).await.unwrap();
    assert!(
        manifest::compare(&first.tables, &again).is_empty(),
        "stable when nothing changed"
    );

    sqlx::query("INSERT INTO job_runs (job, instance, started_at, finished_at, outcome) VALUES ('x', gen_random_uuid(), now(), now(), 'ok')")
        .execute(&pool)
        .await
        .unwrap();
    let added = manifest::digests(&mut conn, &tables).await.unwrap();
    assert_eq!(
        manifest::compare(&first.tables, &added),
        vec!["table job_runs: 1 rows after restore, 0 at backup".to_owned()]
    );
    sqlx::query("UPDATE job_runs SET job = 'y'")
        .execute(&pool)
        .await
        .unwrap();
    let changed = manifest::digests(&mut conn, &tables).await.unwrap();
    assert_eq!(
        manifest::compare(&added, &changed),
        vec!["table job_runs: same row count, different contents".to_owned()]
    );
}

#[test]
fn a_restore_target_is_a_past_rfc3339_time_or_latest_backup() {
    use clinicd::backup::run::parse_target;
    assert_eq!(parse_target("latest-backup").unwrap(), None);
    assert!(parse_target("2026-01-02T03:04:05Z").unwrap().is_some());
    for bad in [
        "yesterday",
        "2026-01-02",
        "2026-01-02 03:04:05",
        "2999-01-01T00:00:00Z",
        "",
    ] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_restore_goes_only_into_an_empty_directory() {
    use clinicd::backup::commands::empty_or_absent;
    let dir = tempfile::tempdir().unwrap();
    empty_or_absent(&dir.path().join("new")).unwrap();
    empty_or_absent(dir.path()).unwrap();
    std::fs::write(dir.path().join("PG_VERSION"), "15").unwrap();
    let error = empty_or_absent(dir.path()).unwrap_err();
    assert!(error.to_string().contains("not empty"), "{error}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_backup_command_before_init_fails_clearly_and_is_audited(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pg")).unwrap();
    let env = [
        (
            "CLINICD_BACKUP_REPO",
            dir.path().join("repo").display().to_string(),
        ),
        (
            "CLINICD_BACKUP_PG_DATA",
            dir.path().join("pg").display().to_string(),
        ),
    ];
    let output = run_clinicd(&pool, dir.path(), &["backup", "drill"], &env);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("clinicd backup init"), "{stderr}");
    let (outcome, command): (String, String) = sqlx::query_as(
        "SELECT outcome, metadata->>'command' FROM audit_events WHERE action = 'backup'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (outcome.as_str(), command.as_str()),
        ("error", "backup drill")
    );
    let runs: (String, String) = sqlx::query_as("SELECT command, outcome FROM backup_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, ("drill".to_owned(), "failed".to_owned()));

    let output = run_clinicd(&pool, dir.path(), &["backup", "now"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CLINICD_BACKUP_REPO") && stderr.contains("CLINICD_BACKUP_PG_DATA"),
        "{stderr}"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_metrics_show_the_last_good_backup_and_a_failed_drill(pool: PgPool) {
    let metrics = clinicd_api::metrics::Metrics::new().unwrap();
    let backup = clinicd::backup::metrics::BackupMetrics::register(&metrics).unwrap();
    backup.refresh(&pool).await.unwrap();
    let before = metrics.render().unwrap();
    assert!(
        before.contains(r#"clinicd_backup_last_success_timestamp_seconds{command="now"} 0"#),
        "never backed up reads as 0, so the staleness alert fires: {before}"
    );
    sqlx::query(
        "INSERT INTO backup_runs (command, label, started_at, finished_at, outcome) VALUES \
         ('now', 'a', '2026-12-01T02:00:00Z', '2026-12-01T02:05:00Z', 'ok'), \
         ('now', 'b', '2026-12-02T02:00:00Z', '2026-12-02T02:05:00Z', 'failed'), \
         ('drill', 'a', '2026-12-01T03:00:00Z', '2026-12-01T03:01:00Z', 'ok'), \
         ('drill', 'b', '2026-12-02T03:00:00Z', '2026-12-02T03:01:00Z', 'failed')",
    )
    .execute(&pool)
    .await
    .unwrap();
    backup.refresh(&pool).await.unwrap();
    let after = metrics.render().unwrap();
    let ok_at = chrono::DateTime::parse_from_rfc3339("2026-12-01T02:05:00Z")
        .unwrap()
        .timestamp();
    assert!(
        after.contains(&format!(
            r#"clinicd_backup_last_success_timestamp_seconds{{command="now"}} {ok_at}"#
        )),
        "{after}"
    );
    assert!(
        after.contains(r#"clinicd_backup_last_run_failed{command="now"} 1"#),
        "{after}"
    );
    assert!(
        after.contains(r#"clinicd_backup_last_run_failed{command="drill"} 1"#),
        "{after}"
    );
    assert!(
        after.contains(r#"clinicd_backup_last_run_failed{command="verify"} 0"#),
        "{after}"
    );
}

fn s3_env(bucket: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("CLINICD_STORAGE", "s3".to_owned()),
        ("CLINICD_S3_BUCKET", bucket.to_owned()),
    ];
    env.extend(moto_env());
    env
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_bucket_check_wants_versioning_and_reports_object_lock(pool: PgPool) {
    use aws_sdk_s3::types::{
        DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
        ObjectLockRule,
    };
    let (s3, locked) = clinicd_test_support::moto_s3_bucket().await;
    s3.put_object_lock_configuration()
        .bucket(&locked)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            DefaultRetention::builder()
                                .mode(ObjectLockRetentionMode::Compliance)
                                .days(30)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (passed, report) = check(&pool, dir.path(), &s3_env(&locked));
    assert!(passed, "{report}");
    for line in [
        format!("ok      bucket {locked}: versioning on (Object Lock)"),
        format!("ok      bucket {locked}: Object Lock, compliance mode, 30 days by default"),
        format!("advice  bucket {locked}: no replication"),
    ] {
        assert!(report.contains(&line), "{line} missing from\n{report}");
    }

    // A bucket with nothing: a deleted file would be gone, so the check fails.
    let plain = format!("clinicd-plain-{}", uuid::Uuid::now_v7().simple());
    s3.create_bucket().bucket(&plain).send().await.unwrap();
    let (passed, report) = check(&pool, dir.path(), &s3_env(&plain));
    assert!(!passed, "{report}");
    assert!(
        report.contains(&format!("FAIL    bucket {plain}: versioning")),
        "{report}"
    );
    assert!(
        report.contains(&format!("advice  bucket {plain}: no Object Lock")),
        "{report}"
    );
}

#[test]
fn each_kind_of_bucket_protection_has_its_finding() {
    use clinicd::backup::check::{Finding, bucket_findings};
    use clinicd_files::s3::BucketProtection;
    let versioned = BucketProtection {
        versioning: Some(true),
        object_lock: None,
        replication: true,
    };
    let found = bucket_findings("b", &versioned);
    assert!(matches!(&found[0], Finding::Ok(t) if t == "bucket b: versioning on"));
    assert!(matches!(&found[1], Finding::Advice(t) if t.contains("no Object Lock")));
    assert!(matches!(&found[2], Finding::Ok(t) if t == "bucket b: replicated"));
    let off = BucketProtection {
        versioning: Some(false),
        ..versioned.clone()
    };
    assert!(
        matches!(&bucket_findings("b", &off)[0], Finding::Fail(t) if t.contains("versioning off"))
    );
    let governance = BucketProtection {
        object_lock: Some(("GOVERNANCE".into(), Some(7))),
        ..versioned
    };
    assert!(matches!(
        &bucket_findings("b", &governance)[1],
        Finding::Advice(t) if t.contains("governance mode, 7 days")
    ));
}

#[test]
fn a_gap_in_the_wal_archive_is_named() {
    use clinicd::backup::pgbackrest::wal_gaps;
    let names = |segments: &[&str]| -> Vec<String> {
        segments
            .iter()
            .map(|s| {
                format!("15-1/0000000100000000/{s}-0123456789abcdef0123456789abcdef01234567.gz")
            })
            .chain(["15-1/0000000100000000/000000010000000000000003.00000028.backup".to_owned()])
            .collect()
    };
    let whole = names(&[
        "000000010000000000000001",
        "000000010000000000000002",
        "0000000100000000000000FF",
        "000000010000000100000000",
    ]);
    // 02 to FF is a gap; FF to the next log's 00 is not.
    let gaps = wal_gaps(&whole);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(
        gaps[0].contains("between 000000010000000000000002 and 0000000100000000000000FF"),
        "{gaps:?}"
    );
    let contiguous = names(&[
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000003",
    ]);
    assert!(wal_gaps(&contiguous).is_empty());
    // Timelines are checked apart: a promoted restore starts a new one mid-log.
    let mut timelines = contiguous.clone();
    timelines.push(
        "15-1/0000000200000000/000000020000000000000003-0123456789abcdef0123456789abcdef01234567.gz"
            .to_owned(),
    );
    assert!(wal_gaps(&timelines).is_empty());
}

//! `clinicd backup check` against moto: what protects the root key.

use sqlx::PgPool;

use crate::support::run_clinicd;

fn kms_env(key_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CLINICD_KEY_PROVIDER", "aws-kms".to_owned()),
        ("CLINICD_KMS_KEY_ID", key_id.to_owned()),
        (
            "AWS_ENDPOINT_URL",
            std::env::var("AWS_ENDPOINT_URL").unwrap(),
        ),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
    ]
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

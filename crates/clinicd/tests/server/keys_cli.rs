use sqlx::PgPool;

use crate::support::run_clinicd;

/// Runs `clinicd keys ...` against the test's own database.
fn clinicd_keys(pool: &PgPool, dir: &std::path::Path, args: &[&str]) -> String {
    clinicd_keys_with(pool, dir, args, &[])
}

fn clinicd_keys_with(
    pool: &PgPool,
    dir: &std::path::Path,
    args: &[&str],
    extra: &[(&str, String)],
) -> String {
    let output = run_clinicd(pool, dir, &[&["keys"], args].concat(), extra);
    assert!(
        output.status.success(),
        "clinicd keys {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The rows of `keys status` as (purpose, version, status, kek_version, subject_keys).
fn rows(status: &str) -> Vec<(String, u32, String, u32, i64)> {
    status
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (
                cells[0].into(),
                cells[1].parse().unwrap(),
                cells[2].into(),
                cells[3].parse().unwrap(),
                cells[4].parse().unwrap(),
            )
        })
        .collect()
}

#[sqlx::test(migrations = "../../migrations")]
async fn rotate_kek_then_status_shows_every_branch_key_under_the_new_kek(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let output = clinicd_keys(&pool, dir.path(), &["rotate-kek"]);
    assert!(
        output.contains("rewrapped 4 branch key(s) under KEK generation 2"),
        "{output}"
    );
    let status = rows(&clinicd_keys(&pool, dir.path(), &["status"]));
    assert_eq!(status.len(), 4, "{status:?}");
    assert!(
        status
            .iter()
            .all(|(_, _, state, kek, _)| state == "active" && *kek == 2),
        "{status:?}"
    );

    let output = clinicd_keys(&pool, dir.path(), &["rotate-branch", "--purpose", "field"]);
    assert!(output.contains("new field branch key v2"), "{output}");
    let status = rows(&clinicd_keys(&pool, dir.path(), &["status"]));
    let field: Vec<_> = status.iter().filter(|r| r.0 == "field").collect();
    assert_eq!(field.len(), 2);
    assert_eq!((field[0].1, field[0].2.as_str()), (1, "retired"));
    assert_eq!((field[1].1, field[1].2.as_str()), (2, "active"));
}

/// The same commands with AWS KMS (moto) as the root, configured only through the environment.
#[sqlx::test(migrations = "../../migrations")]
async fn the_key_commands_work_against_kms(pool: PgPool) {
    let (_, key_id) = clinicd_test_support::moto_kms_key().await;
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let aws = [
        ("CLINICD_KEY_PROVIDER", "aws-kms".to_owned()),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
    ];
    let mut env = aws.to_vec();
    env.push(("CLINICD_KMS_KEY_ID", key_id.clone()));

    let dir = tempfile::tempdir().unwrap();
    let output = clinicd_keys_with(&pool, dir.path(), &["rotate-kek"], &env);
    assert!(
        output.contains("rewrapped 4 branch key(s) under KEK generation 2"),
        "{output}"
    );
    let status = clinicd_keys_with(&pool, dir.path(), &["status"], &env);
    let rows = rows(&status);
    assert_eq!(rows.len(), 4, "{status}");
    assert!(rows.iter().all(|r| r.3 == 2), "{status}");
    assert!(
        status.contains(&key_id),
        "the KMS key is named as the KEK: {status}"
    );
}

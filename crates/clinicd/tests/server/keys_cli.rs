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

/// Two patients brought in through the import command (which uses the CLI's master key).
fn import_two_patients(pool: &PgPool, dir: &std::path::Path) {
    let file = dir.join("patients.csv");
    std::fs::write(
        &file,
        "source_id,given_name,family_name,date_of_birth,sex,ssn\n\
         a,Ada,Lovelace,1915-12-10,female,123-45-6789\n\
         b,Alan,Turing,1912-06-23,male,\n",
    )
    .unwrap();
    let output = run_clinicd(
        pool,
        dir,
        &["import", "patients", file.to_str().unwrap()],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn rekey_moves_every_clinical_field_to_new_subject_keys(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    import_two_patients(&pool, dir.path());
    let output = clinicd_keys(&pool, dir.path(), &["rekey", "--job", "first"]);
    assert!(output.contains("subject keys rotated: 2"), "{output}");
    // Ada has 9 encrypted fields set (names, birth date, SSN), Alan 3 (no SSN).
    assert!(
        output.contains("finished:") && output.contains("7 moved"),
        "{output}"
    );
    let retired_in_use: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM patients p JOIN subject_keys k ON k.subject_id = p.id AND k.status = 'active' \
         WHERE k.version = 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(retired_in_use, 2, "both patients have a second, active key");
    // Resuming a finished job is a no-op.
    let again = clinicd_keys(&pool, dir.path(), &["rekey", "--job", "first"]);
    assert!(again.contains("0 moved"), "{again}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn reindex_recomputes_blind_indexes_after_a_blind_index_key_rotation(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    import_two_patients(&pool, dir.path());
    clinicd_keys(
        &pool,
        dir.path(),
        &["rotate-branch", "--purpose", "blind_index"],
    );
    let output = clinicd_keys(&pool, dir.path(), &["reindex", "--job", "bidx2"]);
    assert!(output.contains("patients.ssn: finished"), "{output}");
    assert!(
        output.contains("patients.family_name: finished: 2 rows seen, 2 moved"),
        "{output}"
    );
    // Ordered by whether an SSN is set: imports run rows concurrently, so MRN order varies.
    let versions: Vec<(Option<i32>, i32, i32)> = sqlx::query_as(
        "SELECT ssn_bidx_version, date_of_birth_bidx_version, family_name_bidx_version FROM patients \
         ORDER BY ssn_bidx_version NULLS LAST",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(versions, vec![(Some(2), 2, 2), (None, 2, 2)]);

    // The name-token index (a row per word) is rebuilt too: every token under the new key, and
    // the same word gives the same token as in a patient registered after the rotation.
    assert!(
        output.contains("patient_name_tokens.token: finished: 2 rows seen, 2 moved"),
        "{output}"
    );
    let tokens: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT key_version, count(*) FROM patient_name_tokens GROUP BY key_version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(tokens, vec![(2, 4)], "ada, lovelace, alan, turing");
    let file = dir.path().join("more.csv");
    std::fs::write(
        &file,
        "source_id,given_name,family_name,date_of_birth,sex,ssn\nc,Alan,Kay,1940-05-17,male,\n",
    )
    .unwrap();
    let imported = run_clinicd(
        &pool,
        dir.path(),
        &["import", "patients", file.to_str().unwrap()],
        &[],
    );
    assert!(imported.status.success());
    let shared: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM patient_name_tokens GROUP BY token HAVING count(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        shared,
        vec![2],
        "Alan Turing's rebuilt token for alan is Alan Kay's"
    );
    let again = clinicd_keys(&pool, dir.path(), &["reindex", "--job", "bidx2"]);
    assert!(
        again.contains("patient_name_tokens.token: finished: 0 rows seen, 0 moved"),
        "{again}"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn key_changes_are_audit_events_and_the_trail_verifies_across_an_audit_key_rotation(
    pool: PgPool,
) {
    let dir = tempfile::tempdir().unwrap();
    clinicd_keys(&pool, dir.path(), &["rotate-kek"]);
    clinicd_keys(&pool, dir.path(), &["rotate-branch", "--purpose", "audit"]);
    clinicd_keys(&pool, dir.path(), &["rotate-branch", "--purpose", "field"]);
    clinicd_keys(&pool, dir.path(), &["status"]);

    let events: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT metadata->>'command', metadata->>'purpose', reason FROM audit_events \
         WHERE action = 'key_rotation' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let cli = || Some("cli".to_owned());
    assert_eq!(
        events,
        vec![
            (Some("keys rotate-kek".into()), None, cli()),
            (
                Some("keys rotate-branch".into()),
                Some("audit".into()),
                cli()
            ),
            (
                Some("keys rotate-branch".into()),
                Some("field".into()),
                cli()
            ),
        ],
        "one event per change; `status` changes nothing"
    );
    let verify = run_clinicd(&pool, dir.path(), &["audit", "verify"], &[]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// Runs `clinicd keys escrow-rebuild` as on a fresh machine: no configuration at all.
fn rebuild(dir: &std::path::Path, out: &std::path::Path, shares: &[&str]) -> std::process::Output {
    let mut args = vec![
        "keys".to_owned(),
        "escrow-rebuild".to_owned(),
        "--out".to_owned(),
        out.display().to_string(),
    ];
    args.extend(shares.iter().map(|s| dir.join(s).display().to_string()));
    std::process::Command::new(env!("CARGO_BIN_EXE_clinicd"))
        .env_clear()
        .current_dir(dir)
        .args(&args)
        .output()
        .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_master_key_splits_into_shares_that_any_three_rebuild(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let output = clinicd_keys(&pool, dir.path(), &["escrow-split", "--out", "escrow"]);
    assert!(output.contains("wrote 5 shares of local:"), "{output}");
    let escrow = dir.path().join("escrow");
    let master = std::fs::read(dir.path().join("master.key")).unwrap();
    let share1 = std::fs::read_to_string(escrow.join("share-1-of-5.txt")).unwrap();
    assert!(share1.starts_with("clinicd-share-v1:"), "{share1}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(escrow.join("share-1-of-5.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Any three rebuild the very key, on a machine with nothing configured.
    let rebuilt = escrow.join("rebuilt.key");
    let ok = rebuild(
        &escrow,
        &rebuilt,
        &["share-5-of-5.txt", "share-2-of-5.txt", "share-4-of-5.txt"],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(std::fs::read(&rebuilt).unwrap(), master);

    // Two do not, and nothing is written.
    let short = escrow.join("short.key");
    let refused = rebuild(&escrow, &short, &["share-1-of-5.txt", "share-3-of-5.txt"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("2 shares given; this key needs 3"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!short.exists());

    // A rebuilt key never replaces an existing file.
    let again = rebuild(
        &escrow,
        &rebuilt,
        &["share-1-of-5.txt", "share-2-of-5.txt", "share-3-of-5.txt"],
    );
    assert!(!again.status.success());

    // A second split into the same place is refused: two splits must not mix.
    let output = run_clinicd(
        &pool,
        dir.path(),
        &["keys", "escrow-split", "--out", "escrow"],
        &[],
    );
    assert!(!output.status.success());

    // The split is audited, naming the scheme and never a share.
    let events: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT metadata FROM audit_events WHERE action = 'key_rotation' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["command"], "keys escrow-split");
    assert_eq!(events[0]["threshold"], 3);
    assert_eq!(events[0]["shares"], 5);
    let hex = share1.trim().split(':').nth(4).unwrap();
    assert!(!events[0].to_string().contains(hex));
}

/// A KMS key never leaves KMS: there is nothing to split, and nothing is written.
#[sqlx::test(migrations = "../../migrations")]
async fn escrow_split_is_refused_with_kms_as_the_root(pool: PgPool) {
    let (_, key_id) = clinicd_test_support::moto_kms_key().await;
    let env = [
        ("CLINICD_KEY_PROVIDER", "aws-kms".to_owned()),
        ("CLINICD_KMS_KEY_ID", key_id),
        (
            "AWS_ENDPOINT_URL",
            std::env::var("AWS_ENDPOINT_URL").unwrap(),
        ),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let output = run_clinicd(
        &pool,
        dir.path(),
        &["keys", "escrow-split", "--out", "escrow"],
        &env,
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("never leaves KMS"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!dir.path().join("escrow").exists());
}

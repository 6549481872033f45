use std::sync::Arc;

use clinicd_audit::{Action, AuditWriter, NewEvent, Outcome, WriterSettings};
use clinicd_crypto::{Keyring, LocalKeyProvider, SecretKey};
use sqlx::PgPool;

use crate::support::run_clinicd;

/// A keyring with the master key the CLI reads (support::write_master_key).
async fn cli_keyring(pool: &PgPool) -> Arc<Keyring> {
    let provider = LocalKeyProvider::new(SecretKey::from_bytes(&[0x5a; 32]).unwrap());
    let keyring = Arc::new(Keyring::new(
        pool.clone(),
        Arc::new(provider),
        Default::default(),
    ));
    keyring.bootstrap().await.unwrap();
    keyring
}

async fn record_views(pool: &PgPool, keyring: &Arc<Keyring>, count: usize) {
    let writer = AuditWriter::start(pool.clone(), keyring.clone(), WriterSettings::default());
    for _ in 0..count {
        writer
            .record(NewEvent::new(Action::View, Outcome::Success))
            .await
            .unwrap();
    }
}

/// Runs `statements` with triggers off, as a superuser with the database could.
async fn behind_the_triggers(pool: &PgPool, statements: &[&'static str]) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    for sql in statements {
        sqlx::query(*sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// The report line (log lines share stdout).
fn report_of(stdout: &[u8]) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("\"events_checked\""))
        .unwrap_or_else(|| panic!("no report in {stdout}"));
    serde_json::from_str(line).unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn audit_verify_reports_an_intact_trail_and_names_the_first_altered_event(pool: PgPool) {
    let keyring = cli_keyring(&pool).await;
    record_views(&pool, &keyring, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let intact = run_clinicd(&pool, dir.path(), &["audit", "verify"], &[]);
    let report = report_of(&intact.stdout);
    assert!(intact.status.success(), "{report}");
    assert_eq!(report["events_checked"], 4);
    assert_eq!(report["first_broken_seq"], serde_json::Value::Null);

    behind_the_triggers(
        &pool,
        &["UPDATE audit_events SET action = 'export' WHERE seq = 3"],
    )
    .await;
    let broken = run_clinicd(&pool, dir.path(), &["audit", "verify"], &[]);
    assert_eq!(broken.status.code(), Some(1));
    let report = report_of(&broken.stdout);
    assert_eq!(report["first_broken_seq"], 3, "{report}");
    assert!(String::from_utf8_lossy(&broken.stderr).contains("broken at sequence 3"));
}

#[sqlx::test(migrations = "../../migrations")]
async fn audit_verify_checks_the_latest_checkpoint_in_the_data_directory(pool: PgPool) {
    use clinicd_audit::checkpoint::{LocalCheckpoints, write_checkpoint};
    let keyring = cli_keyring(&pool).await;
    record_views(&pool, &keyring, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalCheckpoints::new(dir.path().join("audit-checkpoints"));
    write_checkpoint(&pool, &keyring, &store)
        .await
        .unwrap()
        .unwrap();
    // Emptied behind the triggers: a valid (empty) chain, but the checkpoint remembers.
    behind_the_triggers(
        &pool,
        &["DELETE FROM audit_events", "DELETE FROM audit_heads"],
    )
    .await;
    let output = run_clinicd(&pool, dir.path(), &["audit", "verify"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report_of(&output.stdout)["first_broken_seq"], 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn audit_maintain_keeps_partitions_ahead_and_archives_nothing_young(pool: PgPool) {
    // A month whose partition is missing (as one past the pre-made ones would be).
    let furthest: String = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_events'::regclass AND c.relname <> 'audit_events_default' \
         ORDER BY c.relname LIMIT 1 OFFSET 5",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {furthest}")))
        .execute(&pool)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = run_clinicd(&pool, dir.path(), &["audit", "maintain"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: serde_json::Value = stdout
        .lines()
        .find(|l| l.contains("partitions_created"))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    assert_eq!(summary["partitions_created"], serde_json::json!([furthest]));
    assert_eq!(summary["archived"], serde_json::json!([]));
}

//! Partition upkeep never traps the trail: events written after upkeep lapsed land in the
//! default partition, and the next upkeep moves them into partitions of their own months,
//! with the chain intact.

use chrono::{Datelike, Months, Utc};
use clinicd_audit::retention::{ensure_partition, ensure_partitions_ahead, partition_name};
use clinicd_audit::{Action, AuditWriter, NewEvent, Outcome, WriterSettings, verify};
use sqlx::PgPool;

#[sqlx::test(migrations = "../../migrations")]
async fn rows_stranded_in_the_default_partition_are_rehomed(db: PgPool) {
    let keyring = clinicd_test_kit::keyring(db.clone());
    keyring.bootstrap().await.unwrap();
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    // The clock 30 months ahead: beyond the 25 months the first migration made.
    let later = Utc::now() + Months::new(30);
    for n in 0..3 {
        let mut event = NewEvent::new(Action::View, Outcome::Success);
        event.occurred_at = later;
        event.resource_id = Some(format!("r-{n}"));
        writer.record(event).await.unwrap();
    }
    writer
        .record(NewEvent::new(Action::View, Outcome::Success))
        .await
        .unwrap();
    let stranded: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events_default")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stranded, 3);
    let month = chrono::NaiveDate::from_ymd_opt(later.year(), later.month(), 1).unwrap();
    // What used to trap the trail: that month's partition cannot be made over them.
    let mut tx = db.begin().await.unwrap();
    let direct = sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {} PARTITION OF audit_events FOR VALUES FROM ('{month}') TO ('{}')",
        partition_name(month),
        month + Months::new(1)
    )))
    .execute(&mut *tx)
    .await;
    assert!(
        direct.is_err(),
        "Postgres refuses it while the default holds its rows"
    );
    drop(tx);

    let created = ensure_partitions_ahead(&db, later, 2).await.unwrap();
    assert!(created.contains(&partition_name(month)), "{created:?}");
    let (stranded, rehomed): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM audit_events_default), (SELECT count(*) FROM {})",
        partition_name(month)
    )))
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((stranded, rehomed), (0, 3));
    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
    assert_eq!(report.events_checked, 4);
    // The default partition is back, append-only, and catches the next stray row.
    let truncate = sqlx::query("TRUNCATE audit_events_default")
        .execute(&db)
        .await;
    assert!(truncate.is_err());
    assert_eq!(
        ensure_partition(&db, month).await.unwrap(),
        None,
        "idempotent"
    );
    let mut event = NewEvent::new(Action::View, Outcome::Success);
    event.occurred_at = later + Months::new(60);
    writer.record(event).await.unwrap();
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_server_role_that_may_only_append_still_keeps_partitions(db: PgPool) {
    // The grants docs/audit.md gives the server's role, with upkeep's two functions.
    for sql in [
        "DO $$ BEGIN CREATE ROLE clinicd_app_upkeep NOLOGIN; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "GRANT SELECT, INSERT ON audit_events, audit_heads TO clinicd_app_upkeep",
        "GRANT EXECUTE ON FUNCTION audit_create_partition(date), audit_rehome_default() \
         TO clinicd_app_upkeep",
    ] {
        sqlx::query(sql).execute(&db).await.unwrap();
    }
    let later = (Utc::now() + Months::new(40)).date_naive();
    sqlx::query(
        "INSERT INTO audit_events (seq, occurred_at, action, outcome, prev_hash, hash) \
         SELECT 1, $1::date, 'view', 'success', '\\x00', '\\x00'",
    )
    .bind(later)
    .execute(&db)
    .await
    .unwrap();
    let mut conn = db.acquire().await.unwrap();
    sqlx::query("SET ROLE clinicd_app_upkeep")
        .execute(&mut *conn)
        .await
        .unwrap();
    let direct = sqlx::query(
        "CREATE TABLE audit_events_2099_01 PARTITION OF audit_events \
         FOR VALUES FROM ('2099-01-01') TO ('2099-02-01')",
    )
    .execute(&mut *conn)
    .await;
    assert!(direct.is_err(), "the role itself cannot alter the trail");
    let created: Option<String> = sqlx::query_scalar("SELECT audit_create_partition('2099-01-15')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(created.as_deref(), Some("audit_events_2099_01"));
    let again: Option<String> = sqlx::query_scalar("SELECT audit_create_partition('2099-01-01')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(again, None);
    let rehomed: Vec<String> = sqlx::query_scalar("SELECT audit_rehome_default()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE relname = 'audit_events_2099_01'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_ne!(
        owner, "clinicd_app_upkeep",
        "partitions belong to the trail's owner"
    );
    // The stray row is in a partition of its own month now.
    let stranded: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events_default")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(stranded, 0);
    assert_eq!(rehomed, [format!("audit_events_{}", later.format("%Y_%m"))]);
}

use std::sync::Arc;
use std::time::Duration;

use clinicd_audit::{Action, AuditWriter, NewEvent, Outcome, WriterSettings, verify};
use clinicd_crypto::Keyring;
use sqlx::PgPool;

async fn keyring(db: &PgPool) -> Arc<Keyring> {
    let keyring = clinicd_test_kit::keyring(db.clone());
    keyring.bootstrap().await.unwrap();
    keyring
}

fn event(n: usize) -> NewEvent {
    let mut event = NewEvent::new(Action::View, Outcome::Success);
    event.route = Some("/api/patients/{id}".into());
    event.resource_type = Some("patient".into());
    event.resource_id = Some(format!("p-{n}"));
    event.metadata = serde_json::json!({ "n": n, "fields": ["name", "dob"] });
    event
}

async fn append(writer: &AuditWriter, count: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    for n in 0..count {
        seqs.push(writer.record(event(n)).await.unwrap());
    }
    seqs
}

/// Runs SQL with triggers off, as a superuser with the database could.
async fn as_superuser(db: &PgPool, sql: &'static str) {
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

#[sqlx::test(migrations = "../../migrations")]
async fn appends_are_gap_free_and_verify(db: PgPool) {
    let keyring = keyring(&db).await;
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    assert_eq!(append(&writer, 5).await, vec![1, 2, 3, 4, 5]);
    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
    assert_eq!((report.events_checked, report.last_seq), (5, 5));
    assert_eq!(report.heads_checked, 5, "one head per batch of one");
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_instances_appending_at_once_keep_one_valid_chain(db: PgPool) {
    let keyring = keyring(&db).await;
    let settings = WriterSettings {
        max_batch: 64,
        window: Duration::from_millis(2),
    };
    // Two writers stand for two clinicd instances: separate queues, one database.
    let a = AuditWriter::start(db.clone(), keyring.clone(), settings);
    let b = AuditWriter::start(db.clone(), keyring.clone(), settings);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let writer = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move { writer.record(event(i)).await.unwrap() });
    }
    let mut seqs = tasks.join_all().await;
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<i64>>());
    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
    assert!(
        report.heads_checked < 200,
        "concurrent events were batched: {report:?}"
    );
}

/// The writer links a batch to the head it last wrote and appends it in one round trip; when
/// something else moved the head meanwhile (a change recorded in its own transaction, another
/// instance), the database refuses the stale batch, and the writer links it again: no gap, no
/// fork, no lost event.
#[sqlx::test(migrations = "../../migrations")]
async fn a_head_moved_behind_the_writer_is_linked_to_not_forked(db: PgPool) {
    let keyring = keyring(&db).await;
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    assert_eq!(append(&writer, 3).await, vec![1, 2, 3]);
    for round in 0..3 {
        let moved = event(100 + round);
        let mut tx = db.begin().await.unwrap();
        let seq = clinicd_audit::writer::append_in(&mut tx, &keyring, &[&moved])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(seq, 4 + 2 * i64::try_from(round).unwrap());
        assert_eq!(
            writer.record(event(200 + round)).await.unwrap(),
            seq + 1,
            "the writer's next event follows the head it did not write"
        );
    }
    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
    assert_eq!((report.events_checked, report.last_seq), (9, 9));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(events, 9, "a refused batch wrote nothing");
}

/// The append function refuses a batch that does not start right after the head it names,
/// whoever calls it: the chain cannot be forked through it.
#[sqlx::test(migrations = "../../migrations")]
async fn the_append_function_writes_nothing_against_a_stale_head(db: PgPool) {
    let keyring = keyring(&db).await;
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    append(&writer, 2).await;
    let (moved, seq): (bool, i64) = sqlx::query_as(
        "SELECT moved, head_seq FROM audit_append(1, '\\x00', ARRAY[2]::bigint[], ARRAY[now()], \
         ARRAY[NULL]::uuid[], ARRAY[NULL]::text[], ARRAY[NULL]::uuid[], ARRAY['view'], ARRAY[NULL]::text[], \
         ARRAY[NULL]::text[], ARRAY[NULL]::uuid[], ARRAY['success'], ARRAY[NULL]::text[], ARRAY[NULL]::text[], \
         ARRAY[NULL]::int[], ARRAY[NULL]::text[], ARRAY[NULL]::text[], ARRAY[NULL]::text[], ARRAY[NULL]::text[], \
         ARRAY['{}']::jsonb[], ARRAY[NULL]::bytea[], ARRAY['\\x00']::bytea[], ARRAY['\\x01']::bytea[], \
         ARRAY[]::uuid[], ARRAY[]::bigint[], ARRAY[]::timestamptz[], 1, '\\x00')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((moved, seq), (true, 2), "the head it named is not the head");
    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
    assert_eq!(report.last_seq, 2);
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_trail_refuses_update_delete_and_truncate(db: PgPool) {
    let keyring = keyring(&db).await;
    let writer = AuditWriter::start(db.clone(), keyring, WriterSettings::default());
    append(&writer, 2).await;
    for sql in [
        "UPDATE audit_events SET outcome = 'failure' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
        "TRUNCATE audit_events",
        "DELETE FROM audit_heads",
        "TRUNCATE audit_heads",
    ] {
        let error = sqlx::query(sql).execute(&db).await.unwrap_err();
        assert!(error.to_string().contains("append-only"), "{sql}: {error}");
    }
    let partition: String =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM audit_events WHERE seq = 1")
            .fetch_one(&db)
            .await
            .unwrap();
    let truncate = format!("TRUNCATE {partition}");
    let error = sqlx::query(sqlx::AssertSqlSafe(truncate))
        .execute(&db)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_row_changed_or_deleted_behind_the_triggers_is_found_at_its_sequence(db: PgPool) {
    let keyring = keyring(&db).await;
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    append(&writer, 6).await;

    as_superuser(
        &db,
        "UPDATE audit_events SET outcome = 'failure' WHERE seq = 4",
    )
    .await;
    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, Some(4), "{report:?}");

    as_superuser(
        &db,
        "UPDATE audit_events SET outcome = 'success' WHERE seq = 4",
    )
    .await;
    assert_eq!(
        verify(&db, &keyring).await.unwrap().first_broken_seq,
        None,
        "restored"
    );

    as_superuser(&db, "DELETE FROM audit_events WHERE seq = 3").await;
    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, Some(3), "{report:?}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_chain_rebuilt_without_the_key_is_detected(db: PgPool) {
    let keyring = keyring(&db).await;
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    append(&writer, 5).await;
    // Someone with the database alters event 2 and recomputes every hash after it, and the
    // heads' hashes; only the MACs they cannot compute.
    let mut rows: Vec<clinicd_audit::event::StoredEvent> =
        sqlx::query_as("SELECT * FROM audit_events ORDER BY seq")
            .fetch_all(&db)
            .await
            .unwrap();
    rows[1].reason = Some("nothing to see".into());
    for i in 1..rows.len() {
        rows[i].prev_hash = rows[i - 1].hash.clone();
        rows[i].hash = clinicd_audit::chain::link(&rows[i].prev_hash, &rows[i]);
    }
    let mut tx = db.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    for row in &rows[1..] {
        sqlx::query(
            "UPDATE audit_events SET reason = $2, prev_hash = $3, hash = $4 WHERE seq = $1",
        )
        .bind(row.seq)
        .bind(&row.reason)
        .bind(&row.prev_hash)
        .bind(&row.hash)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("UPDATE audit_heads SET hash = $2 WHERE seq = $1")
            .bind(row.seq)
            .bind(&row.hash)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, Some(2), "{report:?}");
    assert!(report.problem.unwrap().contains("not authentic"));
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_unreachable_store_is_an_error_not_a_silent_drop(db: PgPool) {
    let keyring = keyring(&db).await;
    let dead = AuditWriter::start(
        clinicd_test_kit::dead_pool(),
        keyring,
        WriterSettings::default(),
    );
    assert!(dead.record(event(1)).await.is_err());
}

#[sqlx::test(migrations = "../../migrations")]
async fn security_events_are_forwarded_once_with_their_reason(db: PgPool) {
    let keyring = keyring(&db).await;
    let user = uuid::Uuid::now_v7();
    for (kind, reason) in [
        ("login_failed", "bad_password"),
        ("account_locked", "too_many_failures"),
    ] {
        sqlx::query(
            "INSERT INTO security_events (id, occurred_at, kind, user_id, client_ip, detail) \
             VALUES ($1, now(), $2, $3, '198.51.100.7', jsonb_build_object('reason', $4::text))",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(kind)
        .bind(user)
        .bind(reason)
        .execute(&db)
        .await
        .unwrap();
    }
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    writer.record(event(1)).await.unwrap();
    // Two forwarders at once (two instances): each event lands once.
    let (a, b) = tokio::join!(
        clinicd_identity::security_events::forward(&db, &keyring),
        clinicd_identity::security_events::forward(&db, &keyring)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 2);
    assert_eq!(
        clinicd_identity::security_events::forward(&db, &keyring)
            .await
            .unwrap(),
        0
    );
    let forwarded: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT action, reason, client_ip FROM audit_events WHERE resource_type = 'security_event' ORDER BY seq",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        forwarded,
        vec![
            (
                "login_failed".into(),
                Some("bad_password".into()),
                Some("198.51.100.7".into())
            ),
            (
                "user_change".into(),
                Some("too_many_failures".into()),
                Some("198.51.100.7".into())
            ),
        ]
    );
    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(
        (report.first_broken_seq, report.last_seq),
        (None, 3),
        "{report:?}"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_servers_role_can_append_and_read_but_not_change(db: PgPool) {
    let keyring = keyring(&db).await;
    let writer = AuditWriter::start(db.clone(), keyring, WriterSettings::default());
    writer.record(event(1)).await.unwrap();
    // The grants docs/audit.md gives the server's role, on a role of our own.
    for sql in [
        // Roles are cluster-wide: tolerate one left by an earlier run.
        "DO $$ BEGIN CREATE ROLE clinicd_app_probe NOLOGIN; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "GRANT SELECT, INSERT ON audit_events, audit_heads TO clinicd_app_probe",
    ] {
        sqlx::query(sql).execute(&db).await.unwrap();
    }
    let mut conn = db.acquire().await.unwrap();
    sqlx::query("SET ROLE clinicd_app_probe")
        .execute(&mut *conn)
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(count, 1);
    for sql in [
        "UPDATE audit_events SET outcome = 'failure'",
        "DELETE FROM audit_heads",
        "TRUNCATE audit_events",
        "SET session_replication_role = replica",
    ] {
        let error = sqlx::query(sql).execute(&mut *conn).await.unwrap_err();
        assert!(
            error.to_string().contains("permission denied"),
            "{sql}: {error}"
        );
    }
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_checkpoint_catches_a_trail_cut_short_or_emptied_behind_the_triggers(db: PgPool) {
    use clinicd_audit::checkpoint::{CheckpointStore, LocalCheckpoints, write_checkpoint};
    use clinicd_audit::verify::verify_with;
    let keyring = keyring(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalCheckpoints::new(dir.path());
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    append(&writer, 5).await;
    let checkpoint = write_checkpoint(&db, &keyring, &store)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.seq, 5);
    assert!(
        write_checkpoint(&db, &keyring, &store)
            .await
            .unwrap()
            .is_none(),
        "nothing new, no new checkpoint"
    );
    assert_eq!(store.latest().await.unwrap(), Some(checkpoint.clone()));
    let intact = verify_with(&db, &keyring, Some(checkpoint.clone()))
        .await
        .unwrap();
    assert_eq!(intact.first_broken_seq, None, "{intact:?}");

    // The last two events and their heads go: what is left is a valid, shorter chain.
    as_superuser(&db, "DELETE FROM audit_events WHERE seq > 3").await;
    as_superuser(&db, "DELETE FROM audit_heads WHERE seq > 3").await;
    assert_eq!(verify(&db, &keyring).await.unwrap().first_broken_seq, None);
    let cut = verify_with(&db, &keyring, Some(checkpoint.clone()))
        .await
        .unwrap();
    assert_eq!(cut.first_broken_seq, Some(4), "{cut:?}");

    as_superuser(&db, "DELETE FROM audit_events").await;
    as_superuser(&db, "DELETE FROM audit_heads").await;
    let emptied = verify_with(&db, &keyring, Some(checkpoint.clone()))
        .await
        .unwrap();
    assert_eq!(emptied.first_broken_seq, Some(1), "{emptied:?}");

    // A checkpoint edited by hand does not verify either.
    let mut forged = checkpoint;
    forged.seq = 0;
    let report = verify_with(&db, &keyring, Some(forged)).await.unwrap();
    assert!(report.problem.unwrap().contains("not authentic"));
}

/// Makes sure the partition of `when`'s month exists; returns `when`.
async fn with_partition(
    db: &PgPool,
    when: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    use chrono::Datelike;
    let month = chrono::NaiveDate::from_ymd_opt(when.year(), when.month(), 1).unwrap();
    clinicd_audit::retention::ensure_partition(db, month)
        .await
        .unwrap();
    when
}

fn at(event: NewEvent, when: chrono::DateTime<chrono::Utc>) -> NewEvent {
    NewEvent {
        occurred_at: when,
        ..event
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn partitions_past_retention_are_archived_encrypted_and_detached(db: PgPool) {
    use chrono::{Months, Utc};
    use clinicd_audit::retention::{LocalArchives, archive_expired, read_archive};
    let keyring = keyring(&db).await;
    let now = Utc::now();
    let old = with_partition(&db, now - Months::new(12 * 8)).await;
    let three_years = with_partition(&db, now - Months::new(36)).await;
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    for n in 0..3 {
        writer.record(at(event(n), old)).await.unwrap();
    }
    writer.record(at(event(3), three_years)).await.unwrap();
    writer.record(event(4)).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    // Asking for one year keeps six: the three-year-old month stays.
    let archived = archive_expired(
        &db,
        &keyring,
        &writer,
        &LocalArchives::new(dir.path()),
        1,
        now,
    )
    .await
    .unwrap();
    assert_eq!(archived.len(), 1, "{archived:?}");
    let done = &archived[0];
    assert_eq!((done.first_seq, done.last_seq, done.rows), (1, 3, 3));

    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE seq <= 3")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(left, 0, "detached from the trail");
    let kept: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        done.partition
            .replacen("audit_events_", "audit_archived_", 1)
    )))
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(kept, 3, "detached, not dropped");

    let bytes = std::fs::read(&done.file).unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains("/api/patients/{id}"),
        "the archive is encrypted"
    );
    let (header, events) = read_archive(&keyring, &LocalArchives::new(dir.path()), &done.file)
        .await
        .unwrap();
    assert_eq!((header.first_seq, header.last_seq), (1, 3));
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(events[0].route.as_deref(), Some("/api/patients/{id}"));

    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
    assert_eq!(
        (report.events_checked, report.last_seq),
        (3, 6),
        "4, 5 and the archiving event"
    );
    let recorded: String = sqlx::query_scalar("SELECT resource_id FROM audit_events WHERE seq = 6")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(recorded, done.partition);
}

#[sqlx::test(migrations = "../../migrations")]
async fn only_the_oldest_part_of_the_chain_can_be_archived(db: PgPool) {
    use chrono::{Months, Utc};
    use clinicd_audit::retention::{LocalArchives, archive_expired};
    let keyring = keyring(&db).await;
    let now = Utc::now();
    let old = with_partition(&db, now - Months::new(12 * 8)).await;
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    writer.record(event(0)).await.unwrap();
    writer.record(at(event(1), old)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let refused = archive_expired(
        &db,
        &keyring,
        &writer,
        &LocalArchives::new(dir.path()),
        7,
        now,
    )
    .await;
    assert!(refused.unwrap_err().to_string().contains("not the oldest"));
    assert_eq!(verify(&db, &keyring).await.unwrap().first_broken_seq, None);
}

#[sqlx::test(migrations = "../../migrations")]
async fn before_and_after_values_are_stored_only_sealed(db: PgPool) {
    use clinicd_audit::values::{open_values, seal_values};
    let keyring = keyring(&db).await;
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    let before = serde_json::json!({ "phone": "+15550100", "city": "Springfield" });
    let after = serde_json::json!({ "phone": "+15550199", "city": "Springfield" });
    let mut change = NewEvent::new(Action::Update, Outcome::Success);
    seal_values(&keyring, &mut change, &before, &after)
        .await
        .unwrap();
    writer.record(change).await.unwrap();

    let row: String = sqlx::query_scalar("SELECT row_to_json(e)::text FROM audit_events e")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(
        !row.contains("+15550100") && !row.contains("+15550199"),
        "{row}"
    );
    let (metadata, sealed): (serde_json::Value, Vec<u8>) =
        sqlx::query_as("SELECT metadata, sealed_values FROM audit_events")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(metadata["changed"], serde_json::json!(["phone"]));
    let opened = open_values(&keyring, &metadata, &sealed).await.unwrap();
    assert_eq!(
        opened,
        serde_json::json!({ "before": before, "after": after })
    );
    assert_eq!(verify(&db, &keyring).await.unwrap().first_broken_seq, None);
}

#[sqlx::test(migrations = "../../migrations")]
async fn checkpoints_go_to_s3_under_object_lock(db: PgPool) {
    use clinicd_audit::checkpoint::{CheckpointStore, S3Checkpoints, write_checkpoint};
    let keyring = keyring(&db).await;
    let (client, bucket) = clinicd_test_kit::moto_s3_bucket().await;
    let store = S3Checkpoints::new(client.clone(), bucket.clone(), "audit/".into(), Some(1));
    assert_eq!(store.latest().await.unwrap(), None);
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    append(&writer, 2).await;
    let first = write_checkpoint(&db, &keyring, &store)
        .await
        .unwrap()
        .unwrap();
    append(&writer, 3).await;
    let second = write_checkpoint(&db, &keyring, &store)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.seq, second.seq), (2, 5));
    assert_eq!(
        store.latest().await.unwrap(),
        Some(second.clone()),
        "the newest one"
    );

    let key = "audit/checkpoint-00000000000000000005.json";
    // moto answers GetObjectRetention with the object; the lock shows on HEAD as on AWS.
    let head = client
        .head_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode(),
        Some(&aws_sdk_s3::types::ObjectLockMode::Compliance)
    );
    assert!(head.object_lock_retain_until_date().is_some());
    let version = head.version_id().map(str::to_owned);
    let deleted = client
        .delete_object()
        .bucket(&bucket)
        .key(key)
        .set_version_id(version)
        .send()
        .await;
    assert!(deleted.is_err(), "a locked checkpoint cannot be deleted");
    let report = clinicd_audit::verify::verify_with(&db, &keyring, Some(second))
        .await
        .unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn archives_can_go_to_s3(db: PgPool) {
    use chrono::{Months, Utc};
    use clinicd_audit::retention::{S3Archives, archive_expired, read_archive};
    let keyring = keyring(&db).await;
    let now = Utc::now();
    let old = with_partition(&db, now - Months::new(12 * 8)).await;
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    writer.record(at(event(0), old)).await.unwrap();
    let (client, bucket) = clinicd_test_kit::moto_s3_bucket().await;
    let store = S3Archives::new(client, bucket.clone(), "clinic-a/audit-archive/".into());
    let archived = archive_expired(&db, &keyring, &writer, &store, 7, now)
        .await
        .unwrap();
    assert_eq!(archived.len(), 1);
    assert!(
        archived[0]
            .file
            .starts_with(&format!("s3://{bucket}/clinic-a/audit-archive/"))
    );
    let (header, events) = read_archive(&keyring, &store, &archived[0].file)
        .await
        .unwrap();
    assert_eq!((header.rows, events.len()), (1, 1));
    assert_eq!(verify(&db, &keyring).await.unwrap().first_broken_seq, None);
}

/// Metadata is stored as jsonb and re-read for verification: a float must come back as the
/// same text, or its event fails its hash (serde_json parses floats exactly only with its
/// `float_roundtrip` feature; a drill's timings once broke the chain this way).
#[sqlx::test(migrations = "../../migrations")]
async fn events_with_float_metadata_verify(db: PgPool) {
    let keyring = keyring(&db).await;
    let writer = AuditWriter::start(db.clone(), keyring.clone(), WriterSettings::default());
    let mut floats: Vec<f64> = vec![
        2.8770265779999997,
        3.5306803110000002,
        0.1 + 0.2,
        1e-7,
        1.2345e300,
    ];
    floats.extend((1..200).map(|i| f64::from(i) * 1.000_000_1 / 7.0 + 1e-9 * f64::from(i)));
    for chunk in floats.chunks(20) {
        let mut event = NewEvent::new(Action::Backup, Outcome::Success);
        event.metadata = serde_json::json!({ "timings": chunk });
        writer.record(event).await.unwrap();
    }
    let report = verify(&db, &keyring).await.unwrap();
    assert_eq!(report.first_broken_seq, None, "{report:?}");
    assert_eq!(report.events_checked, floats.len().div_ceil(20) as i64);
}

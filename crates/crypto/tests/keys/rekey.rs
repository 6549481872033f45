use std::sync::Arc;

use clinicd_crypto::rekey::{EncryptedColumn, RekeyOptions, RekeyOutcome};
use clinicd_crypto::{FieldLocation, KeyRef, Owner, Purpose, SubjectId};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::support::{create_table, keyring, local_provider};

const SECRET: EncryptedColumn = EncryptedColumn {
    table: "secrets_under_test",
    column: "secret",
};
const OTHER: EncryptedColumn = EncryptedColumn {
    table: "secrets_under_test",
    column: "other",
};

fn at(column: &'static str, row: Uuid) -> FieldLocation<'static> {
    FieldLocation::new("secrets_under_test", column, row)
}

/// 50 subjects with 5 rows each; `other` holds a value that belongs to no patient.
async fn populate(db: &PgPool, keyring: &clinicd_crypto::Keyring) -> Vec<(Uuid, String)> {
    create_table(db).await;
    let mut rows = Vec::new();
    for _ in 0..50 {
        let subject = SubjectId(Uuid::now_v7());
        for n in 0..5 {
            let id = Uuid::now_v7();
            let value = format!("value {id} {n}");
            let secret = keyring
                .encrypt(Owner::Subject(subject), &at("secret", id), value.as_bytes())
                .await
                .unwrap();
            let other = keyring
                .encrypt(
                    Owner::Purpose(Purpose::Field),
                    &at("other", id),
                    value.as_bytes(),
                )
                .await
                .unwrap();
            sqlx::query("INSERT INTO secrets_under_test (id, subject, secret, other) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(subject.0)
                .bind(secret)
                .bind(other)
                .execute(db)
                .await
                .unwrap();
            rows.push((id, value));
        }
    }
    rows
}

/// How many values are still under a key that is not the owner's active one.
async fn under_retired_keys(db: &PgPool) -> i64 {
    let rows = sqlx::query("SELECT secret, other FROM secrets_under_test")
        .fetch_all(db)
        .await
        .unwrap();
    let mut stale = 0;
    for row in rows {
        for column in ["secret", "other"] {
            let bytes: Vec<u8> = row.get(column);
            let active: bool = match clinicd_crypto::field::parse(&bytes).unwrap().key {
                KeyRef::Subject(subject, version) => sqlx::query_scalar(
                    "SELECT status = 'active' FROM subject_keys WHERE subject_id = $1 AND version = $2",
                )
                .bind(subject.0)
                .bind(i32::try_from(version).unwrap())
                .fetch_one(db)
                .await
                .unwrap(),
                KeyRef::Purpose(purpose, version) => {
                    sqlx::query_scalar("SELECT status = 'active' FROM data_keys WHERE purpose = $1 AND version = $2")
                        .bind(purpose.as_str())
                        .bind(i32::try_from(version).unwrap())
                        .fetch_one(db)
                        .await
                        .unwrap()
                }
            };
            stale += i64::from(!active);
        }
    }
    stale
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_interrupted_rekey_resumes_and_leaves_no_value_under_a_retired_key(db: PgPool) {
    let provider = Arc::new(local_provider());
    let keyring = keyring(db.clone(), provider.clone()).await;
    let rows = populate(&db, &keyring).await;

    // The response to a suspected compromise: fresh subject keys and a fresh field branch key.
    assert_eq!(keyring.rotate_subject_keys().await.unwrap(), 50);
    keyring.rotate_branch(Purpose::Field).await.unwrap();
    assert_eq!(under_retired_keys(&db).await, 500);

    let options = RekeyOptions {
        batch_size: 40,
        max_batches: Some(3),
    };
    let paused = keyring
        .rekey("incident-1", &[SECRET, OTHER], options)
        .await
        .unwrap();
    let RekeyOutcome::Paused(report) = paused else {
        panic!("expected a paused run: {paused:?}")
    };
    assert_eq!((report.rows_seen, report.rows_moved), (120, 120));
    assert_eq!(under_retired_keys(&db).await, 380);

    // A second instance, cold caches, runs the rest.
    let other_instance = crate::support::keyring(db.clone(), provider).await;
    let finished = other_instance
        .rekey(
            "incident-1",
            &[SECRET, OTHER],
            RekeyOptions {
                batch_size: 40,
                max_batches: None,
            },
        )
        .await
        .unwrap();
    let RekeyOutcome::Finished(report) = finished else {
        panic!("expected to finish: {finished:?}")
    };
    assert_eq!(report.rows_moved, 380, "resumed, not restarted");
    assert_eq!(under_retired_keys(&db).await, 0);

    keyring.clear_caches();
    for (id, value) in rows {
        let row = sqlx::query("SELECT secret, other FROM secrets_under_test WHERE id = $1")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
        let secret: Vec<u8> = row.get("secret");
        let other: Vec<u8> = row.get("other");
        assert_eq!(
            keyring
                .decrypt(&at("secret", id), &secret)
                .await
                .unwrap()
                .as_slice(),
            value.as_bytes()
        );
        assert_eq!(
            keyring
                .decrypt(&at("other", id), &other)
                .await
                .unwrap()
                .as_slice(),
            value.as_bytes()
        );
    }
    // Rerunning a finished job does nothing.
    let again = keyring
        .rekey("incident-1", &[SECRET, OTHER], RekeyOptions::default())
        .await
        .unwrap();
    assert_eq!(again, RekeyOutcome::Finished(Default::default()));
}

#[sqlx::test(migrations = "../../migrations")]
async fn only_one_rekey_runs_at_a_time(db: PgPool) {
    let keyring = keyring(db.clone(), Arc::new(local_provider())).await;
    populate(&db, &keyring).await;
    let mut holder = db.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(0x636c_696e_7265_6b79_i64)
        .execute(&mut *holder)
        .await
        .unwrap();
    let outcome = keyring
        .rekey("incident-2", &[SECRET], RekeyOptions::default())
        .await
        .unwrap();
    assert_eq!(outcome, RekeyOutcome::AlreadyRunning);
}

#[sqlx::test(migrations = "../../migrations")]
async fn shredded_subjects_are_skipped_not_fatal(db: PgPool) {
    let keyring = keyring(db.clone(), Arc::new(local_provider())).await;
    populate(&db, &keyring).await;
    let subject: Uuid = sqlx::query_scalar("SELECT subject FROM secrets_under_test LIMIT 1")
        .fetch_one(&db)
        .await
        .unwrap();
    keyring.rotate_subject_keys().await.unwrap();
    let mut tx = db.begin().await.unwrap();
    keyring
        .destroy_subject(&mut tx, SubjectId(subject))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let outcome = keyring
        .rekey("incident-3", &[SECRET], RekeyOptions::default())
        .await
        .unwrap();
    let RekeyOutcome::Finished(report) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((report.rows_moved, report.rows_destroyed), (245, 5));
}

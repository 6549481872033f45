use std::sync::Arc;

use clinicd_crypto::blind_index::Normalizer;
use clinicd_crypto::{
    BlindIndexSpec, FieldLocation, IndexedColumn, Keyring, Owner, Purpose, RekeyOptions,
    RekeyOutcome, SubjectId,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{keyring, local_provider};

const SSN: BlindIndexSpec = BlindIndexSpec {
    table: "indexed_under_test",
    column: "ssn",
    bits: 16,
    normalizer: Normalizer::SsnDigits,
};
const SSN_INDEX: IndexedColumn = IndexedColumn {
    spec: SSN,
    index_column: "ssn_bidx",
    version_column: "ssn_bidx_version",
};

fn ssn_of(n: usize) -> String {
    format!("{:03}-45-{:04}", 100 + n, n)
}

async fn populate(db: &PgPool, keyring: &Keyring, rows: usize) {
    sqlx::query(
        "CREATE TABLE indexed_under_test (id uuid PRIMARY KEY, ssn bytea, ssn_bidx bytea, ssn_bidx_version integer)",
    )
    .execute(db)
    .await
    .unwrap();
    for n in 0..rows {
        let id = Uuid::now_v7();
        let ssn = ssn_of(n);
        let location = FieldLocation::new(SSN.table, SSN.column, id);
        let sealed = keyring
            .encrypt(
                Owner::Subject(SubjectId(Uuid::now_v7())),
                &location,
                ssn.as_bytes(),
            )
            .await
            .unwrap();
        let index = keyring.blind_index(&SSN, &ssn).await.unwrap().unwrap();
        sqlx::query("INSERT INTO indexed_under_test VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(sealed)
            .bind(index.value)
            .bind(i32::try_from(index.key_version).unwrap())
            .execute(db)
            .await
            .unwrap();
    }
}

/// A search as a repository would run it: candidates by index under every live version, then
/// decrypt and compare exactly.
async fn search(db: &PgPool, keyring: &Keyring, ssn: &str) -> Vec<Uuid> {
    let mut found = Vec::new();
    for candidate in keyring.blind_index_candidates(&SSN, ssn).await.unwrap() {
        let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT id, ssn FROM indexed_under_test WHERE ssn_bidx_version = $1 AND ssn_bidx = $2",
        )
        .bind(i32::try_from(candidate.key_version).unwrap())
        .bind(&candidate.value)
        .fetch_all(db)
        .await
        .unwrap();
        for (id, sealed) in rows {
            let plaintext = keyring
                .decrypt(&FieldLocation::new(SSN.table, SSN.column, id), &sealed)
                .await
                .unwrap();
            if plaintext.as_slice() == ssn.as_bytes() {
                found.push(id);
            }
        }
    }
    found
}

async fn versions(db: &PgPool) -> Vec<(i32, i64)> {
    sqlx::query_as(
        "SELECT ssn_bidx_version, count(*) FROM indexed_under_test GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn search_keeps_working_while_indexes_are_rebuilt_under_a_new_key(db: PgPool) {
    let keyring = keyring(db.clone(), Arc::new(local_provider())).await;
    populate(&db, &keyring, 120).await;
    let wanted = ssn_of(77);
    assert_eq!(search(&db, &keyring, &wanted).await.len(), 1);

    keyring.rotate_branch(Purpose::BlindIndex).await.unwrap();
    assert_eq!(
        search(&db, &keyring, &wanted).await.len(),
        1,
        "old-version rows are still found"
    );

    let paused = keyring
        .rebuild_blind_index(
            "bidx-1",
            SSN_INDEX,
            RekeyOptions {
                batch_size: 50,
                max_batches: Some(1),
            },
        )
        .await
        .unwrap();
    assert!(matches!(paused, RekeyOutcome::Paused(_)), "{paused:?}");
    assert_eq!(versions(&db).await, [(1, 70), (2, 50)]);
    for n in [3, 77, 119] {
        assert_eq!(
            search(&db, &keyring, &ssn_of(n)).await.len(),
            1,
            "mid-rebuild search for row {n}"
        );
    }

    let finished = keyring
        .rebuild_blind_index("bidx-1", SSN_INDEX, RekeyOptions::default())
        .await
        .unwrap();
    let RekeyOutcome::Finished(report) = finished else {
        panic!("{finished:?}")
    };
    assert_eq!(report.rows_moved, 70, "resumed after the first batch");
    assert_eq!(versions(&db).await, [(2, 120)]);
    assert_eq!(search(&db, &keyring, &wanted).await.len(), 1);
    assert!(search(&db, &keyring, "999-99-9999").await.is_empty());
}

use std::sync::Arc;

use clinicd_crypto::{FieldLocation, KeyRef, Owner, Purpose, SubjectId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{Counting, keyring, local_provider, ssn_at};

#[sqlx::test(migrations = "../../migrations")]
async fn rotate_kek_rewraps_every_branch_key_and_touches_no_data(db: PgPool) {
    let counting = Counting::new(local_provider());
    let keyring = keyring(db.clone(), counting.clone()).await;
    let row = Uuid::now_v7();
    let sealed = keyring
        .encrypt(
            Owner::Subject(SubjectId(Uuid::now_v7())),
            &ssn_at(row),
            b"before",
        )
        .await
        .unwrap();
    let subject_keys_before: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT wrapped FROM subject_keys ORDER BY subject_id")
            .fetch_all(&db)
            .await
            .unwrap();

    let rotation = keyring.rotate_kek().await.unwrap();
    assert_eq!(rotation.kek_version, 2);
    assert_eq!(rotation.rewrapped, 4);
    assert_eq!(
        counting
            .re_encrypted
            .load(std::sync::atomic::Ordering::SeqCst),
        4
    );
    for key in keyring.status().await.unwrap() {
        assert_eq!(key.kek_version, 2, "{key:?}");
    }
    let subject_keys_after: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT wrapped FROM subject_keys ORDER BY subject_id")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        subject_keys_before, subject_keys_after,
        "subject keys are not touched"
    );

    keyring.clear_caches();
    assert_eq!(
        keyring
            .decrypt(&ssn_at(row), &sealed)
            .await
            .unwrap()
            .as_slice(),
        b"before"
    );
    // New branch keys go under the new generation too.
    keyring.rotate_branch(Purpose::Audit).await.unwrap();
    let audit = keyring
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.purpose == Purpose::Audit && k.version == 2)
        .unwrap();
    assert_eq!(audit.kek_version, 2);
}

#[sqlx::test(migrations = "../../migrations")]
async fn rotate_branch_rewraps_every_subject_key_in_batches_and_no_field(db: PgPool) {
    let keyring = keyring(db.clone(), Arc::new(local_provider())).await;
    let mut sealed = Vec::new();
    for _ in 0..1100 {
        let row = Uuid::now_v7();
        let subject = SubjectId(Uuid::now_v7());
        sealed.push((
            row,
            keyring
                .encrypt(Owner::Subject(subject), &ssn_at(row), row.as_bytes())
                .await
                .unwrap(),
        ));
    }
    let purpose_row = FieldLocation::new("users", "totp_secret", Uuid::now_v7());
    let purpose_sealed = keyring
        .encrypt(Owner::Purpose(Purpose::Field), &purpose_row, b"totp")
        .await
        .unwrap();

    let rotation = keyring.rotate_branch(Purpose::Field).await.unwrap();
    assert_eq!(
        (rotation.version, rotation.rewrapped_subject_keys),
        (2, 1100)
    );

    let status = keyring.status().await.unwrap();
    let field: Vec<_> = status
        .iter()
        .filter(|k| k.purpose == Purpose::Field)
        .collect();
    assert_eq!(field.len(), 2);
    assert_eq!(
        (
            field[0].version,
            field[0].status.as_str(),
            field[0].subject_keys
        ),
        (1, "retired", 0)
    );
    assert_eq!(
        (
            field[1].version,
            field[1].status.as_str(),
            field[1].subject_keys
        ),
        (2, "active", 1100)
    );

    keyring.clear_caches();
    for (row, bytes) in &sealed {
        assert_eq!(
            keyring
                .decrypt(&ssn_at(*row), bytes)
                .await
                .unwrap()
                .as_slice(),
            row.as_bytes()
        );
    }
    // Values under the retired branch key itself still read; new ones use the new version.
    assert_eq!(
        keyring
            .decrypt(&purpose_row, &purpose_sealed)
            .await
            .unwrap()
            .as_slice(),
        b"totp"
    );
    let fresh = keyring
        .encrypt(Owner::Purpose(Purpose::Field), &purpose_row, b"totp")
        .await
        .unwrap();
    assert!(matches!(
        clinicd_crypto::field::parse(&fresh).unwrap().key,
        KeyRef::Purpose(Purpose::Field, 2)
    ));
    // A subject first seen after the rotation gets a key under the new branch key.
    keyring
        .encrypt(
            Owner::Subject(SubjectId(Uuid::now_v7())),
            &ssn_at(Uuid::now_v7()),
            b"new",
        )
        .await
        .unwrap();
    let under_old: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM subject_keys s JOIN data_keys d ON d.id = s.branch_key_id WHERE d.version = 1",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(under_old, 0);
}

#[sqlx::test(migrations = "../../migrations")]
async fn rotating_the_blind_index_key_versions_the_index(db: PgPool) {
    use clinicd_crypto::{BlindIndexSpec, Normalizer};
    const DOB: BlindIndexSpec = BlindIndexSpec {
        table: "patients",
        column: "dob",
        bits: 12,
        normalizer: Normalizer::IsoDate,
    };
    let keyring = keyring(db, Arc::new(local_provider())).await;
    let v1 = keyring
        .blind_index(&DOB, "1970-01-01")
        .await
        .unwrap()
        .unwrap();
    keyring.rotate_branch(Purpose::BlindIndex).await.unwrap();
    let v2 = keyring
        .blind_index(&DOB, "1970-01-01")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v1.key_version, v2.key_version), (1, 2));
    // The old version stays computable while indexes are rebuilt.
    assert_eq!(
        keyring
            .blind_index_at(&DOB, "1970-01-01", 1)
            .await
            .unwrap()
            .unwrap(),
        v1
    );
}

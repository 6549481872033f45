use std::sync::Arc;

use clinicd_crypto::blind_index::Normalizer;
use clinicd_crypto::keyring::branch_context;
use clinicd_crypto::{
    BlindIndexSpec, CryptoError, Encrypted, FieldLocation, KeyProvider, KeyRef, Owner,
    ProviderError, Purpose, SubjectId,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{Counting, copied_values_do_not_decrypt, keyring, local_provider, ssn_at};

#[sqlx::test(migrations = "../../migrations")]
async fn bootstrap_makes_one_active_branch_key_per_purpose_even_when_racing(db: PgPool) {
    let provider = Arc::new(local_provider());
    let a = clinicd_crypto::Keyring::new(db.clone(), provider.clone(), Default::default());
    let b = clinicd_crypto::Keyring::new(db.clone(), provider, Default::default());
    let (ra, rb) = tokio::join!(a.bootstrap(), b.bootstrap());
    ra.unwrap();
    rb.unwrap();
    let status = a.status().await.unwrap();
    assert_eq!(status.len(), 4, "{status:?}");
    for purpose in Purpose::ALL {
        let active: Vec<_> = status
            .iter()
            .filter(|s| s.purpose == purpose && s.status == "active")
            .collect();
        assert_eq!(active.len(), 1, "{purpose}");
        assert_eq!(active[0].version, 1);
        assert_eq!(active[0].kek_version, 1);
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn fields_round_trip_for_subjects_and_purposes(db: PgPool) {
    let keyring = keyring(db, Arc::new(local_provider())).await;
    let subject = SubjectId(Uuid::now_v7());
    let row = Uuid::now_v7();
    let sealed = keyring
        .encrypt(Owner::Subject(subject), &ssn_at(row), b"123-45-6789")
        .await
        .unwrap();
    assert!(
        !sealed.windows(11).any(|w| w == b"123-45-6789"),
        "no plaintext in the ciphertext"
    );
    assert!(
        matches!(clinicd_crypto::field::parse(&sealed).unwrap().key, KeyRef::Subject(s, 1) if s == subject)
    );
    assert_eq!(
        keyring
            .decrypt(&ssn_at(row), &sealed)
            .await
            .unwrap()
            .as_slice(),
        b"123-45-6789"
    );

    let totp = FieldLocation::new("users", "totp_secret", Uuid::now_v7());
    let sealed = keyring
        .encrypt(Owner::Purpose(Purpose::Field), &totp, b"JBSWY3DPEHPK3PXP")
        .await
        .unwrap();
    assert!(matches!(
        clinicd_crypto::field::parse(&sealed).unwrap().key,
        KeyRef::Purpose(Purpose::Field, 1)
    ));
    assert_eq!(
        keyring.decrypt(&totp, &sealed).await.unwrap().as_slice(),
        b"JBSWY3DPEHPK3PXP"
    );

    // Typed values.
    let dob = chrono::NaiveDate::from_ymd_opt(1984, 2, 29).unwrap();
    let typed: Encrypted<chrono::NaiveDate> = keyring
        .seal(Owner::Subject(subject), &ssn_at(row), &dob)
        .await
        .unwrap();
    assert_eq!(keyring.open(&ssn_at(row), &typed).await.unwrap(), dob);
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_ciphertext_copied_to_another_row_or_column_in_sql_does_not_decrypt(db: PgPool) {
    let keyring = keyring(db.clone(), Arc::new(local_provider())).await;
    copied_values_do_not_decrypt(&db, &keyring).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_hot_path_makes_no_provider_call_and_subject_keys_unwrap_locally(db: PgPool) {
    let counting = Counting::new(local_provider());
    let keyring = keyring(db, counting.clone()).await;
    let subjects: Vec<SubjectId> = (0..20).map(|_| SubjectId(Uuid::now_v7())).collect();
    let mut sealed = Vec::new();
    for subject in &subjects {
        let row = Uuid::now_v7();
        sealed.push((
            row,
            keyring
                .encrypt(Owner::Subject(*subject), &ssn_at(row), b"v")
                .await
                .unwrap(),
        ));
    }
    let after_first_use = counting.calls();
    for _ in 0..50 {
        for (row, bytes) in &sealed {
            keyring.decrypt(&ssn_at(*row), bytes).await.unwrap();
        }
        keyring
            .encrypt(
                Owner::Subject(subjects[0]),
                &ssn_at(Uuid::now_v7()),
                b"again",
            )
            .await
            .unwrap();
    }
    assert_eq!(
        counting.calls(),
        after_first_use,
        "cached encrypt and decrypt must not call the provider"
    );

    // With every cache cold, reading twenty patients costs one provider call: the field branch
    // key. Subject keys are unwrapped locally.
    keyring.clear_caches();
    let before = counting.decrypted.load(std::sync::atomic::Ordering::SeqCst);
    for (row, bytes) in &sealed {
        keyring.decrypt(&ssn_at(*row), bytes).await.unwrap();
    }
    assert_eq!(
        counting.decrypted.load(std::sync::atomic::Ordering::SeqCst) - before,
        1
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_instances_agree_on_a_new_subjects_key(db: PgPool) {
    let provider = Arc::new(local_provider());
    let a = keyring(db.clone(), provider.clone()).await;
    let b = keyring(db.clone(), provider).await;
    let subject = SubjectId(Uuid::now_v7());
    let (row_a, row_b) = (Uuid::now_v7(), Uuid::now_v7());
    let (loc_a, loc_b) = (ssn_at(row_a), ssn_at(row_b));
    let (sa, sb) = tokio::join!(
        a.encrypt(Owner::Subject(subject), &loc_a, b"from a"),
        b.encrypt(Owner::Subject(subject), &loc_b, b"from b")
    );
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    assert_eq!(
        b.decrypt(&ssn_at(row_a), &sa).await.unwrap().as_slice(),
        b"from a"
    );
    assert_eq!(
        a.decrypt(&ssn_at(row_b), &sb).await.unwrap().as_slice(),
        b"from b"
    );
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM subject_keys WHERE subject_id = $1")
        .bind(subject.0)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(keys, 1);
}

#[sqlx::test(migrations = "../../migrations")]
async fn destroying_a_subject_key_makes_their_values_unrecoverable(db: PgPool) {
    let keyring = keyring(db.clone(), Arc::new(local_provider())).await;
    let (gone, kept) = (SubjectId(Uuid::now_v7()), SubjectId(Uuid::now_v7()));
    let (row_gone, row_kept) = (Uuid::now_v7(), Uuid::now_v7());
    let sealed_gone = keyring
        .encrypt(Owner::Subject(gone), &ssn_at(row_gone), b"shred me")
        .await
        .unwrap();
    let sealed_kept = keyring
        .encrypt(Owner::Subject(kept), &ssn_at(row_kept), b"keep me")
        .await
        .unwrap();

    let mut tx = db.begin().await.unwrap();
    assert_eq!(keyring.destroy_subject(&mut tx, gone).await.unwrap(), 1);
    tx.commit().await.unwrap();

    assert!(matches!(
        keyring.decrypt(&ssn_at(row_gone), &sealed_gone).await,
        Err(CryptoError::KeyDestroyed)
    ));
    assert!(matches!(
        keyring
            .encrypt(Owner::Subject(gone), &ssn_at(Uuid::now_v7()), b"new")
            .await,
        Err(CryptoError::KeyDestroyed)
    ));
    // Another instance with cold caches cannot recover it either.
    keyring.clear_caches();
    assert!(matches!(
        keyring.decrypt(&ssn_at(row_gone), &sealed_gone).await,
        Err(CryptoError::KeyDestroyed)
    ));
    assert_eq!(
        keyring
            .decrypt(&ssn_at(row_kept), &sealed_kept)
            .await
            .unwrap()
            .as_slice(),
        b"keep me"
    );
    let wrapped: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT wrapped FROM subject_keys WHERE subject_id = $1")
            .bind(gone.0)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(wrapped.is_none(), "the wrapped key bytes are erased");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_tampered_or_swapped_wrapped_branch_key_is_refused(db: PgPool) {
    let provider = Arc::new(local_provider());
    let keyring = keyring(db.clone(), provider.clone()).await;
    let row = Uuid::now_v7();
    let sealed = keyring
        .encrypt(
            Owner::Subject(SubjectId(Uuid::now_v7())),
            &ssn_at(row),
            b"x",
        )
        .await
        .unwrap();

    // Swap the field branch key's wrapped bytes with the audit branch key's.
    sqlx::query(
        "UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys WHERE purpose = 'audit') WHERE purpose = 'field'",
    )
    .execute(&db)
    .await
    .unwrap();
    keyring.clear_caches();
    let error = keyring.decrypt(&ssn_at(row), &sealed).await.unwrap_err();
    assert!(
        matches!(error, CryptoError::Provider(ProviderError::Unwrap)),
        "{error:?}"
    );

    // The provider itself refuses a wrong or missing encryption context.
    let id = Uuid::now_v7();
    let generated = provider
        .generate_data_key(&branch_context(Purpose::File, id, 1), 1)
        .await
        .unwrap();
    for context in [
        branch_context(Purpose::File, id, 2),
        branch_context(Purpose::Audit, id, 1),
        Default::default(),
    ] {
        assert!(matches!(
            provider.decrypt(&generated.wrapped.bytes, &context).await,
            Err(ProviderError::Unwrap)
        ));
    }
}

const SSN: BlindIndexSpec = BlindIndexSpec {
    table: "patients",
    column: "ssn",
    bits: 16,
    normalizer: Normalizer::SsnDigits,
};
const LAST_NAME: BlindIndexSpec = BlindIndexSpec {
    table: "patients",
    column: "last_name",
    bits: 16,
    normalizer: Normalizer::NameToken,
};

#[sqlx::test(migrations = "../../migrations")]
async fn blind_indexes_are_stable_normalised_truncated_and_per_column(db: PgPool) {
    let provider = Arc::new(local_provider());
    let keyring = keyring(db.clone(), provider.clone()).await;
    let a = keyring
        .blind_index(&SSN, "123-45-6789")
        .await
        .unwrap()
        .unwrap();
    let b = keyring
        .blind_index(&SSN, "123 45 6789")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.value.len(), 2);
    assert_eq!(a.key_version, 1);
    assert!(
        keyring
            .blind_index(&SSN, "not an ssn")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        keyring.blind_index(&LAST_NAME, "Núñez").await.unwrap(),
        keyring.blind_index(&LAST_NAME, "NUNEZ").await.unwrap()
    );
    // Another instance (cold cache) computes the same index.
    let other = keyring_with(db, provider).await;
    assert_eq!(
        other.blind_index(&SSN, "123456789").await.unwrap().unwrap(),
        a
    );
}

async fn keyring_with(db: PgPool, provider: Arc<dyn KeyProvider>) -> clinicd_crypto::Keyring {
    keyring(db, provider).await
}

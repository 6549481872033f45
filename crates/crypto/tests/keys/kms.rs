//! The KMS provider through the real AWS SDK against moto_server (started by scripts/test).

use std::sync::Arc;

use clinicd_crypto::keyring::branch_context;
use clinicd_crypto::{KeyProvider, KmsKeyProvider, Owner, ProviderError, Purpose, SubjectId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{copied_values_do_not_decrypt, keyring, ssn_at};

/// A fresh KMS key in moto. Fails loudly when moto is not configured: scripts/test starts it
/// and exports AWS_ENDPOINT_URL.
async fn kms() -> KmsKeyProvider {
    let (client, key_id) = clinicd_test_kit::moto_kms_key().await;
    KmsKeyProvider::new(client, key_id)
}

#[tokio::test]
async fn kms_wraps_with_an_encryption_context_and_refuses_any_other() {
    let provider = kms().await;
    let id = Uuid::now_v7();
    let context = branch_context(Purpose::Field, id, 1);
    let generated = provider.generate_data_key(&context, 1).await.unwrap();
    assert!(generated.wrapped.kek_id.contains(':') || !generated.wrapped.kek_id.is_empty());
    let unwrapped = provider
        .decrypt(&generated.wrapped.bytes, &context)
        .await
        .unwrap();
    assert_eq!(unwrapped.expose(), generated.plaintext.expose());

    for wrong in [
        branch_context(Purpose::Field, id, 2),
        branch_context(Purpose::File, id, 1),
        Default::default(),
    ] {
        let error = provider
            .decrypt(&generated.wrapped.bytes, &wrong)
            .await
            .unwrap_err();
        assert!(matches!(error, ProviderError::Unwrap), "{error:?}");
    }
    let rewrapped = provider
        .re_encrypt(&generated.wrapped.bytes, &context, 2)
        .await
        .unwrap();
    assert_eq!(
        provider
            .decrypt(&rewrapped.bytes, &context)
            .await
            .unwrap()
            .expose(),
        generated.plaintext.expose()
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_hierarchy_round_trips_and_rotates_under_kms(db: PgPool) {
    let keyring = keyring(db, Arc::new(kms().await)).await;
    let row = Uuid::now_v7();
    let sealed = keyring
        .encrypt(
            Owner::Subject(SubjectId(Uuid::now_v7())),
            &ssn_at(row),
            b"under kms",
        )
        .await
        .unwrap();
    assert_eq!(
        keyring
            .decrypt(&ssn_at(row), &sealed)
            .await
            .unwrap()
            .as_slice(),
        b"under kms"
    );

    let rotation = keyring.rotate_kek().await.unwrap();
    assert_eq!((rotation.kek_version, rotation.rewrapped), (2, 4));
    let status = keyring.status().await.unwrap();
    assert!(status.iter().all(|k| k.kek_version == 2), "{status:?}");
    keyring.rotate_branch(Purpose::Field).await.unwrap();
    keyring.clear_caches();
    assert_eq!(
        keyring
            .decrypt(&ssn_at(row), &sealed)
            .await
            .unwrap()
            .as_slice(),
        b"under kms"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn under_kms_a_ciphertext_copied_to_another_row_does_not_decrypt(db: PgPool) {
    let keyring = keyring(db.clone(), Arc::new(kms().await)).await;
    copied_values_do_not_decrypt(&db, &keyring).await;
}

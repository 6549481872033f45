//! The S3 store against moto_server through the real SDK: multipart round trips, and nothing
//! left behind (no object, no upload in progress) by an aborted, failed or abandoned upload.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests: a panic is the report"
)]

use clinicd_files::s3::{MIN_PART_SIZE, S3Store};
use clinicd_files::store::{ObjectStore, ObjectStoreError, READ_CHUNK};

async fn store() -> (S3Store, aws_sdk_s3::Client, String) {
    let config = aws_sdk_s3::config::Builder::from(&clinicd_test_kit::moto_config().await)
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let bucket = format!("clinicd-files-{}", uuid::Uuid::now_v7().simple());
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    let store = S3Store::new(client.clone(), &bucket, "clinic-a/").with_part_size(MIN_PART_SIZE);
    (store, client, bucket)
}

async fn read_all(store: &S3Store, key: &str) -> Vec<u8> {
    let mut reader = store.open(key).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        assert!(chunk.len() <= READ_CHUNK);
        out.extend(chunk);
    }
    out
}

async fn uploads_in_progress(client: &aws_sdk_s3::Client, bucket: &str) -> usize {
    client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}

async fn object_count(client: &aws_sdk_s3::Client, bucket: &str) -> usize {
    client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap()
        .contents()
        .len()
}

#[tokio::test]
async fn large_objects_go_up_in_parts_and_come_back_whole() {
    let (store, client, bucket) = store().await;
    let data: Vec<u8> = (0..(2 * MIN_PART_SIZE + 12_345))
        .map(|i| (i % 249) as u8)
        .collect();
    let mut writer = store.create("files/big").await.unwrap();
    for chunk in data.chunks(300_000) {
        writer.write(chunk).await.unwrap();
    }
    assert_eq!(
        uploads_in_progress(&client, &bucket).await,
        1,
        "multipart, under way"
    );
    assert!(matches!(
        store.open("files/big").await,
        Err(ObjectStoreError::NotFound)
    ));
    writer.complete().await.unwrap();
    assert_eq!(uploads_in_progress(&client, &bucket).await, 0);
    assert_eq!(read_all(&store, "files/big").await, data);
    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.contents()[0].key(),
        Some("clinic-a/files/big"),
        "under the prefix"
    );

    // Small objects are one request; empty ones are objects too.
    for (key, bytes) in [
        ("files/small", b"a referral".to_vec()),
        ("files/empty", Vec::new()),
    ] {
        let mut writer = store.create(key).await.unwrap();
        writer.write(&bytes).await.unwrap();
        writer.complete().await.unwrap();
        assert_eq!(read_all(&store, key).await, bytes);
    }

    store.delete("files/small").await.unwrap();
    assert!(matches!(
        store.open("files/small").await,
        Err(ObjectStoreError::NotFound)
    ));
    assert!(matches!(
        store.delete("files/small").await,
        Err(ObjectStoreError::NotFound)
    ));
    assert!(matches!(
        store.create("../escape").await,
        Err(ObjectStoreError::InvalidKey)
    ));
}

#[tokio::test]
async fn aborted_and_abandoned_uploads_leave_nothing() {
    let (store, client, bucket) = store().await;
    let part = vec![1u8; MIN_PART_SIZE + 10];
    let mut writer = store.create("files/aborted").await.unwrap();
    writer.write(&part).await.unwrap();
    writer.abort().await.unwrap();
    assert_eq!(uploads_in_progress(&client, &bucket).await, 0);

    let mut writer = store.create("files/abandoned").await.unwrap();
    writer.write(&part).await.unwrap();
    assert_eq!(uploads_in_progress(&client, &bucket).await, 1);
    drop(writer);
    // The abort runs in the background.
    let mut waited = 0;
    while uploads_in_progress(&client, &bucket).await > 0 && waited < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(uploads_in_progress(&client, &bucket).await, 0);
    assert_eq!(object_count(&client, &bucket).await, 0);
}

#[tokio::test]
async fn a_missing_bucket_fails_cleanly() {
    let (_, client, _) = store().await;
    let store = S3Store::new(client, "no-such-bucket-here", "");
    let mut writer = store.create("files/x").await.unwrap();
    writer.write(b"x").await.unwrap();
    assert!(matches!(
        writer.complete().await,
        Err(ObjectStoreError::Remote(_))
    ));
}

/// `CLINICD_S3_SSE_KMS_KEY_ID`: S3 also encrypts at rest under the KMS key, for single-request
/// and multipart objects alike.
#[tokio::test]
async fn sse_kms_is_requested_for_every_object() {
    let (_, client, bucket) = store().await;
    let (_, key_id) = clinicd_test_kit::moto_kms_key().await;
    let store = S3Store::new(client.clone(), &bucket, "")
        .with_part_size(MIN_PART_SIZE)
        .with_sse_kms(&key_id);
    for (key, len) in [("files/small", 1000), ("files/large", MIN_PART_SIZE + 1)] {
        let mut writer = store.create(key).await.unwrap();
        writer.write(&vec![3u8; len]).await.unwrap();
        writer.complete().await.unwrap();
        let head = client
            .head_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.server_side_encryption(),
            Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms),
            "{key}"
        );
        assert!(
            head.ssekms_key_id().is_some_and(|id| id.contains(&key_id)),
            "{key}"
        );
    }
}

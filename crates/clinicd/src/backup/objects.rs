//! Small objects kept beside pgBackRest's files in the repository (manifests, the wrapped
//! passphrase): replaced whole, read whole with a size limit.

use clinicd_files::{ObjectStore, ObjectStoreError};

/// Writes `bytes` under `key`, replacing what was there (objects are otherwise immutable).
pub async fn replace(store: &dyn ObjectStore, key: &str, bytes: &[u8]) -> anyhow::Result<()> {
    match store.delete(key).await {
        Ok(()) | Err(ObjectStoreError::NotFound) => {}
        Err(error) => return Err(error.into()),
    }
    let mut writer = store.create(key).await?;
    writer.write(bytes).await?;
    writer.complete().await?;
    Ok(())
}

/// The whole object, `None` if there is none; fails past `limit` bytes.
pub async fn read(
    store: &dyn ObjectStore,
    key: &str,
    limit: usize,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut reader = match store.open(key).await {
        Ok(reader) => reader,
        Err(ObjectStoreError::NotFound) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = reader.next_chunk().await? {
        bytes.extend_from_slice(&chunk);
        anyhow::ensure!(bytes.len() <= limit, "{key} is larger than {limit} bytes");
    }
    Ok(Some(bytes))
}

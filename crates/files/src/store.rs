//! Object stores behind one trait: where the encrypted objects' bytes live. Only ciphertext
//! reaches a store (the format module makes it). Writes are streamed and become visible only
//! when complete; an aborted or abandoned write leaves nothing behind.
//!
//! The local-disk store is the embedded default; the S3 store is in [`crate::s3`].

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

/// How much a reader hands out at a time.
pub const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    #[error("an object key is lower-case letters, digits, `-`, `_` and `/`-separated segments")]
    InvalidKey,
    #[error("no such object")]
    NotFound,
    #[error("an object with this key exists")]
    Exists,
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the object store failed: {0}")]
    Remote(String),
}

/// A store of immutable objects addressed by key.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// Starts writing a new object; nothing is visible under `key` until
    /// [`ObjectWriter::complete`].
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, ObjectStoreError>;
    async fn open(&self, key: &str) -> Result<Box<dyn ObjectReader>, ObjectStoreError>;
    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError>;
}

#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ObjectStoreError>;
    /// Makes the object visible, durably.
    async fn complete(self: Box<Self>) -> Result<(), ObjectStoreError>;
    /// Discards everything written. Dropping a writer without completing it does the same.
    async fn abort(self: Box<Self>) -> Result<(), ObjectStoreError>;
}

#[async_trait]
pub trait ObjectReader: Send {
    /// The next bytes, at most [`READ_CHUNK`]; `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ObjectStoreError>;

    /// The next `max` bytes (fewer only at the end); `None` at the end. A store that can read
    /// a large block at once overrides this, saving the copies of gathering chunks.
    async fn next_block(&mut self, max: usize) -> Result<Option<Vec<u8>>, ObjectStoreError> {
        let mut block: Vec<u8> = Vec::new();
        while block.len() < max {
            match self.next_chunk().await? {
                Some(chunk) if block.is_empty() => block = chunk,
                Some(chunk) => block.extend_from_slice(&chunk),
                None => break,
            }
        }
        Ok((!block.is_empty()).then_some(block))
    }
}

/// Keys are paths we make (`files/<uuid>`), checked anyway so that no key escapes the root.
pub(crate) fn check_key(key: &str) -> Result<(), ObjectStoreError> {
    let valid = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'-'
                        || b == b'_'
                        || b == b'.'
                })
        });
    if valid {
        Ok(())
    } else {
        Err(ObjectStoreError::InvalidKey)
    }
}

/// Objects as files under a directory. A write goes to `.partial/<random>` and is renamed into
/// place (atomic on one file system) after an fsync, so a crash never leaves half an object
/// under its key.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, ObjectStoreError> {
        check_key(key)?;
        Ok(self.root.join("objects").join(key))
    }

    fn partial_dir(&self) -> PathBuf {
        self.root.join(".partial")
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, ObjectStoreError> {
        let target = self.path(key)?;
        if tokio::fs::try_exists(&target).await? {
            return Err(ObjectStoreError::Exists);
        }
        tokio::fs::create_dir_all(self.partial_dir()).await?;
        let mut name = [0u8; 16];
        aws_lc_rs::rand::fill(&mut name).map_err(|_| std::io::Error::other("random name"))?;
        let partial = self
            .partial_dir()
            .join(name.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .await?;
        Ok(Box::new(LocalWriter {
            file: Some(file),
            partial,
            target,
        }))
    }

    async fn open(&self, key: &str) -> Result<Box<dyn ObjectReader>, ObjectStoreError> {
        match tokio::fs::File::open(self.path(key)?).await {
            Ok(file) => Ok(Box::new(LocalReader {
                file: Some(file.into_std().await),
            })),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(ObjectStoreError::NotFound)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(ObjectStoreError::NotFound)
            }
            Err(error) => Err(error.into()),
        }
    }
}

struct LocalWriter {
    file: Option<tokio::fs::File>,
    partial: PathBuf,
    target: PathBuf,
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ObjectStoreError> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("writer closed"))?;
        file.write_all(bytes).await?;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<(), ObjectStoreError> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("writer closed"))?;
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        if let Some(parent) = self.target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        if tokio::fs::try_exists(&self.target).await? {
            return Err(ObjectStoreError::Exists);
        }
        tokio::fs::rename(&self.partial, &self.target).await?;
        sync_dir(self.target.parent()).await;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> Result<(), ObjectStoreError> {
        self.file.take();
        tokio::fs::remove_file(&self.partial).await?;
        Ok(())
    }
}

impl Drop for LocalWriter {
    /// An abandoned write (a client that went away, a failed upload) leaves no partial file.
    /// (After `complete` the partial file has been renamed away, so this finds nothing.)
    fn drop(&mut self) {
        self.file.take();
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// Makes a rename durable (best effort: not every file system supports it).
async fn sync_dir(dir: Option<&Path>) {
    if let Some(dir) = dir
        && let Ok(handle) = tokio::fs::File::open(dir).await
    {
        let _ = handle.sync_all().await;
    }
}

/// Reads with blocking I/O on the blocking pool, a whole block per hop, straight into the
/// buffer handed out (tokio's file would copy through a buffer of its own, hop by hop).
struct LocalReader {
    /// `None` only while a read holds it, or after a read failed.
    file: Option<std::fs::File>,
}

#[async_trait]
impl ObjectReader for LocalReader {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ObjectStoreError> {
        self.next_block(READ_CHUNK).await
    }

    async fn next_block(&mut self, max: usize) -> Result<Option<Vec<u8>>, ObjectStoreError> {
        use std::io::Read;
        let mut file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("an earlier read failed"))?;
        let (file, block) = tokio::task::spawn_blocking(move || {
            let mut block = Vec::with_capacity(max);
            let read = file
                .by_ref()
                .take(u64::try_from(max).unwrap_or(u64::MAX))
                .read_to_end(&mut block);
            (file, read.map(|_| block))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let block = block?;
        self.file = Some(file);
        Ok((!block.is_empty()).then_some(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
        let mut reader = store.open(key).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.unwrap() {
            assert!(chunk.len() <= READ_CHUNK);
            out.extend(chunk);
        }
        out
    }

    fn leftovers(root: &Path) -> usize {
        std::fs::read_dir(root.join(".partial")).map_or(0, Iterator::count)
    }

    #[tokio::test]
    async fn objects_round_trip_and_appear_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let data: Vec<u8> = (0..200_000).map(|i| (i % 253) as u8).collect();
        let mut writer = store.create("files/0192-abc").await.unwrap();
        for chunk in data.chunks(7000) {
            writer.write(chunk).await.unwrap();
        }
        assert!(
            matches!(
                store.open("files/0192-abc").await,
                Err(ObjectStoreError::NotFound)
            ),
            "not visible before it is complete"
        );
        writer.complete().await.unwrap();
        assert_eq!(read_all(&store, "files/0192-abc").await, data);
        assert_eq!(leftovers(dir.path()), 0);
        assert!(matches!(
            store.create("files/0192-abc").await,
            Err(ObjectStoreError::Exists)
        ));
        store.delete("files/0192-abc").await.unwrap();
        assert!(matches!(
            store.open("files/0192-abc").await,
            Err(ObjectStoreError::NotFound)
        ));
        assert!(matches!(
            store.delete("files/0192-abc").await,
            Err(ObjectStoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn aborted_and_abandoned_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let mut writer = store.create("files/aborted").await.unwrap();
        writer.write(b"half an upload").await.unwrap();
        writer.abort().await.unwrap();
        let mut writer = store.create("files/abandoned").await.unwrap();
        writer.write(b"a client that went away").await.unwrap();
        drop(writer);
        assert_eq!(leftovers(dir.path()), 0);
        for key in ["files/aborted", "files/abandoned"] {
            assert!(matches!(
                store.open(key).await,
                Err(ObjectStoreError::NotFound)
            ));
        }
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("store"));
        for key in [
            "",
            "../secret",
            "files/../../etc/passwd",
            "/abs",
            "Files/UPPER",
            "a//b",
            "files/x y",
            "files/.",
        ] {
            assert!(
                matches!(store.create(key).await, Err(ObjectStoreError::InvalidKey)),
                "{key:?}"
            );
            assert!(
                matches!(store.open(key).await, Err(ObjectStoreError::InvalidKey)),
                "{key:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_empty_object_is_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store
            .create("files/empty")
            .await
            .unwrap()
            .complete()
            .await
            .unwrap();
        assert!(read_all(&store, "files/empty").await.is_empty());
    }
}

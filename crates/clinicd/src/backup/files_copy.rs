//! Local-disk file storage goes into the backup set as it is: the encrypted objects are
//! copied (never opened, never decrypted) into the repository's `files` area, and each copy's
//! SHA-256 goes into the manifest. Objects are immutable, so a copy made by an earlier backup
//! is kept and not copied again; copies are never deleted by a backup, so a file purged after
//! a backup can still be restored with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aws_lc_rs::digest;
use clinicd_files::{ObjectStore, ObjectStoreError};
use tokio::io::AsyncReadExt;

use super::manifest::FileCopy;

/// Every object under a local store's root (`<root>/objects/<key>`), as keys.
pub fn local_objects(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let base = root.join("objects");
    let mut found = Vec::new();
    let mut pending = vec![base.clone()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("cannot list {}", dir.display()));
            }
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(&base) {
                let key = relative.to_string_lossy().replace('\\', "/");
                found.push((key, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Copies what `previous` lacks into `target`; returns every object's entry.
pub async fn copy(
    source_root: &Path,
    target: &dyn ObjectStore,
    previous: &BTreeMap<String, FileCopy>,
) -> anyhow::Result<BTreeMap<String, FileCopy>> {
    let mut out = BTreeMap::new();
    for (key, path) in local_objects(source_root)? {
        let size = tokio::fs::metadata(&path).await?.len();
        if let Some(copy) = previous.get(&key).filter(|c| c.size == size) {
            out.insert(key, copy.clone());
            continue;
        }
        let copy = copy_one(&path, &key, target)
            .await
            .with_context(|| format!("cannot copy stored object {key}"))?;
        out.insert(key, copy);
    }
    Ok(out)
}

async fn copy_one(path: &Path, key: &str, target: &dyn ObjectStore) -> anyhow::Result<FileCopy> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    let mut writer = match target.create(key).await {
        Ok(writer) => Some(writer),
        // Copied by an earlier run that did not finish its manifest: hash it where it is.
        Err(ObjectStoreError::Exists) => None,
        Err(error) => return Err(error.into()),
    };
    loop {
        let read = file.read(&mut buffer).await?;
        let Some(bytes) = buffer.get(..read).filter(|b| !b.is_empty()) else {
            break;
        };
        hash.update(bytes);
        size += read as u64;
        if let Some(writer) = writer.as_mut() {
            writer.write(bytes).await?;
        }
    }
    if let Some(writer) = writer {
        writer.complete().await?;
    } else {
        let existing = object_digest(target, key).await?;
        anyhow::ensure!(
            existing.size == size && existing.sha256 == hex::encode(hash.clone().finish()),
            "a different object is already in the backup under {key}"
        );
    }
    Ok(FileCopy {
        size,
        sha256: hex::encode(hash.finish()),
    })
}

/// Size and SHA-256 of a stored object, read whole.
pub async fn object_digest(store: &dyn ObjectStore, key: &str) -> anyhow::Result<FileCopy> {
    let mut reader = store.open(key).await?;
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut size = 0u64;
    while let Some(chunk) = reader.next_chunk().await? {
        hash.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok(FileCopy {
        size,
        sha256: hex::encode(hash.finish()),
    })
}

/// Every copy re-read against the manifest; one line per problem.
pub async fn verify(store: &dyn ObjectStore, files: &BTreeMap<String, FileCopy>) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, want) in files {
        match object_digest(store, key).await {
            Ok(got) if &got == want => {}
            Ok(_) => problems.push(format!("file copy {key}: differs from the manifest")),
            Err(error) => problems.push(format!("file copy {key}: {error}")),
        }
    }
    problems
}

/// Puts the backup's copies back into a store (a fresh machine's file store): each object
/// missing there is copied and checked against its digest; one already there must match it.
/// Returns (copied, already present).
pub async fn restore(
    copies: &dyn ObjectStore,
    target: &dyn ObjectStore,
    files: &BTreeMap<String, FileCopy>,
) -> anyhow::Result<(usize, usize)> {
    let (mut copied, mut present) = (0, 0);
    for (key, want) in files {
        let mut writer = match target.create(key).await {
            Ok(writer) => writer,
            Err(ObjectStoreError::Exists) => {
                let got = object_digest(target, key).await?;
                anyhow::ensure!(
                    &got == want,
                    "stored object {key} differs from the backup's copy: not replaced"
                );
                present += 1;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let mut reader = copies
            .open(key)
            .await
            .with_context(|| format!("the backup's copy of {key} is missing"))?;
        let mut hash = digest::Context::new(&digest::SHA256);
        let mut size = 0u64;
        while let Some(chunk) = reader.next_chunk().await? {
            hash.update(&chunk);
            size += chunk.len() as u64;
            writer.write(&chunk).await?;
        }
        let got = FileCopy {
            size,
            sha256: hex::encode(hash.finish()),
        };
        if &got != want {
            writer.abort().await?;
            anyhow::bail!("the backup's copy of {key} differs from its manifest: not restored");
        }
        writer.complete().await?;
        copied += 1;
    }
    Ok((copied, present))
}

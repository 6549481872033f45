//! The repository passphrase: 256 random bits from the key provider (a data key, as for any
//! other purpose), kept only wrapped under the root key. A stolen repository copy, or this
//! file beside it, opens nothing without the root key (KMS, or the escrowed master key).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clinicd_crypto::{EncryptionContext, KeyProvider};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The passphrase in clear, only in memory, wiped on drop; never printed.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(redacted)")
    }
}

/// The file's form: the wrapped key and which root key wrapped it.
#[derive(Debug, Serialize, Deserialize)]
struct WrappedFile {
    version: u32,
    stanza: String,
    kek_id: String,
    wrapped: String,
}

fn context(stanza: &str) -> EncryptionContext {
    EncryptionContext::new([
        ("purpose", "backup-repository".to_owned()),
        ("stanza", stanza.to_owned()),
    ])
}

/// Makes a new passphrase and writes it wrapped to `path` (a new file, owner-only). Refuses
/// an existing file: replacing it would orphan every backup made under the old one.
pub async fn create(
    provider: &dyn KeyProvider,
    stanza: &str,
    path: &Path,
) -> anyhow::Result<Passphrase> {
    let generated = provider
        .generate_data_key(&context(stanza), 1)
        .await
        .context("the key provider could not make the repository passphrase")?;
    let file = WrappedFile {
        version: 1,
        stanza: stanza.to_owned(),
        kek_id: generated.wrapped.kek_id.clone(),
        wrapped: hex::encode(&generated.wrapped.bytes),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = owner_only_new(path).with_context(|| {
        format!(
            "cannot create {} (a repository passphrase exists already?)",
            path.display()
        )
    })?;
    out.write_all(serde_json::to_string_pretty(&file)?.as_bytes())?;
    out.sync_all()?;
    Ok(Passphrase(Zeroizing::new(hex::encode(
        generated.plaintext.expose(),
    ))))
}

/// Reads and unwraps the passphrase; fails if the file is missing, altered, or wrapped under
/// another root key or stanza.
pub async fn open(
    provider: &dyn KeyProvider,
    stanza: &str,
    path: &Path,
) -> anyhow::Result<Passphrase> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the repository passphrase {} (run `clinicd backup init` first)",
            path.display()
        )
    })?;
    let file: WrappedFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a wrapped passphrase", path.display()))?;
    anyhow::ensure!(
        file.stanza == stanza,
        "{} belongs to stanza `{}`, not `{stanza}`",
        path.display(),
        file.stanza
    );
    let wrapped = hex::decode(&file.wrapped).context("the wrapped passphrase is not hex")?;
    let key = provider
        .decrypt(&wrapped, &context(stanza))
        .await
        .with_context(|| {
            format!(
                "the key provider could not unwrap the repository passphrase (wrapped by {})",
                file.kek_id
            )
        })?;
    Ok(Passphrase(Zeroizing::new(hex::encode(key.expose()))))
}

/// The copy kept in the repository (wrapped, so it opens nothing without the root key).
const REPOSITORY_COPY: &str = "passphrase.json";

/// Puts a copy of the wrapped file into the repository.
pub async fn deposit(store: &dyn clinicd_files::ObjectStore, path: &Path) -> anyhow::Result<()> {
    super::objects::replace(store, REPOSITORY_COPY, &std::fs::read(path)?).await
}

/// Writes the repository's copy to `path` (a new, owner-only file).
pub async fn fetch(store: &dyn clinicd_files::ObjectStore, path: &Path) -> anyhow::Result<()> {
    let bytes = super::objects::read(store, REPOSITORY_COPY, 64 * 1024)
        .await?
        .with_context(|| {
            format!(
                "{} is missing and the repository holds no copy (run `clinicd backup init` first)",
                path.display()
            )
        })?;
    serde_json::from_slice::<WrappedFile>(&bytes)
        .context("the repository's passphrase copy is not a wrapped passphrase")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = owner_only_new(path)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    Ok(())
}

pub fn owner_only_new(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

//! Wiring of the key hierarchy: the configured key provider, and the `clinicd keys` commands.

use std::sync::Arc;

use clinicd_crypto::{
    CacheSettings, DerivedIndex, KeyProvider, Keyring, KmsKeyProvider, LocalKeyProvider, Purpose,
};
use sqlx::PgPool;

use crate::config::KeyProviderSettings;

/// The key provider named by configuration.
pub async fn provider(settings: &KeyProviderSettings) -> anyhow::Result<Arc<dyn KeyProvider>> {
    Ok(match settings {
        KeyProviderSettings::Local { master_key_file } => {
            Arc::new(LocalKeyProvider::from_file(master_key_file)?)
        }
        KeyProviderSettings::AwsKms { key_id } => {
            Arc::new(KmsKeyProvider::from_env(key_id.clone()).await)
        }
    })
}

pub async fn keyring(settings: &KeyProviderSettings, db: PgPool) -> anyhow::Result<Keyring> {
    Ok(Keyring::new(
        db,
        provider(settings).await?,
        CacheSettings::default(),
    ))
}

/// `clinicd keys status`: every branch key, its state, its KEK, and the subject keys it wraps.
pub async fn print_status(keyring: &Keyring) -> anyhow::Result<()> {
    let status = keyring.status().await?;
    let mut out =
        String::from("purpose      version  status     kek_version  subject_keys  kek_id\n");
    for key in &status {
        out.push_str(&format!(
            "{:<12} {:>7}  {:<9}  {:>11}  {:>12}  {}\n",
            key.purpose.as_str(),
            key.version,
            key.status,
            key.kek_version,
            key.subject_keys,
            key.kek_id
        ));
    }
    if status.is_empty() {
        out.push_str("(no keys yet: they are created on first start or by any rotation)\n");
    }
    write_stdout(&out)
}

/// The commands below print what they did and return it for their audit event.
pub type Done = serde_json::Value;

pub async fn rotate_kek(keyring: &Keyring) -> anyhow::Result<Done> {
    keyring.bootstrap().await?;
    let rotation = keyring.rotate_kek().await?;
    write_stdout(&format!(
        "rewrapped {} branch key(s) under KEK generation {}\n",
        rotation.rewrapped, rotation.kek_version
    ))?;
    Ok(serde_json::json!({
        "kek_version": rotation.kek_version,
        "rewrapped_branch_keys": rotation.rewrapped,
    }))
}

pub async fn rotate_branch(keyring: &Keyring, purpose: Purpose) -> anyhow::Result<Done> {
    keyring.bootstrap().await?;
    let rotation = keyring.rotate_branch(purpose).await?;
    write_stdout(&format!(
        "new {} branch key v{}; rewrapped {} subject key(s); the previous branch key is retired\n",
        rotation.purpose, rotation.version, rotation.rewrapped_subject_keys
    ))?;
    Ok(serde_json::json!({
        "purpose": purpose.as_str(),
        "version": rotation.version,
        "rewrapped_subject_keys": rotation.rewrapped_subject_keys,
    }))
}

/// Command output goes to stdout (logs go there too, as JSON, but these commands log little).
/// Prints a command's report and flushes it (stdout is shared with the JSON log lines).
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// New subject keys for every patient, then every clinical field re-encrypted under them.
pub async fn rekey(keyring: &Keyring, job: &str) -> anyhow::Result<Done> {
    let rotated = keyring.rotate_subject_keys().await?;
    let outcome = keyring
        .rekey(job, &encrypted_columns(), Default::default())
        .await?;
    write_stdout(&format!(
        "subject keys rotated: {rotated}\n{}\n",
        describe(&outcome)
    ))?;
    Ok(serde_json::json!({
        "job": job,
        "subject_keys_rotated": rotated,
        "outcome": describe(&outcome),
    }))
}

/// Blind indexes recomputed under the active blind-index key: those beside their column, then
/// the name-token index.
pub async fn reindex(keyring: &Keyring, job: &str) -> anyhow::Result<Done> {
    let mut out = String::new();
    for column in clinicd_domain::indexed_columns() {
        let outcome = keyring
            .rebuild_blind_index(job, column, Default::default())
            .await?;
        out.push_str(&format!(
            "{}.{}: {}\n",
            column.spec.table,
            column.spec.column,
            describe(&outcome)
        ));
    }
    let tokens = clinicd_domain::NameTokenIndex;
    let outcome = keyring
        .rebuild_index(job, &tokens, Default::default())
        .await?;
    let (table, column) = tokens.progress_key();
    out.push_str(&format!("{table}.{column}: {}\n", describe(&outcome)));
    write_stdout(&out)?;
    Ok(serde_json::json!({ "job": job }))
}

fn describe(outcome: &clinicd_crypto::RekeyOutcome) -> String {
    match outcome {
        clinicd_crypto::RekeyOutcome::Finished(r) => format!(
            "finished: {} rows seen, {} moved, {} shredded (left as they are)",
            r.rows_seen, r.rows_moved, r.rows_destroyed
        ),
        clinicd_crypto::RekeyOutcome::Paused(r) => {
            format!(
                "paused after {} rows moved: run again to continue",
                r.rows_moved
            )
        }
        clinicd_crypto::RekeyOutcome::AlreadyRunning => {
            "another run holds the lock: try later".into()
        }
    }
}

/// Every field-encrypted column: the clinical tables and the files' wrapped keys, digests and
/// names (re-keying rewrites rows only, never an object).
pub fn encrypted_columns() -> Vec<clinicd_crypto::EncryptedColumn> {
    let mut columns = clinicd_domain::encrypted_columns();
    columns.extend(clinicd_files::encrypted_columns());
    columns
}

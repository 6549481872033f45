//! `clinicd keys escrow-split` and `clinicd keys escrow-rebuild`: the local master key as k-of-n
//! shares for separate custodians, and back (docs/backup.md, "Key escrow").
//!
//! Rebuilding runs on a machine that may have nothing yet (no configuration, no database), so
//! it needs neither; splitting reads the configured key and is audited by its caller.

use std::io::Write;
use std::path::{Path, PathBuf};

use clinicd_crypto::escrow;
use clinicd_crypto::provider::{fingerprint, read_master_key};
use zeroize::Zeroizing;

use crate::config::KeyProviderSettings;
use crate::keys::write_stdout;

/// Writes one share file per custodian into `out` (created if missing); refuses to overwrite
/// any share file already there, so two splits are never mixed on disk.
pub fn split(
    settings: &KeyProviderSettings,
    threshold: u8,
    count: u8,
    out: &Path,
) -> anyhow::Result<serde_json::Value> {
    let KeyProviderSettings::Local { master_key_file } = settings else {
        anyhow::bail!(
            "escrow splits the local master key; an AWS KMS key never leaves KMS \
             (docs/backup.md says what protects it)"
        );
    };
    let master = read_master_key(master_key_file)?;
    let shares = escrow::split(&master, threshold, count)?;
    std::fs::create_dir_all(out)?;
    let paths: Vec<PathBuf> = (1..=count)
        .map(|n| out.join(format!("share-{n}-of-{count}.txt")))
        .collect();
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        anyhow::bail!(
            "{} exists: give an empty directory (shares of two splits do not combine)",
            existing.display()
        );
    }
    for (path, share) in paths.iter().zip(&shares) {
        write_private(path, format!("{}\n", share.expose()).as_bytes())?;
    }
    let key_id = format!("local:{}", fingerprint(&master));
    write_stdout(&format!(
        "wrote {count} shares of {key_id} to {}; any {threshold} rebuild the key. Give each file \
         to a different custodian and delete it here.\n",
        out.display()
    ))?;
    Ok(serde_json::json!({
        "escrow": "split",
        "kek_id": key_id,
        "threshold": threshold,
        "shares": count,
    }))
}

/// Rebuilds the master key from share files into `out`, a new file readable by its owner only.
pub fn rebuild(shares: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let mut lines = Vec::with_capacity(shares.len());
    for path in shares {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("share file {}: {e}", path.display()))?,
        );
        lines.push(Zeroizing::new(text.trim().to_owned()));
    }
    let lines: Vec<&str> = lines.iter().map(|l| l.as_str()).collect();
    let master = escrow::combine(&lines)?;
    write_new_private(out, master.expose())?;
    write_stdout(&format!(
        "rebuilt local:{} into {} (point CLINICD_MASTER_KEY_FILE at it)\n",
        fingerprint(&master),
        out.display()
    ))?;
    Ok(())
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    open_private(path)?.write_all(contents)
}

/// A key never replaces a file that is there: losing the live key would be the disaster.
fn write_new_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    open_private(path)
        .map_err(|e| anyhow::anyhow!("{}: {e} (it must not exist yet)", path.display()))?
        .write_all(contents)?;
    Ok(())
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

//! The manifest taken with each backup: what the database held at a named restore point (rows
//! and a digest per table), the newest audit checkpoint then, and the stored files copied with
//! their digests. The drill restores to that restore point and must find the same; `verify`
//! re-reads the copies. It names tables and counts, never a value. An HMAC under the
//! repository passphrase makes an altered manifest fail, not mislead.

use std::collections::BTreeMap;

use anyhow::Context;
use aws_lc_rs::hmac;
use chrono::{DateTime, Utc};
use clinicd_audit::checkpoint::Checkpoint;
use clinicd_files::ObjectStore;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use super::passphrase::Passphrase;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub label: String,
    pub kind: String,
    pub repo: u8,
    pub taken_at: DateTime<Utc>,
    /// The named restore point the counts belong to.
    pub restore_point: String,
    pub lsn: String,
    pub tables: BTreeMap<String, TableDigest>,
    /// The newest audit checkpoint when the counts were taken (from the WORM store).
    pub checkpoint: Option<Checkpoint>,
    /// Copies of the stored objects (local-disk storage only), by object key.
    pub files: BTreeMap<String, FileCopy>,
    #[serde(default)]
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    pub rows: i64,
    /// MD5 over the sorted MD5s of the rows' text forms: a change detector for a restore, not
    /// a seal (the manifest's HMAC is the seal).
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCopy {
    pub size: u64,
    /// SHA-256 of the ciphertext object, as copied.
    pub sha256: String,
}

impl Manifest {
    fn mac_key(passphrase: &Passphrase) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, passphrase.expose().as_bytes())
    }

    fn body(&self) -> anyhow::Result<Vec<u8>> {
        let mut unsigned = self.clone();
        unsigned.mac = String::new();
        Ok(serde_json::to_vec(&unsigned)?)
    }

    pub fn seal(&mut self, passphrase: &Passphrase) -> anyhow::Result<()> {
        let tag = hmac::sign(&Self::mac_key(passphrase), &self.body()?);
        self.mac = hex::encode(tag.as_ref());
        Ok(())
    }

    /// Fails unless the manifest is the one sealed under this passphrase.
    pub fn check(&self, passphrase: &Passphrase) -> anyhow::Result<()> {
        let tag = hex::decode(&self.mac).unwrap_or_default();
        hmac::verify(&Self::mac_key(passphrase), &self.body()?, &tag).map_err(|_| {
            anyhow::anyhow!(
                "the manifest of backup {} fails its HMAC: it was altered or belongs to another repository",
                self.label
            )
        })
    }

    /// The manifest's object key (labels have capitals; keys may not).
    pub fn key(label: &str) -> String {
        format!("manifests/{}.json", label.to_ascii_lowercase())
    }
}

/// The tables a backup covers: every permanent table of the public schema. Unlogged tables
/// are empty after any restore by design (rate-limit state), so they are left out.
pub async fn tables(db: &mut PgConnection) -> anyhow::Result<Vec<(String, String)>> {
    Ok(sqlx::query_as!(
        Tables,
        r#"SELECT c.relname AS "name!", format('%I.%I', n.nspname, c.relname) AS "quoted!"
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relpersistence = 'p'
           ORDER BY c.relname"#
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|t| (t.name, t.quoted))
    .collect())
}

struct Tables {
    name: String,
    quoted: String,
}

/// Rows and digest of every table, as `db` sees them.
pub async fn digests(
    db: &mut PgConnection,
    tables: &[(String, String)],
) -> anyhow::Result<BTreeMap<String, TableDigest>> {
    let mut out = BTreeMap::new();
    for (name, quoted) in tables {
        // Runtime query: the table is data (from the catalogue, quoted by format('%I')).
        let (rows, digest): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(coalesce(string_agg(h, '' ORDER BY h), '')) \
             FROM (SELECT md5(t::text) AS h FROM {quoted} t) rows"
        )))
        .fetch_one(&mut *db)
        .await
        .with_context(|| format!("cannot digest table {name}"))?;
        out.insert(name.clone(), TableDigest { rows, digest });
    }
    Ok(out)
}

/// What the database holds, fixed by a restore point: every covered table is locked against
/// writes (SHARE) while it is counted and the restore point is made, so the counts are exactly
/// what a restore to that point holds. Writers wait for the few seconds this takes; a lock
/// not granted in 30 s (a long transaction) fails the backup rather than stall the clinic.
/// `checkpoint` is read inside the window, so it never covers events past the point.
#[derive(Debug)]
pub struct Snapshot {
    pub tables: BTreeMap<String, TableDigest>,
    pub restore_point: String,
    pub lsn: String,
    pub checkpoint: Option<Checkpoint>,
}

pub async fn snapshot(
    db: &PgPool,
    restore_point: &str,
    checkpoints: &dyn clinicd_audit::checkpoint::CheckpointStore,
) -> anyhow::Result<Snapshot> {
    let mut conn = db.acquire().await?;
    let covered = tables(&mut conn).await?;
    drop(conn);
    let mut tx = db.begin().await?;
    sqlx::query_scalar!(r#"SELECT set_config('lock_timeout', '30s', true) AS "set!""#)
        .fetch_one(&mut *tx)
        .await?;
    let list = covered
        .iter()
        .map(|(_, quoted)| quoted.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    // Runtime query: the tables are data.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {list} IN SHARE MODE"
    )))
    .execute(&mut *tx)
    .await
    .context("cannot lock the tables for the manifest (a long transaction holds them?)")?;
    let tables = digests(&mut tx, &covered).await?;
    let checkpoint = checkpoints
        .latest()
        .await
        .context("cannot read the newest audit checkpoint")?;
    let lsn = sqlx::query_scalar!(
        r#"SELECT pg_create_restore_point($1)::text AS "lsn!""#,
        restore_point
    )
    .fetch_one(&mut *tx)
    .await
    .context("cannot create the restore point (the backup role must be a superuser)")?;
    tx.commit().await?;
    Ok(Snapshot {
        tables,
        restore_point: restore_point.to_owned(),
        lsn,
        checkpoint,
    })
}

/// Writes (replaces) a manifest.
pub async fn store(store: &dyn ObjectStore, manifest: &Manifest) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(manifest)?;
    super::objects::replace(store, &Manifest::key(&manifest.label), text.as_bytes()).await
}

/// Reads a manifest and checks its seal; `None` if the backup has none (made outside clinicd).
pub async fn load(
    store: &dyn ObjectStore,
    label: &str,
    passphrase: &Passphrase,
) -> anyhow::Result<Option<Manifest>> {
    let Some(bytes) = super::objects::read(store, &Manifest::key(label), 256 << 20).await? else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("the manifest of backup {label} is not readable"))?;
    manifest.check(passphrase)?;
    anyhow::ensure!(
        manifest.label == label,
        "the manifest stored for {label} names backup {}",
        manifest.label
    );
    Ok(Some(manifest))
}

/// Differences between two sets of table digests, one line each (empty when equal).
pub fn compare(
    expected: &BTreeMap<String, TableDigest>,
    found: &BTreeMap<String, TableDigest>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, want) in expected {
        match found.get(name) {
            None => problems.push(format!("table {name}: missing after restore")),
            Some(got) if got.rows != want.rows => problems.push(format!(
                "table {name}: {} rows after restore, {} at backup",
                got.rows, want.rows
            )),
            Some(got) if got.digest != want.digest => {
                problems.push(format!("table {name}: same row count, different contents"));
            }
            Some(_) => {}
        }
    }
    for name in found.keys().filter(|name| !expected.contains_key(*name)) {
        problems.push(format!(
            "table {name}: present after restore, not at backup"
        ));
    }
    problems
}

//! `clinicd backup drill`: proves a backup restores. Restores the newest backup (to its
//! restore point) or a point in time into a throwaway cluster, starts clinicd against it, and
//! checks what a restore must give back: every table's rows and digest as the manifest
//! recorded them (restore point only), the audit chain end to end up to the checkpoint the
//! manifest holds, a sample of patients decrypting, and a sample of files reading back
//! byte-identical to the live copies (same size and SHA-256 of the plaintext). Reports the
//! recovery time (RTO: the restore to a promoted cluster plus clinicd starting on it and
//! answering; the drill's own checks are reported apart) and recovery point (RPO: how far
//! behind the archive is now, so what a disaster now would lose).

use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clinicd_files::{Files, ObjectStore};
use serde::Serialize;
use uuid::Uuid;

use super::cluster::{self, Cluster};
use super::commands::{Backup, database_name};
use super::manifest;
use super::pgbackrest::cluster_owner;
use crate::config::{Settings, StorageSettings};

/// How many patients and files are sampled.
const SAMPLE: i64 = 20;

#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub label: String,
    pub restored_to: String,
    pub tables_checked: usize,
    pub rows_checked: i64,
    pub audit_events_verified: i64,
    pub patients_decrypted: usize,
    pub files_compared: usize,
    /// Restore and recovery, to a promoted cluster.
    pub restore_seconds: f64,
    /// The drill's own checks (not part of a real recovery).
    pub checks_seconds: f64,
    /// What an operator waits for: the restore, then clinicd starting and answering.
    pub rto_seconds: f64,
    pub rpo_seconds: Option<f64>,
    pub problems: Vec<String>,
}

pub async fn drill(
    backup: &Backup,
    settings: &Settings,
    target: Option<DateTime<Utc>>,
) -> anyhow::Result<DrillReport> {
    let started = Instant::now();
    let (set, manifest) = backup.choose(target).await?;
    let owner = cluster_owner(&backup.env.backup.pg_data)?;
    // Under the work directory (the cluster owner's), removed on every path out.
    let scratch = tempfile::Builder::new()
        .prefix("drill-")
        .tempdir_in(&backup.env.backup.work_dir)
        .context("cannot make the drill's directory")?;
    super::pgbackrest::chown(scratch.path(), &owner)?;
    let mut restored = Cluster::new(
        cluster::bindir(backup.env.backup.pg_bindir.as_deref())?,
        scratch.path(),
        &owner,
    )?;
    let args = Backup::restore_args(&set, &manifest, &restored.data, target);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    backup.pgbackrest(&refs).await?;
    let result = check(
        backup,
        settings,
        &mut restored,
        &set.label,
        &manifest,
        target,
        started,
    )
    .await;
    restored.stop().await;
    drop(restored);
    drop(scratch);
    result
}

async fn check(
    backup: &Backup,
    settings: &Settings,
    restored: &mut Cluster,
    label: &str,
    manifest: &manifest::Manifest,
    target: Option<DateTime<Utc>>,
    started: Instant,
) -> anyhow::Result<DrillReport> {
    // pgBackRest's own restore_command fetches WAL: the throwaway server gets the passphrase
    // (and S3 credentials) in its environment, for its life only.
    let env = backup.engine.child_env(&backup.passphrase);
    restored.start(&env).await?;
    let database = database_name(settings)?;
    let user = backup.env.backup.pg_user.clone();
    let db = restored.promoted(&user, &database).await?;
    let restore_seconds = started.elapsed().as_secs_f64();
    let mut problems = Vec::new();

    let mut tables_checked = 0;
    let mut rows_checked = 0;
    if target.is_none() {
        let mut conn = db.acquire().await?;
        let covered = manifest::tables(&mut conn).await?;
        let found = manifest::digests(&mut conn, &covered).await?;
        problems.extend(manifest::compare(&manifest.tables, &found));
        tables_checked = found.len();
        rows_checked = found.values().map(|t| t.rows).sum();
    }

    let keyring = std::sync::Arc::new(crate::keys::keyring(&settings.keys, db.clone()).await?);
    let report =
        clinicd_audit::verify::verify_with(&db, &keyring, manifest.checkpoint.clone()).await?;
    if let Some(seq) = report.first_broken_seq {
        problems.push(format!(
            "audit chain broken at {seq}: {}",
            report.problem.clone().unwrap_or_default()
        ));
    }

    let patients = sample_patients(&db).await?;
    let store = clinicd_domain::PatientStore::new(db.clone(), keyring.clone());
    let mut decrypted = 0;
    for id in &patients {
        match store.get(*id).await {
            Ok(Some(_)) => decrypted += 1,
            Ok(None) => problems.push(format!("patient {id}: missing after restore")),
            Err(error) => problems.push(format!("patient {id}: does not decrypt: {error}")),
        }
    }

    let files_compared =
        compare_files(backup, settings, &db, keyring.clone(), &mut problems).await?;

    let checks_seconds = started.elapsed().as_secs_f64() - restore_seconds;
    let serve_seconds = serve_restored(restored, &user, &database).await?;
    let rpo = rpo_seconds(backup, settings).await;
    db.close().await;
    Ok(DrillReport {
        label: label.to_owned(),
        restored_to: target.map_or_else(|| manifest.restore_point.clone(), |t| t.to_rfc3339()),
        tables_checked,
        rows_checked,
        audit_events_verified: report.events_checked,
        patients_decrypted: decrypted,
        files_compared,
        restore_seconds,
        checks_seconds,
        rto_seconds: restore_seconds + serve_seconds,
        rpo_seconds: rpo,
        problems,
    })
}

async fn sample_patients(db: &sqlx::PgPool) -> anyhow::Result<Vec<Uuid>> {
    // Shredded patients (blind indexes emptied) have nothing left to decrypt.
    Ok(sqlx::query_scalar!(
        "SELECT id FROM patients WHERE family_name_bidx IS NOT NULL ORDER BY random() LIMIT $1",
        SAMPLE
    )
    .fetch_all(db)
    .await?)
}

/// Reads a sample of live files through the restored database: from the backup's copies
/// (local storage) or the bucket (S3), and again from the live store; both must verify and
/// agree.
async fn compare_files(
    backup: &Backup,
    settings: &Settings,
    db: &sqlx::PgPool,
    keyring: std::sync::Arc<clinicd_crypto::Keyring>,
    problems: &mut Vec<String>,
) -> anyhow::Result<usize> {
    let ids = sqlx::query_scalar!(
        "SELECT id FROM files WHERE deleted_at IS NULL ORDER BY random() LIMIT $1",
        SAMPLE
    )
    .fetch_all(db)
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let live_store = crate::startup::file_store(settings).await?;
    let restored_store: std::sync::Arc<dyn ObjectStore> = match &settings.storage {
        StorageSettings::Local { .. } => backup.copies.clone(),
        StorageSettings::S3 { .. } => live_store.clone(),
    };
    let restored = Files::new(
        db.clone(),
        keyring,
        restored_store,
        settings.http.files.clone(),
    );
    let live_db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(settings.database.connect_options()?)
        .await
        .context("cannot reach the live database to compare files")?;
    let live_keyring =
        std::sync::Arc::new(crate::keys::keyring(&settings.keys, live_db.clone()).await?);
    let live = Files::new(
        live_db.clone(),
        live_keyring,
        live_store,
        settings.http.files.clone(),
    );
    let mut compared = 0;
    for id in ids {
        let from_backup = restored.read_back(id).await;
        let from_live = live.read_back(id).await;
        match (from_backup, from_live) {
            (Ok(a), Ok(b)) if a == b => compared += 1,
            (Ok(_), Ok(_)) => problems.push(format!("file {id}: differs from the live copy")),
            (Err(error), _) => {
                problems.push(format!("file {id}: unreadable from the backup: {error}"))
            }
            // Deleted or purged since the backup: the backup's copy verified on its own.
            (Ok(_), Err(_)) => compared += 1,
        }
    }
    live_db.close().await;
    Ok(compared)
}

/// Starts clinicd on the restored cluster (loopback, ephemeral ports, its own scratch
/// directories so it touches nothing live) and waits for it to answer; returns the RTO.
async fn serve_restored(restored: &Cluster, user: &str, database: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let scratch = tempfile::tempdir()?;
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    let dir = |name: &str| scratch.path().join(name).display().to_string();
    for (name, value) in [
        ("DATABASE_URL", restored.url(user, database)),
        ("CLINICD_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("CLINICD_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("CLINICD_STORAGE", "local".to_owned()),
        ("CLINICD_STORAGE_DIR", dir("files")),
        ("CLINICD_AUDIT_CHECKPOINT_DIR", dir("checkpoints")),
        ("CLINICD_AUDIT_ARCHIVE_DIR", dir("archive")),
        ("CLINICD_DB_MAX_CONNECTIONS", "4".to_owned()),
    ] {
        vars.insert(name.to_owned(), value);
    }
    vars.remove("CLINICD_HTTP_REDIRECT_ADDR");
    let restored_settings = Settings::from_vars(&vars)
        .map_err(|e| anyhow::anyhow!("the drill's server settings: {e}"))?;
    let app = crate::Application::build(restored_settings)
        .await
        .context("clinicd did not start on the restored database")?;
    let port = app.api_port();
    let handles = app.handles();
    let server = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        // Our own child on loopback; its certificate names the real host.
        .danger_accept_invalid_certs(true)
        .build()?;
    let mut answered = false;
    for _ in 0..300 {
        if let Ok(response) = client
            .get(format!("https://127.0.0.1:{port}/health"))
            .send()
            .await
            && response.status().is_success()
        {
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let serve_seconds = started.elapsed().as_secs_f64();
    for handle in handles {
        handle.stop(true).await;
    }
    let _ = server.await;
    anyhow::ensure!(
        answered,
        "clinicd on the restored database did not answer /health"
    );
    Ok(serve_seconds)
}

/// Seconds since the live cluster last archived WAL: what a disaster now would lose.
async fn rpo_seconds(backup: &Backup, settings: &Settings) -> Option<f64> {
    let db = backup
        .admin_pool(&database_name(settings).ok()?)
        .await
        .ok()?;
    let last: Option<DateTime<Utc>> =
        sqlx::query_scalar!("SELECT last_archived_time FROM pg_stat_archiver")
            .fetch_one(&db)
            .await
            .ok()?;
    db.close().await;
    last.map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0)
}

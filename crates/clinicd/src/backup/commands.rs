//! The backup commands other than the drill: init, now, list, verify, restore, and the two
//! that Postgres itself runs (archive-push, archive-get).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clinicd_crypto::KeyProvider;
use clinicd_files::{LocalStore, ObjectStore};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::files_copy;
use super::manifest::{self, Manifest};
use super::passphrase::{self, Passphrase};
use super::pgbackrest::{BackupInfo, DAILY, MONTHLY, PgBackRest};
use crate::config::{BackupEnv, BackupRepo, Settings, StorageSettings};

/// An opened repository: the engine, the unwrapped passphrase, and where our manifests and
/// file copies live beside pgBackRest's own files.
#[derive(Debug)]
pub struct Backup {
    pub env: BackupEnv,
    pub engine: PgBackRest,
    pub passphrase: Passphrase,
    pub manifests: Arc<dyn ObjectStore>,
    pub copies: Arc<dyn ObjectStore>,
}

impl Backup {
    pub async fn open(env: BackupEnv, provider: &dyn KeyProvider) -> anyhow::Result<Self> {
        let stores = set_stores(&env.backup.repo).await;
        // A fresh machine after a disaster has the repository and the root key (escrow
        // shares or KMS) but not this file: the repository keeps a copy, wrapped.
        if !env.backup.passphrase_file.exists() {
            passphrase::fetch(stores.0.as_ref(), &env.backup.passphrase_file).await?;
            let owner = super::pgbackrest::cluster_owner(&env.backup.pg_data)?;
            super::pgbackrest::chown(&env.backup.passphrase_file, &owner)?;
        }
        let passphrase =
            passphrase::open(provider, &env.backup.stanza, &env.backup.passphrase_file).await?;
        Self::with(env, passphrase, stores)
    }

    fn with(env: BackupEnv, passphrase: Passphrase, stores: Stores) -> anyhow::Result<Self> {
        let engine = PgBackRest::prepare(&env.backup)?;
        let (manifests, copies) = stores;
        Ok(Self {
            env,
            engine,
            passphrase,
            manifests,
            copies,
        })
    }

    /// `backup init`: a new passphrase (wrapped), the stanza in every repository, and
    /// pgBackRest's check that WAL archiving reaches them.
    pub async fn init(env: BackupEnv, provider: &dyn KeyProvider) -> anyhow::Result<Self> {
        let passphrase =
            passphrase::create(provider, &env.backup.stanza, &env.backup.passphrase_file).await?;
        // Postgres's archive_command (as the cluster's owner) unwraps it for each segment.
        let owner = super::pgbackrest::cluster_owner(&env.backup.pg_data)?;
        super::pgbackrest::chown(&env.backup.passphrase_file, &owner)?;
        let stores = set_stores(&env.backup.repo).await;
        let backup = Self::with(env, passphrase, stores)?;
        passphrase::deposit(
            backup.manifests.as_ref(),
            &backup.env.backup.passphrase_file,
        )
        .await?;
        backup.pgbackrest(&["stanza-create"]).await?;
        backup.pgbackrest(&["check"]).await.context(
            "the stanza exists but WAL archiving does not reach it: set archive_mode = on and \
             archive_command as docs/backup.md says, restart Postgres, then run `clinicd backup \
             init` again (it refuses to replace the passphrase: delete it only if no backup \
             was made)",
        )?;
        Ok(backup)
    }

    pub async fn pgbackrest(&self, args: &[&str]) -> anyhow::Result<String> {
        self.engine.run(&self.passphrase, args).await
    }

    /// A superuser pool on the live cluster (over its socket), for the manifest.
    pub async fn admin_pool(&self, database: &str) -> anyhow::Result<PgPool> {
        let settings = &self.env.backup;
        let options = PgConnectOptions::new()
            .host(&settings.pg_socket.to_string_lossy())
            .port(settings.pg_port)
            .username(&settings.pg_user)
            .database(database);
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(sqlx::ConnectOptions::disable_statement_logging(options))
            .await
            .context("cannot connect to the cluster over its socket as CLINICD_BACKUP_PG_USER")
    }

    /// `backup now`: a backup, then its manifest and the file copies.
    pub async fn now(
        &self,
        settings: &Settings,
        kind: &str,
        monthly: bool,
    ) -> anyhow::Result<serde_json::Value> {
        anyhow::ensure!(
            matches!(kind, "full" | "diff" | "incr"),
            "--type must be full, diff or incr"
        );
        anyhow::ensure!(
            !monthly || self.env.backup.retention_months > 0,
            "--monthly needs CLINICD_BACKUP_RETENTION_MONTHS above 0"
        );
        let (repo, kind) = if monthly {
            (MONTHLY, "full")
        } else {
            (DAILY, kind)
        };
        let repo_arg = format!("--repo={repo}");
        let type_arg = format!("--type={kind}");
        let clock = std::time::Instant::now();
        self.pgbackrest(&["backup", &repo_arg, &type_arg]).await?;
        let backup_seconds = clock.elapsed().as_secs_f64();
        let backups = self.engine.backups(&self.passphrase).await?;
        let made = backups
            .iter()
            .rev()
            .find(|b| b.database.repo == repo)
            .context("pgbackrest reported success but lists no backup")?
            .clone();
        let admin = self.admin_pool(&database_name(settings)?).await?;
        let checkpoints = crate::startup::checkpoint_store(settings).await;
        let clock = std::time::Instant::now();
        let snapshot = manifest::snapshot(
            &admin,
            &format!("clinicd-{}", made.label),
            checkpoints.as_ref(),
        )
        .await?;
        // How long writers waited on the manifest's locks.
        let manifest_seconds = clock.elapsed().as_secs_f64();
        // Forces a WAL switch and waits until the segment with the restore point is archived.
        self.pgbackrest(&["check"]).await?;
        let previous = self
            .newest_manifest(&backups)
            .await?
            .map(|m| m.files)
            .unwrap_or_default();
        let clock = std::time::Instant::now();
        let files = match &self.env.storage {
            StorageSettings::Local { dir } => {
                files_copy::copy(dir, self.copies.as_ref(), &previous).await?
            }
            // The bucket keeps its own versions and replicas (`backup check`, docs/backup.md).
            StorageSettings::S3 { .. } => BTreeMap::new(),
        };
        let copy_seconds = clock.elapsed().as_secs_f64();
        let mut manifest = Manifest {
            version: 1,
            label: made.label.clone(),
            kind: made.kind.clone(),
            repo,
            taken_at: Utc::now(),
            restore_point: snapshot.restore_point,
            lsn: snapshot.lsn,
            tables: snapshot.tables,
            checkpoint: snapshot.checkpoint,
            files,
            mac: String::new(),
        };
        manifest.seal(&self.passphrase)?;
        manifest::store(self.manifests.as_ref(), &manifest).await?;
        Ok(json!({
            "label": manifest.label,
            "type": manifest.kind,
            "repo": repo,
            "size_bytes": made.info.size,
            "repository_bytes": made.info.repository.size,
            "tables": manifest.tables.len(),
            "rows": manifest.tables.values().map(|t| t.rows).sum::<i64>(),
            "files": manifest.files.len(),
            "restore_point": manifest.restore_point,
            "backup_seconds": backup_seconds,
            "manifest_lock_seconds": manifest_seconds,
            "file_copy_seconds": copy_seconds,
        }))
    }

    /// The newest backup's manifest that opens (skipping backups without one).
    pub async fn newest_manifest(
        &self,
        backups: &[BackupInfo],
    ) -> anyhow::Result<Option<Manifest>> {
        for backup in backups.iter().rev() {
            if let Some(manifest) =
                manifest::load(self.manifests.as_ref(), &backup.label, &self.passphrase).await?
            {
                return Ok(Some(manifest));
            }
        }
        Ok(None)
    }

    /// `backup list`: every backup, oldest first, with its manifest's state.
    pub async fn list(&self) -> anyhow::Result<String> {
        let backups = self.engine.backups(&self.passphrase).await?;
        let mut out = String::from(
            "label                 repo  type  stopped_at                 size_mib  repo_mib  manifest\n",
        );
        for backup in &backups {
            let manifest = match manifest::load(
                self.manifests.as_ref(),
                &backup.label,
                &self.passphrase,
            )
            .await
            {
                Ok(Some(m)) => format!(
                    "ok ({} rows, {} files)",
                    m.tables.values().map(|t| t.rows).sum::<i64>(),
                    m.files.len()
                ),
                Ok(None) => "none".to_owned(),
                Err(error) => format!("BAD: {error}"),
            };
            out.push_str(&format!(
                "{:<21} {:>4}  {:<4}  {:<25}  {:>8.1}  {:>8.1}  {}\n",
                backup.label,
                backup.database.repo,
                backup.kind,
                stopped_at(backup).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                backup.info.size as f64 / 1_048_576.0,
                backup.info.repository.size as f64 / 1_048_576.0,
                manifest
            ));
        }
        if backups.is_empty() {
            out.push_str("(no backups yet: clinicd backup now)\n");
        }
        Ok(out)
    }

    /// `backup verify`: pgBackRest's own verification of every file in every repository,
    /// then every manifest's seal and every file copy against its digest. One line per
    /// problem; empty when all is well.
    pub async fn verify(&self) -> anyhow::Result<(Vec<String>, serde_json::Value)> {
        let mut problems = Vec::new();
        for repo in self.engine.repos() {
            let repo_arg = format!("--repo={repo}");
            if let Err(error) = self.pgbackrest(&["verify", &repo_arg]).await {
                problems.push(format!("repository {repo}: {error:#}"));
            }
            match self.engine.archived_wal(&self.passphrase, repo).await {
                Ok(names) => problems.extend(
                    super::pgbackrest::wal_gaps(&names)
                        .into_iter()
                        .map(|gap| format!("repository {repo}: {gap}")),
                ),
                Err(error) => problems.push(format!("repository {repo}: {error:#}")),
            }
        }
        let backups = self.engine.backups(&self.passphrase).await?;
        let mut files = BTreeMap::new();
        let mut manifests = 0;
        for backup in &backups {
            match manifest::load(self.manifests.as_ref(), &backup.label, &self.passphrase).await {
                Ok(Some(m)) => {
                    manifests += 1;
                    files.extend(m.files);
                }
                Ok(None) => problems.push(format!(
                    "backup {}: no manifest (not made by clinicd backup now)",
                    backup.label
                )),
                Err(error) => problems.push(format!("backup {}: {error:#}", backup.label)),
            }
        }
        problems.extend(files_copy::verify(self.copies.as_ref(), &files).await);
        let summary = json!({
            "backups": backups.len(),
            "manifests": manifests,
            "file_copies": files.len(),
            "problems": problems.len(),
        });
        Ok((problems, summary))
    }

    /// The newest backup whose manifest was taken at or before `target` (or the newest).
    pub async fn choose(
        &self,
        target: Option<DateTime<Utc>>,
    ) -> anyhow::Result<(BackupInfo, Manifest)> {
        let backups = self.engine.backups(&self.passphrase).await?;
        for backup in backups.iter().rev().filter(|b| !b.error) {
            let Some(manifest) =
                manifest::load(self.manifests.as_ref(), &backup.label, &self.passphrase).await?
            else {
                continue;
            };
            if target.is_none_or(|t| manifest.taken_at <= t) {
                return Ok((backup.clone(), manifest));
            }
        }
        anyhow::bail!(match target {
            Some(t) => format!("no backup with a manifest was taken at or before {t}"),
            None => "no backup with a manifest yet (clinicd backup now)".to_owned(),
        })
    }

    /// pgBackRest's restore arguments for `set` into `data`: to `target` (a time), or to the
    /// set's own restore point.
    pub fn restore_args(
        set: &BackupInfo,
        manifest: &Manifest,
        data: &Path,
        target: Option<DateTime<Utc>>,
    ) -> Vec<String> {
        let mut args = vec![
            "restore".to_owned(),
            format!("--repo={}", set.database.repo),
            format!("--set={}", set.label),
            format!("--pg1-path={}", data.display()),
            "--target-action=promote".to_owned(),
        ];
        match target {
            Some(time) => args.extend([
                "--type=time".to_owned(),
                format!("--target={}", time.format("%Y-%m-%d %H:%M:%S%.6f+00")),
            ]),
            None => args.extend([
                "--type=name".to_owned(),
                format!("--target={}", manifest.restore_point),
            ]),
        }
        args
    }

    /// `backup restore --to TIME --pg-data DIR`: into an empty directory, for an operator to
    /// start (docs/backup.md). WAL is fetched by `clinicd backup archive-get`, so the restored
    /// cluster needs this command's environment, as the primary does for archive-push.
    pub async fn restore(
        &self,
        target: Option<DateTime<Utc>>,
        data: &Path,
    ) -> anyhow::Result<serde_json::Value> {
        empty_or_absent(data)?;
        let owner = super::pgbackrest::cluster_owner(&self.env.backup.pg_data)?;
        super::pgbackrest::make_owned_dir(data, &owner)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))?;
        }
        let (set, manifest) = self.choose(target).await?;
        let exe = std::env::current_exe().context("cannot find the clinicd executable")?;
        let mut args = Self::restore_args(&set, &manifest, data, target);
        // pgBackRest quotes the whole value in postgresql.auto.conf without escaping, so the
        // path goes in bare: it must not need quoting.
        let exe = exe.display().to_string();
        anyhow::ensure!(
            !exe.contains(['\'', '"', ' ']),
            "the clinicd path {exe} needs quoting; install it under a plain path"
        );
        args.push(format!(
            "--recovery-option=restore_command={exe} backup archive-get %f \"%p\""
        ));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(error) = self.pgbackrest(&refs).await {
            // Nothing half-restored is left behind (the directory was empty).
            clear_dir(data);
            return Err(error);
        }
        // The files with the database, or neither: a database whose files did not come back
        // would answer for documents it cannot serve.
        let files = match &self.env.storage {
            StorageSettings::Local { dir } => match std::fs::create_dir_all(dir) {
                Ok(()) => {
                    files_copy::restore(
                        self.copies.as_ref(),
                        &LocalStore::new(dir),
                        &manifest.files,
                    )
                    .await
                }
                Err(error) => Err(error.into()),
            },
            StorageSettings::S3 { .. } => Ok((0, 0)),
        };
        let (files_copied, files_present) = match files {
            Ok(counts) => counts,
            Err(error) => {
                clear_dir(data);
                return Err(error.context(
                    "the database was restored but not its files, so the restore was removed",
                ));
            }
        };
        Ok(json!({
            "files_restored": files_copied,
            "files_already_present": files_present,
            "label": set.label,
            "to": target.map_or_else(|| manifest.restore_point.clone(), |t| t.to_rfc3339()),
            "pg_data": data.display().to_string(),
        }))
    }
}

/// The manifests' store and the file copies' store.
type Stores = (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>);

/// Where a repository keeps our manifests and file copies.
async fn set_stores(repo: &BackupRepo) -> Stores {
    match repo {
        BackupRepo::Local(dir) => (
            Arc::new(LocalStore::new(dir.join("clinicd").join("manifests"))),
            Arc::new(LocalStore::new(dir.join("clinicd").join("files"))),
        ),
        BackupRepo::S3 { bucket, prefix, .. } => {
            let client = clinicd_audit::checkpoint::s3_client_from_env().await;
            let base = prefix.trim_matches('/');
            let join = |leaf: &str| {
                if base.is_empty() {
                    format!("clinicd/{leaf}")
                } else {
                    format!("{base}/clinicd/{leaf}")
                }
            };
            (
                Arc::new(clinicd_files::s3::S3Store::new(
                    client.clone(),
                    bucket,
                    join("manifests"),
                )),
                Arc::new(clinicd_files::s3::S3Store::new(
                    client,
                    bucket,
                    join("files"),
                )),
            )
        }
    }
}

fn stopped_at(backup: &BackupInfo) -> DateTime<Utc> {
    DateTime::from_timestamp(backup.timestamp.stop, 0).unwrap_or_default()
}

pub fn database_name(settings: &Settings) -> anyhow::Result<String> {
    Ok(settings
        .database
        .connect_options()?
        .get_database()
        .unwrap_or("postgres")
        .to_owned())
}

/// Empties a directory a failed restore filled (it was empty before).
fn clear_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// A restore goes only into an empty (or new) directory: never over a cluster.
pub fn empty_or_absent(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => anyhow::ensure!(
            entries.next().is_none(),
            "{} is not empty: restore only into an empty directory",
            dir.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", dir.display())),
    }
    Ok(())
}

/// `archive-push` / `archive-get`, run by Postgres: the passphrase is unwrapped for the one
/// call and handed to pgBackRest in its environment. Exits with pgBackRest's status, which
/// Postgres reads (archive-get's 1 means "no such segment", not a failure).
pub async fn archive(env: BackupEnv, args: &[String]) -> anyhow::Result<i32> {
    let provider = crate::keys::provider(&env.keys).await?;
    let passphrase = passphrase::open(
        provider.as_ref(),
        &env.backup.stanza,
        &env.backup.passphrase_file,
    )
    .await?;
    let engine = PgBackRest::existing(&env.backup)?;
    // Postgres runs us in the cluster's data directory: a restored cluster's differs from the
    // configured one, and pgBackRest insists they match.
    let here = std::env::current_dir().context("cannot read the working directory")?;
    let mut args = args.to_vec();
    args.push(format!("--pg1-path={}", here.display()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let status = engine
        .command(&passphrase, &refs)
        .status()
        .await
        .context("cannot run pgbackrest")?;
    Ok(status.code().unwrap_or(1))
}

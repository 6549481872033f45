//! A throwaway Postgres cluster for restores: started on a socket in a private directory (no
//! TCP listener), with archiving forced off so that it never writes into the repository, and
//! stopped and removed when dropped, so restored data does not outlive the drill.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use super::pgbackrest::{Owner, as_owner, chown};

/// Any port: it only names the socket file in our private directory.
const PORT: u16 = 5432;

#[derive(Debug)]
pub struct Cluster {
    bindir: PathBuf,
    pub data: PathBuf,
    socket: PathBuf,
    run_as: Option<String>,
    running: bool,
}

/// The directory with `pg_ctl`: configured, else the newest /usr/lib/postgresql/*/bin.
pub fn bindir(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = configured {
        return Ok(dir.to_owned());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|bin| bin.join("pg_ctl").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found
        .pop()
        .context("no PostgreSQL server binaries: set CLINICD_BACKUP_PG_BINDIR")
}

impl Cluster {
    /// A cluster at `root/data` (which pgBackRest fills), owned by `owner`.
    pub fn new(bindir: PathBuf, root: &Path, owner: &Owner) -> anyhow::Result<Self> {
        let data = root.join("data");
        let socket = root.join("sock");
        for dir in [&data, &socket] {
            std::fs::create_dir_all(dir)?;
            chown(dir, owner)?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self {
            bindir,
            data,
            socket,
            run_as: owner.run_as()?,
            running: false,
        })
    }

    fn pg_ctl(&self) -> std::process::Command {
        as_owner(self.run_as.as_deref(), &self.bindir.join("pg_ctl"))
    }

    /// Starts recovery and waits until the server accepts connections. The environment
    /// (with what `restore_command` needs) is inherited.
    pub async fn start(&mut self, env: &[(String, String)]) -> anyhow::Result<()> {
        let options = format!(
            "-c listen_addresses='' -p {PORT} -c unix_socket_directories='{}' -c archive_mode=off",
            self.socket.display()
        );
        let status = tokio::process::Command::from(self.pg_ctl())
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("restore.log"))
            .args(["-w", "-t", "3600", "start", "-o", &options])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .context("cannot run pg_ctl")?;
        self.running = true;
        anyhow::ensure!(
            status.success(),
            "the restored cluster did not start: {}",
            self.failure()
        );
        Ok(())
    }

    pub fn connect_options(&self, user: &str, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host(&self.socket.to_string_lossy())
            .port(PORT)
            .username(user)
            .database(database)
            .disable_statement_logging()
    }

    /// The URL form, for a server started against the cluster.
    pub fn url(&self, user: &str, database: &str) -> String {
        format!(
            "postgres://{user}@localhost/{database}?host={}&port={PORT}",
            self.socket.display()
        )
    }

    /// The server log's fatal lines (recovery messages name no data), for an error.
    pub fn failure(&self) -> String {
        let log = std::fs::read_to_string(self.data.join("restore.log")).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("FATAL") || line.contains("PANIC"))
            .collect();
        let mut text = lines
            .get(lines.len().saturating_sub(3)..)
            .unwrap_or_default()
            .join("\n");
        if text.contains("recovery ended before configured recovery target") {
            text.push_str(
                " (the archive holds no transaction after the target time: choose an earlier \
                 time or latest-backup; `clinicd backup verify` names any gap in the WAL)",
            );
        }
        text
    }

    /// Waits for recovery to reach its target and promote.
    pub async fn promoted(&self, user: &str, database: &str) -> anyhow::Result<PgPool> {
        let pool = PgPoolOptions::new()
            .max_connections(6)
            .connect_with(self.connect_options(user, database))
            .await
            .with_context(|| {
                format!("cannot connect to the restored cluster: {}", self.failure())
            })?;
        for _ in 0..36_000 {
            let recovering = sqlx::query_scalar!(r#"SELECT pg_is_in_recovery() AS "r!""#)
                .fetch_one(&pool)
                .await
                .with_context(|| format!("the restored cluster stopped: {}", self.failure()))?;
            if !recovering {
                return Ok(pool);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the restored cluster did not finish recovery within an hour")
    }

    pub async fn stop(&mut self) {
        if self.running {
            let _ = tokio::process::Command::from(self.pg_ctl())
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await;
            self.running = false;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A drill that failed half-way still stops its server (blocking: Drop cannot await).
        if self.running {
            let mut command = self.pg_ctl();
            let _ = command
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

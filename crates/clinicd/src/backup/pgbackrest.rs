//! pgBackRest, the engine under `clinicd backup`: continuous WAL archiving, full and
//! differential backups, point-in-time restore, retention and verification. We write its
//! configuration (never the passphrase: that goes to the child's environment only) and run
//! it as the cluster's owner, as pgBackRest requires.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use serde::Deserialize;

use super::passphrase::Passphrase;
use crate::config::{BackupRepo, BackupSettings};

/// Repository 1 holds the daily backups (time-based retention); repository 2, when monthly
/// retention is on, the monthly fulls (count-based). pgBackRest keeps one retention rule per
/// repository, so two tiers are two repositories; WAL is archived to both.
pub const DAILY: u8 = 1;
pub const MONTHLY: u8 = 2;

#[derive(Debug)]
pub struct PgBackRest {
    settings: BackupSettings,
    config: PathBuf,
    /// The cluster's owner when we run as root (pgBackRest must not write as root).
    run_as: Option<String>,
}

impl PgBackRest {
    /// Writes the configuration under the work directory and makes the directories the
    /// cluster's owner needs.
    pub fn prepare(settings: &BackupSettings) -> anyhow::Result<Self> {
        let owner = cluster_owner(&settings.pg_data)?;
        let run_as = owner.run_as()?;
        make_owned_dir(&settings.work_dir, &owner)?;
        if let BackupRepo::Local(dir) = &settings.repo {
            make_owned_dir(dir, &owner)?;
        }
        let config = settings.work_dir.join("pgbackrest.conf");
        std::fs::write(&config, config_text(settings))
            .with_context(|| format!("cannot write {}", config.display()))?;
        chown(&config, &owner)?;
        Ok(Self {
            settings: settings.clone(),
            config,
            run_as,
        })
    }

    /// The configuration the last backup command wrote, unchanged (for the archive commands
    /// Postgres runs, often and concurrently).
    pub fn existing(settings: &BackupSettings) -> anyhow::Result<Self> {
        let config = settings.work_dir.join("pgbackrest.conf");
        anyhow::ensure!(
            config.is_file(),
            "{} is missing: run `clinicd backup init` first",
            config.display()
        );
        let owner = cluster_owner(&settings.pg_data)?;
        Ok(Self {
            settings: settings.clone(),
            config,
            run_as: owner.run_as()?,
        })
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn repos(&self) -> Vec<u8> {
        if self.settings.retention_months > 0 {
            vec![DAILY, MONTHLY]
        } else {
            vec![DAILY]
        }
    }

    /// The command to run `pgbackrest ARGS` for our stanza, with the passphrase (and S3
    /// credentials) in its environment only.
    pub fn command(&self, passphrase: &Passphrase, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::from(as_owner(
            self.run_as.as_deref(),
            &self.settings.pgbackrest,
        ));
        command
            .arg(format!("--config={}", self.config.display()))
            .arg(format!("--stanza={}", self.settings.stanza))
            .args(args)
            .kill_on_drop(true);
        self.environment(&mut command, passphrase);
        command
    }

    /// What a child needs to reach the repository: the passphrase per repository, and for S3
    /// the credentials (pgBackRest reads `PGBACKREST_REPOn_S3_KEY` and friends).
    pub fn environment(&self, command: &mut tokio::process::Command, passphrase: &Passphrase) {
        command.envs(self.child_env(passphrase));
    }

    /// The same as pairs, for a restored cluster whose restore_command is pgBackRest's.
    pub fn child_env(&self, passphrase: &Passphrase) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for repo in self.repos() {
            env.push((
                format!("PGBACKREST_REPO{repo}_CIPHER_PASS"),
                passphrase.expose().to_owned(),
            ));
            if matches!(self.settings.repo, BackupRepo::S3 { .. }) {
                for (ours, theirs) in [
                    ("AWS_ACCESS_KEY_ID", "S3_KEY"),
                    ("AWS_SECRET_ACCESS_KEY", "S3_KEY_SECRET"),
                    ("AWS_SESSION_TOKEN", "S3_TOKEN"),
                ] {
                    if let Ok(value) = std::env::var(ours) {
                        env.push((format!("PGBACKREST_REPO{repo}_{theirs}"), value));
                    }
                }
            }
        }
        env
    }

    /// Runs to completion; the output on success, an error with pgBackRest's own message
    /// (it redacts the passphrase) otherwise.
    pub async fn run(&self, passphrase: &Passphrase, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .command(passphrase, args)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| {
                format!(
                    "cannot run {} (is pgBackRest installed?)",
                    self.settings.pgbackrest.display()
                )
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = stderr
                .lines()
                .chain(stdout.lines())
                .filter(|line| line.contains("ERROR") || line.contains("HINT"))
                .collect::<Vec<_>>()
                .join("\n");
            anyhow::bail!(
                "pgbackrest {} failed ({}): {}",
                args.first().copied().unwrap_or_default(),
                output.status,
                if message.is_empty() {
                    stderr.trim()
                } else {
                    message.trim()
                }
            );
        }
        Ok(stdout)
    }

    /// The WAL archive's file names in repository `repo` (relative to the stanza's archive).
    pub async fn archived_wal(
        &self,
        passphrase: &Passphrase,
        repo: u8,
    ) -> anyhow::Result<Vec<String>> {
        let repo_arg = format!("--repo={repo}");
        let path = format!("archive/{}", self.settings.stanza);
        let text = self
            .run(
                passphrase,
                &[&repo_arg, "repo-ls", &path, "--recurse", "--output=json"],
            )
            .await?;
        let listing: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).context("pgbackrest repo-ls printed unexpected JSON")?;
        Ok(listing
            .into_iter()
            .filter(|(_, entry)| entry.get("type").and_then(|t| t.as_str()) == Some("file"))
            .map(|(name, _)| name)
            .collect())
    }

    /// Every backup in every repository, oldest first.
    pub async fn backups(&self, passphrase: &Passphrase) -> anyhow::Result<Vec<BackupInfo>> {
        let text = self.run(passphrase, &["info", "--output=json"]).await?;
        // A repository read with the wrong passphrase decrypts to noise, which pgBackRest
        // quotes raw in its message: control characters JSON does not allow in a string.
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let stanzas: Vec<StanzaInfo> =
            serde_json::from_str(&text).context("pgbackrest info printed unexpected JSON")?;
        for repo in stanzas.iter().flat_map(|s| &s.repo) {
            repo.check()?;
        }
        let mut backups: Vec<BackupInfo> = stanzas.into_iter().flat_map(|s| s.backup).collect();
        backups.sort_by_key(|b| b.timestamp.stop);
        Ok(backups)
    }
}

/// Gaps in a repository's WAL archive, one line each: a gap makes every point in time after
/// it unreachable, and pgBackRest 2.45's `verify` checks only the WAL its backups need.
/// Segment names are `TTTTTTTTLLLLLLLLSSSSSSSS` (timeline, log, segment); after (l, s) comes
/// (l, s + 1) or, at the end of a log, (l + 1, 0), whatever the segment size.
pub fn wal_gaps(names: &[String]) -> Vec<String> {
    let mut segments: BTreeMap<(String, u32), Vec<(u32, u32)>> = BTreeMap::new();
    for name in names {
        let Some((dir, file)) = name.rsplit_once('/') else {
            continue;
        };
        let Some(segment) = file
            .get(..24)
            .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            continue;
        };
        if file.get(24..25) != Some("-") {
            continue; // .backup and .history files
        }
        let parse = |range: std::ops::Range<usize>| {
            segment
                .get(range)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        };
        let (Some(timeline), Some(log), Some(seg)) = (parse(0..8), parse(8..16), parse(16..24))
        else {
            continue;
        };
        let archive = dir.split('/').next().unwrap_or_default().to_owned();
        segments
            .entry((archive, timeline))
            .or_default()
            .push((log, seg));
    }
    let mut gaps = Vec::new();
    for ((archive, timeline), mut list) in segments {
        list.sort_unstable();
        list.dedup();
        for pair in list.windows(2) {
            let [(log, seg), next] = pair else { continue };
            if *next != (*log, seg + 1) && *next != (log + 1, 0) {
                gaps.push(format!(
                    "WAL archive {archive}, timeline {timeline}: the segments between \
                     {timeline:08X}{log:08X}{seg:08X} and {timeline:08X}{:08X}{:08X} are \
                     missing (no point in time after the gap can be restored)",
                    next.0, next.1
                ));
            }
        }
    }
    gaps
}

#[derive(Debug, Deserialize)]
struct StanzaInfo {
    #[serde(default)]
    backup: Vec<BackupInfo>,
    #[serde(default)]
    repo: Vec<RepoInfo>,
}

#[derive(Debug, Deserialize)]
struct RepoInfo {
    key: u8,
    status: RepoStatus,
}

#[derive(Debug, Deserialize)]
struct RepoStatus {
    code: u32,
    message: String,
}

impl RepoInfo {
    /// 0 is ok and 2 is "no valid backups" (a new repository); anything else is an error,
    /// named plainly: the first line of pgBackRest's message, never the noise it quotes.
    fn check(&self) -> anyhow::Result<()> {
        if matches!(self.status.code, 0 | 2) {
            return Ok(());
        }
        let first = self.status.message.lines().next().unwrap_or_default();
        let first = first.split(": key/value").next().unwrap_or(first);
        if self.status.message.contains("FormatError") || self.status.message.contains("Crypto") {
            anyhow::bail!(
                "repository {} cannot be read with this passphrase: is CLINICD_BACKUP_PASSPHRASE_FILE \
                 the one `clinicd backup init` made for CLINICD_BACKUP_REPO? ({first})",
                self.key
            );
        }
        anyhow::bail!("repository {}: {first}", self.key)
    }
}

/// One backup as `pgbackrest info` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct BackupInfo {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: Span,
    pub database: RepoKey,
    #[serde(default)]
    pub error: bool,
    pub info: Sizes,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Span {
    pub start: i64,
    pub stop: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RepoKey {
    #[serde(rename = "repo-key")]
    pub repo: u8,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sizes {
    pub size: u64,
    pub repository: RepoSize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RepoSize {
    pub size: u64,
}

/// pgBackRest's configuration: repositories, retention, encryption, where it keeps its
/// logs, and the cluster.
pub fn config_text(settings: &BackupSettings) -> String {
    let mut text = String::from("[global]\n");
    let mut repo = |n: u8, tier: &str, retention: &str| {
        match &settings.repo {
            BackupRepo::Local(dir) => {
                text.push_str(&format!("repo{n}-path={}\n", dir.join(tier).display()));
            }
            BackupRepo::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                uri_style,
                ca_file,
            } => {
                let base = prefix.trim_end_matches('/');
                // `host:port` is two options to pgBackRest.
                let (host, port) = match endpoint.rsplit_once(':') {
                    Some((host, port)) if port.parse::<u16>().is_ok() => (host, Some(port)),
                    _ => (endpoint.as_str(), None),
                };
                text.push_str(&format!(
                    "repo{n}-type=s3\nrepo{n}-path={base}/{tier}\nrepo{n}-s3-bucket={bucket}\n\
                     repo{n}-s3-endpoint={host}\nrepo{n}-s3-region={region}\n\
                     repo{n}-s3-uri-style={uri_style}\n"
                ));
                if let Some(port) = port {
                    text.push_str(&format!("repo{n}-storage-port={port}\n"));
                }
                if let Some(ca) = ca_file {
                    text.push_str(&format!("repo{n}-storage-ca-file={}\n", ca.display()));
                }
                if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                    // Instance or task role credentials.
                    text.push_str(&format!("repo{n}-s3-key-type=auto\n"));
                }
            }
        }
        // AES-256 (pgBackRest's only cipher is CBC; its files carry their own checksums,
        // which `verify` checks).
        text.push_str(&format!("repo{n}-cipher-type=aes-256-cbc\n{retention}"));
    };
    repo(
        DAILY,
        "daily",
        &format!(
            "repo{DAILY}-retention-full-type=time\nrepo{DAILY}-retention-full={}\n",
            settings.retention_days
        ),
    );
    if settings.retention_months > 0 {
        repo(
            MONTHLY,
            "monthly",
            &format!(
                "repo{MONTHLY}-retention-full-type=count\nrepo{MONTHLY}-retention-full={}\n",
                settings.retention_months
            ),
        );
    }
    let work = settings.work_dir.display();
    // gz, not zst: `verify` fails on encrypted zst repositories in 2.45 (shared/NOTES.md).
    text.push_str(&format!(
        "compress-type=gz\nstart-fast=y\nlog-level-console=warn\nlog-level-file=info\n\
         log-path={work}\nlock-path={work}\nspool-path={work}\n\n[{}]\npg1-path={}\n\
         pg1-port={}\npg1-socket-path={}\npg1-user={}\n",
        settings.stanza,
        settings.pg_data.display(),
        settings.pg_port,
        settings.pg_socket.display(),
        settings.pg_user,
    ));
    text
}

/// An OS account, for running as the cluster's owner.
#[derive(Debug, Clone)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

/// The owner of the data directory, by uid, named from /etc/passwd (read by hand: one line
/// format, and no crate we already use does it).
pub fn cluster_owner(data: &Path) -> anyhow::Result<Owner> {
    use std::os::unix::fs::MetadataExt;
    // A restore on a fresh machine names a data directory that does not exist yet: its
    // nearest existing parent (/var/lib/postgresql/15 for .../15/main) has the right owner.
    let meta = data
        .ancestors()
        .find_map(|dir| std::fs::metadata(dir).ok())
        .with_context(|| {
            format!(
                "CLINICD_BACKUP_PG_DATA {} cannot be read (is this the database host?)",
                data.display()
            )
        })?;
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(':');
            let name = parts.next()?;
            let uid: u32 = parts.nth(1)?.parse().ok()?;
            (uid == meta.uid()).then(|| name.to_owned())
        })
        .next()
        .with_context(|| {
            format!(
                "no account has uid {} (owner of {})",
                meta.uid(),
                data.display()
            )
        })?;
    Ok(Owner {
        uid: meta.uid(),
        gid: meta.gid(),
        name,
    })
}

impl Owner {
    /// The account to switch to: the owner, when we run as root and it is not root.
    pub fn run_as(&self) -> anyhow::Result<Option<String>> {
        Ok((running_as_root()? && self.uid != 0).then(|| self.name.clone()))
    }
}

/// `program`, run as `run_as` through runuser when set (pgBackRest and pg_ctl refuse root).
pub fn as_owner(run_as: Option<&str>, program: &Path) -> std::process::Command {
    match run_as {
        Some(user) => {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        }
        None => std::process::Command::new(program),
    }
}

/// Whether this process runs as root (the owner of its own /proc entry).
pub fn running_as_root() -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata("/proc/self")?.uid() == 0)
}

pub fn make_owned_dir(dir: &Path, owner: &Owner) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    chown(dir, owner)
}

pub fn chown(path: &Path, owner: &Owner) -> anyhow::Result<()> {
    if running_as_root()? {
        std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
            .with_context(|| format!("cannot give {} to {}", path.display(), owner.name))?;
    }
    Ok(())
}

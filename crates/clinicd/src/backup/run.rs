//! Dispatch of `clinicd backup`: every command but `check` is an audit event (with its
//! outcome) and a row in `backup_runs`, which the metrics read.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clinicd_audit::{Action, Outcome};
use serde_json::{Value, json};

use super::commands::Backup;
use crate::cli::BackupCommand;
use crate::cli_audit::CliAudit;
use crate::config::{BackupEnv, Settings};

/// What one command did: its label (when it names a backup), its summary, whether it found
/// every check passing, and the text to print.
struct Done {
    label: Option<String>,
    summary: Value,
    ok: bool,
    text: String,
}

pub async fn command(settings: Settings, command: BackupCommand) -> anyhow::Result<()> {
    if let BackupCommand::Check = command {
        return if super::check(&settings).await? {
            Ok(())
        } else {
            anyhow::bail!("a backup requirement failed (the FAIL lines above)")
        };
    }
    let env = BackupEnv::from_env().map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = name(&command);
    let live = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(settings.database.connect_options()?)
        .await;
    let live = match (live, &command) {
        (Ok(pool), _) => Some(pool),
        // A disaster restore: the database that would hold its audit event is what was lost.
        (Err(error), BackupCommand::Restore { .. }) => {
            eprintln!(
                "clinicd: warning: the configured database is unreachable ({error}); the \
                 restore's record is written into the restored data directory instead"
            );
            None
        }
        (Err(error), _) => return Err(error).context("cannot reach the configured database"),
    };
    let audit = match &live {
        Some(pool) => {
            let keyring = Arc::new(crate::keys::keyring(&settings.keys, pool.clone()).await?);
            keyring.bootstrap().await?;
            Some(CliAudit::start(pool.clone(), keyring, name))
        }
        None => None,
    };
    let started = Utc::now();
    let provider = crate::keys::provider(&settings.keys).await?;
    let result = match command {
        BackupCommand::Init => Backup::init(env, provider.as_ref()).await.map(|_| Done {
            label: None,
            summary: json!({ "initialised": true }),
            ok: true,
            text: "backup repository ready: WAL archiving reaches it\n".into(),
        }),
        command => match Backup::open(env, provider.as_ref()).await {
            Ok(backup) => run(&backup, &settings, command).await,
            Err(error) => Err(error),
        },
    };
    let finished = Utc::now();
    let (outcome, summary) = match &result {
        Ok(done) if done.ok => (Outcome::Success, done.summary.clone()),
        Ok(done) => (Outcome::Failure, done.summary.clone()),
        Err(error) => (Outcome::Error, json!({ "error": format!("{error:#}") })),
    };
    let label = result.as_ref().ok().and_then(|d| d.label.clone());
    match (&live, &audit) {
        (Some(pool), Some(audit)) => {
            record_run(
                pool,
                name,
                label.as_deref(),
                started,
                finished,
                outcome,
                &summary,
            )
            .await?;
            audit
                .record_outcome(
                    Action::Backup,
                    outcome,
                    "backup",
                    json!({ "label": label, "summary": summary }),
                )
                .await?;
        }
        _ => write_offline_record(name, &summary, started, finished),
    }
    let done = result?;
    crate::keys::write_stdout(&done.text)?;
    anyhow::ensure!(done.ok, "{name}: checks failed (the lines above)");
    Ok(())
}

fn name(command: &BackupCommand) -> &'static str {
    match command {
        BackupCommand::Check => "backup check",
        BackupCommand::Init => "backup init",
        BackupCommand::Now { .. } => "backup now",
        BackupCommand::List => "backup list",
        BackupCommand::Verify => "backup verify",
        BackupCommand::Restore { .. } => "backup restore",
        BackupCommand::Drill { .. } => "backup drill",
        BackupCommand::ArchivePush { .. } => "backup archive-push",
        BackupCommand::ArchiveGet { .. } => "backup archive-get",
    }
}

async fn run(backup: &Backup, settings: &Settings, command: BackupCommand) -> anyhow::Result<Done> {
    match command {
        BackupCommand::Now { kind, monthly } => {
            let summary = backup.now(settings, &kind, monthly).await?;
            Ok(Done {
                label: summary
                    .get("label")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                text: format!("{summary}\n"),
                summary,
                ok: true,
            })
        }
        BackupCommand::List => Ok(Done {
            label: None,
            summary: json!({}),
            ok: true,
            text: backup.list().await?,
        }),
        BackupCommand::Verify => {
            let (problems, summary) = backup.verify().await?;
            let mut text = problems
                .iter()
                .map(|p| format!("FAIL    {p}\n"))
                .collect::<String>();
            text.push_str(&format!("{summary}\n"));
            Ok(Done {
                label: None,
                ok: problems.is_empty(),
                summary: json!({ "summary": summary, "problems": problems }),
                text,
            })
        }
        BackupCommand::Restore { to, pg_data } => {
            let summary = backup.restore(parse_target(&to)?, &pg_data).await?;
            Ok(Done {
                label: summary
                    .get("label")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                text: format!(
                    "{summary}\nrestored: start the cluster on {} with clinicd's environment \
                     (its restore_command is `clinicd backup archive-get`); it promotes when \
                     recovery reaches the target\n",
                    pg_data.display()
                ),
                summary,
                ok: true,
            })
        }
        BackupCommand::Drill { to } => {
            let target = match to.as_deref() {
                Some(to) => parse_target(to)?,
                None => None,
            };
            let report = super::drill::drill(backup, settings, target).await?;
            let mut text = report
                .problems
                .iter()
                .map(|p| format!("FAIL    {p}\n"))
                .collect::<String>();
            text.push_str(&format!(
                "drill of {}: {} tables ({} rows) compared, {} audit events verified, {} \
                 patients decrypted, {} files compared; RTO {:.1} s (restore {:.1} s, then \
                 clinicd answering), checks {:.1} s; RPO {}\n",
                report.label,
                report.tables_checked,
                report.rows_checked,
                report.audit_events_verified,
                report.patients_decrypted,
                report.files_compared,
                report.rto_seconds,
                report.restore_seconds,
                report.checks_seconds,
                report.rpo_seconds.map_or_else(
                    || "unknown (nothing archived yet)".to_owned(),
                    |s| format!("{s:.1} s")
                ),
            ));
            let summary = serde_json::to_value(&report)?;
            text.push_str(&format!("{summary}\n"));
            Ok(Done {
                label: Some(report.label.clone()),
                ok: report.problems.is_empty(),
                summary,
                text,
            })
        }
        BackupCommand::Check
        | BackupCommand::Init
        | BackupCommand::ArchivePush { .. }
        | BackupCommand::ArchiveGet { .. } => anyhow::bail!("not run here"),
    }
}

/// `--to`: an RFC 3339 time, or `latest-backup` (the newest backup's restore point).
pub fn parse_target(value: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    if value == "latest-backup" {
        return Ok(None);
    }
    let time = DateTime::parse_from_rfc3339(value).map_err(|_| {
        anyhow::anyhow!(
            "--to must be an RFC 3339 time such as 2026-12-03T09:30:00Z, or latest-backup"
        )
    })?;
    let time = time.with_timezone(&Utc);
    anyhow::ensure!(time <= Utc::now(), "--to {value} is in the future");
    Ok(Some(time))
}

async fn record_run(
    db: &sqlx::PgPool,
    name: &str,
    label: Option<&str>,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    outcome: Outcome,
    summary: &Value,
) -> anyhow::Result<()> {
    let Some(command) = name
        .strip_prefix("backup ")
        .filter(|c| matches!(*c, "now" | "verify" | "drill" | "restore"))
    else {
        return Ok(());
    };
    let outcome = if outcome == Outcome::Success {
        "ok"
    } else {
        "failed"
    };
    sqlx::query!(
        "INSERT INTO backup_runs (command, label, started_at, finished_at, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        command,
        label,
        started,
        finished,
        outcome,
        summary
    )
    .execute(db)
    .await
    .context("cannot record the backup run")?;
    Ok(())
}

/// The restore's record when no database can hold it: beside the restore, for the incident
/// file.
fn write_offline_record(
    name: &str,
    summary: &Value,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
) {
    let record = json!({
        "command": name,
        "started_at": started,
        "finished_at": finished,
        "summary": summary,
    });
    let path = summary
        .get("pg_data")
        .and_then(Value::as_str)
        .map(|dir| std::path::Path::new(dir).join("clinicd_restore_record.json"));
    match path.map(|p| std::fs::write(&p, format!("{record}\n")).map(|()| p)) {
        Some(Ok(path)) => eprintln!("clinicd: the restore's record is in {}", path.display()),
        _ => eprintln!("clinicd: the restore's record (file it with the incident): {record}"),
    }
}

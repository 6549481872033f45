use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clinicd::cli::{
    AdminCommand, AuditCommand, BackupCommand, Cli, Command, FilesCommand, ImportCommand,
    KeysCommand, LifecycleCommand,
};
use clinicd::cli_audit::CliAudit;
use clinicd::{Application, Settings, keys, startup, telemetry};
use clinicd_audit::Action;

/// The OpenAPI document on stdout, for client generators and schema-driven fuzzers.
fn print_openapi() -> ExitCode {
    match serde_json::to_string_pretty(&clinicd_api::docs::document()) {
        Ok(text) if writeln!(std::io::stdout().lock(), "{text}").is_ok() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Two rustls providers are compiled in (aws-lc-rs for rustls and the AWS SDK, and possibly
    // ring through a dependency); pick one explicitly or rustls panics on first use.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    if let Some(Command::Openapi) = cli.command {
        return print_openapi();
    }
    // Rebuilding the master key comes first after a disaster: no configuration exists yet.
    if let Some(Command::Keys(KeysCommand::EscrowRebuild { out, shares })) = &cli.command {
        return match clinicd::escrow::rebuild(shares, out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("clinicd: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Postgres runs these for every WAL segment: they read only the key provider's and the
    // backup's variables, never the server's secrets.
    if let Some(Command::Backup(
        BackupCommand::ArchivePush { .. } | BackupCommand::ArchiveGet { .. },
    )) = &cli.command
    {
        return archive(cli.command);
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprint!("clinicd: {error}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        eprintln!("clinicd: configuration is valid");
        return ExitCode::SUCCESS;
    }
    if let Err(error) = telemetry::init(&settings.log_filter) {
        eprintln!("clinicd: cannot initialise logging: {error}");
        return ExitCode::FAILURE;
    }
    let result = actix_web::rt::System::new().block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(settings).await,
            Command::Migrate => migrate(settings).await,
            Command::Openapi => Ok(()),
            Command::Keys(command) => keys_command(settings, command).await,
            Command::Admin(command) => admin_command(settings, command).await,
            Command::Audit(command) => audit_command(settings, command).await,
            Command::Import(command) => import_command(settings, command).await,
            Command::Files(command) => files_command(settings, command).await,
            Command::Backup(command) => clinicd::backup::run::command(settings, command).await,
            Command::Lifecycle(command) => lifecycle_command(settings, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "clinicd stopped with an error");
            eprintln!("clinicd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn archive(command: Option<Command>) -> ExitCode {
    let args = match command {
        Some(Command::Backup(BackupCommand::ArchivePush { wal })) => {
            vec!["archive-push".into(), wal]
        }
        Some(Command::Backup(BackupCommand::ArchiveGet {
            segment,
            destination,
        })) => vec!["archive-get".into(), segment, destination],
        _ => return ExitCode::FAILURE,
    };
    let env = match clinicd::config::BackupEnv::from_env() {
        Ok(env) => env,
        Err(error) => {
            eprint!("clinicd: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("clinicd: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(clinicd::backup::commands::archive(env, &args)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("clinicd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let mode = settings.mode;
    let app = Application::build(settings).await?;
    tracing::info!(
        mode = ?mode,
        api_port = app.api_port(),
        metrics_port = app.metrics_port(),
        redirect_port = app.redirect_port(),
        "clinicd listening"
    );
    app.run_until_stopped().await?;
    Ok(())
}

async fn connect(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    let options = settings.database.connect_options()?;
    // Re-keying holds its advisory lock and a batch's transaction, and key look-ups need a
    // third connection.
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?)
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    startup::MIGRATOR.run(&connect(&settings).await?).await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn keys_command(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    let pool = connect(&settings).await?;
    if settings.database.migrate_on_start {
        startup::MIGRATOR.run(&pool).await?;
    }
    let keyring = std::sync::Arc::new(keys::keyring(&settings.keys, pool.clone()).await?);
    let (name, done) = match command {
        KeysCommand::Status => return keys::print_status(&keyring).await,
        KeysCommand::RotateKek => ("keys rotate-kek", keys::rotate_kek(&keyring).await?),
        KeysCommand::RotateBranch { purpose } => (
            "keys rotate-branch",
            keys::rotate_branch(&keyring, purpose).await?,
        ),
        KeysCommand::Rekey { job } => ("keys rekey", keys::rekey(&keyring, &job).await?),
        KeysCommand::Reindex { job } => ("keys reindex", keys::reindex(&keyring, &job).await?),
        KeysCommand::EscrowSplit {
            threshold,
            shares,
            out,
        } => (
            "keys escrow-split",
            clinicd::escrow::split(&settings.keys, threshold, shares, &out)?,
        ),
        KeysCommand::EscrowRebuild { .. } => anyhow::bail!("escrow-rebuild runs before start-up"),
    };
    // Key management changes security state: each change is an audit event.
    keyring.bootstrap().await?;
    CliAudit::start(pool, keyring, name)
        .record(Action::KeyRotation, "keys", done)
        .await
}

async fn audit_command(settings: Settings, command: AuditCommand) -> anyhow::Result<()> {
    let pool = connect(&settings).await?;
    let keyring = keys::keyring(&settings.keys, pool.clone()).await?;
    if let AuditCommand::Maintain = command {
        return audit_maintain(&settings, pool, keyring).await;
    }
    let checkpoint = startup::checkpoint_store(&settings).await.latest().await?;
    let report = clinicd_audit::verify::verify_with(&pool, &keyring, checkpoint).await?;
    // One line, so it stands apart from the JSON log lines that share stdout.
    let text = format!("{}\n", serde_json::to_string(&report)?);
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
    match (report.first_broken_seq, report.problem) {
        (Some(seq), problem) => anyhow::bail!(
            "the audit trail is broken at sequence {seq}: {}",
            problem.unwrap_or_default()
        ),
        (None, _) => Ok(()),
    }
}

async fn audit_maintain(
    settings: &Settings,
    pool: sqlx::PgPool,
    keyring: clinicd_crypto::Keyring,
) -> anyhow::Result<()> {
    use clinicd_audit::retention::{archive_expired, ensure_partitions_ahead};
    let keyring = std::sync::Arc::new(keyring);
    let now = chrono::Utc::now();
    let created = ensure_partitions_ahead(&pool, now, 12).await?;
    let writer = clinicd_audit::AuditWriter::start(
        pool.clone(),
        keyring.clone(),
        clinicd_audit::WriterSettings::default(),
    );
    let archived = archive_expired(
        &pool,
        &keyring,
        &writer,
        startup::archive_store(settings).await.as_ref(),
        settings.audit.retention_years,
        now,
    )
    .await?;
    let summary = serde_json::json!({ "partitions_created": created, "archived": archived });
    // Partitions made and archived: a change to the trail's own storage, in the trail.
    CliAudit::start(pool, keyring, "audit maintain")
        .record(Action::ConfigChange, "audit_partitions", summary.clone())
        .await?;
    let text = format!("{summary}\n");
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
    Ok(())
}

async fn import_command(settings: Settings, command: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Patients { file, dry_run } = command;
    // Each row in flight holds a transaction and may need a second connection for its keys.
    let connections = u32::try_from(clinicd::import::IN_FLIGHT * 2 + 2).unwrap_or(18);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(settings.database.connect_options()?)
        .await?;
    if settings.database.migrate_on_start {
        startup::MIGRATOR.run(&pool).await?;
    }
    let keyring = std::sync::Arc::new(keys::keyring(&settings.keys, pool.clone()).await?);
    keyring.bootstrap().await?;
    let audit = CliAudit::start(pool.clone(), keyring.clone(), "import patients");
    let store = clinicd_domain::PatientStore::new(pool, keyring.clone());
    let stdout = std::io::stdout();
    let mut report = std::io::BufWriter::new(stdout.lock());
    let summary = clinicd::import::import_patients(
        &store,
        &audit,
        &file,
        dry_run,
        chrono::Utc::now().date_naive(),
        &mut report,
    )
    .await?;
    std::io::Write::write_all(
        &mut report,
        format!("{}\n", serde_json::to_string(&summary)?).as_bytes(),
    )?;
    std::io::Write::flush(&mut report)?;
    Ok(())
}

async fn files_command(settings: Settings, command: FilesCommand) -> anyhow::Result<()> {
    let pool = connect(&settings).await?;
    if settings.database.migrate_on_start {
        startup::MIGRATOR.run(&pool).await?;
    }
    let keyring = std::sync::Arc::new(keys::keyring(&settings.keys, pool.clone()).await?);
    keyring.bootstrap().await?;
    let patients = clinicd_domain::PatientStore::new(pool.clone(), keyring.clone());
    let audit = CliAudit::start(pool.clone(), keyring.clone(), "files import");
    let keyring_for_audit = keyring.clone();
    let files = clinicd_files::Files::new(
        pool.clone(),
        keyring,
        startup::file_store(&settings).await?,
        settings.http.files.clone(),
    );
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let failed = match command {
        FilesCommand::Import {
            dir,
            map,
            delete_originals,
        } => {
            let import = clinicd::file_import::Import {
                files: &files,
                patients: &patients,
                dir: &dir,
                delete_originals,
                audit: &audit,
            };
            let summary = import.run(&map, &mut out).await?;
            writeln!(out, "{}", serde_json::to_string(&summary)?)?;
            summary.failed
        }
        FilesCommand::Purge => {
            let audit = CliAudit::start(pool.clone(), keyring_for_audit.clone(), "files purge");
            let purged = files
                .purge(chrono::Utc::now(), &|file, patient| {
                    clinicd_files::service::Audited {
                        recorder: audit.recorder(Action::Delete, "file"),
                        status: None,
                        note: audit.note(
                            file,
                            Some(patient),
                            serde_json::json!({ "purged": true }),
                        ),
                    }
                })
                .await?;
            // Files a legal hold keeps are left alone (docs/lifecycle.md); say how many.
            let held: i64 = sqlx::query_scalar!(
                r#"SELECT count(*) AS "n!" FROM files WHERE purge_after <= now() AND legal_hold_for(patient_id) IS NOT NULL"#
            )
            .fetch_one(&pool)
            .await?;
            writeln!(
                out,
                "{}",
                serde_json::json!({ "purged": purged, "kept_by_legal_hold": held })
            )?;
            0
        }
    };
    out.flush()?;
    if failed > 0 {
        anyhow::bail!("{failed} file(s) could not be imported (see the report)");
    }
    Ok(())
}

async fn lifecycle_command(settings: Settings, command: LifecycleCommand) -> anyhow::Result<()> {
    let pool = connect(&settings).await?;
    if settings.database.migrate_on_start {
        startup::MIGRATOR.run(&pool).await?;
    }
    let keyring = std::sync::Arc::new(keys::keyring(&settings.keys, pool.clone()).await?);
    keyring.bootstrap().await?;
    let files = startup::file_store(&settings).await?;
    let lifecycle = startup::lifecycle(&settings, &pool, &keyring, files).await;
    let audit = CliAudit::start(pool.clone(), keyring.clone(), "lifecycle");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match command {
        LifecycleCommand::Report => {
            // Reads dates of birth (for the minors' rule) of the patients past the other rules:
            // an access to PHI, in the trail before anything is printed.
            let due = clinicd_lifecycle::retention::report(&lifecycle, chrono::Utc::now()).await?;
            let held = due.iter().filter(|d| d.hold_id.is_some()).count();
            let summary = serde_json::json!({ "due": due.len(), "held": held,
                "policy": lifecycle.policy });
            audit
                .record(Action::View, "retention_report", summary.clone())
                .await?;
            for item in &due {
                writeln!(out, "{}", serde_json::to_string(item)?)?;
            }
            writeln!(out, "{summary}")?;
        }
        LifecycleCommand::Holds => {
            let mut conn = pool.acquire().await?;
            let holds = clinicd_lifecycle::holds::list(&mut conn, true).await?;
            audit
                .record(
                    Action::View,
                    "legal_hold",
                    serde_json::json!({ "returned": holds.len() }),
                )
                .await?;
            for hold in &holds {
                writeln!(out, "{}", serde_json::to_string(hold)?)?;
            }
        }
        LifecycleCommand::Ledger => {
            let replay = clinicd_lifecycle::ledger::replay(&lifecycle).await?;
            clinicd_lifecycle::erasure::finish(&lifecycle).await?;
            writeln!(out, "{}", serde_json::to_string(&replay)?)?;
        }
    }
    out.flush()?;
    Ok(())
}

async fn admin_command(settings: Settings, command: AdminCommand) -> anyhow::Result<()> {
    let pool = connect(&settings).await?;
    if settings.database.migrate_on_start {
        startup::MIGRATOR.run(&pool).await?;
    }
    let keyring = std::sync::Arc::new(keys::keyring(&settings.keys, pool.clone()).await?);
    keyring.bootstrap().await?;
    match command {
        AdminCommand::Create { username, email } => {
            let audit = CliAudit::start(pool.clone(), keyring, "admin create");
            clinicd::admin::create(&settings, &pool, &audit, &username, email.as_deref()).await
        }
        AdminCommand::Unlock { username } => {
            let audit = CliAudit::start(pool.clone(), keyring.clone(), "admin unlock");
            let identity = startup::identity(&settings, pool.clone(), keyring)?;
            clinicd::admin::unlock(&identity, &audit, &username).await
        }
        AdminCommand::Approve { proposal } => {
            let audit = CliAudit::start(pool.clone(), keyring.clone(), "admin approve");
            let identity = startup::identity(&settings, pool.clone(), keyring)?;
            clinicd::admin::approve(&settings, &identity, &audit, proposal).await
        }
    }
}

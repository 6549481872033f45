//! The backup state as Prometheus metrics, read from `backup_runs` every minute by each
//! instance: when the last backup, verify and drill succeeded, and whether the last of each
//! failed. The alert on a stale backup (deploy/prometheus/clinicd-backup.rules.yml) is a rule
//! on these, so it fires even when the backup job stops running at all.

use std::time::Duration;

use prometheus::{GaugeVec, IntGaugeVec, Opts};
use sqlx::PgPool;

const REFRESH: Duration = Duration::from_secs(60);
const COMMANDS: [&str; 3] = ["now", "verify", "drill"];

#[derive(Debug, Clone)]
pub struct BackupMetrics {
    last_success: GaugeVec,
    last_failed: IntGaugeVec,
}

impl BackupMetrics {
    pub fn register(metrics: &clinicd_api::metrics::Metrics) -> Result<Self, prometheus::Error> {
        let last_success = GaugeVec::new(
            Opts::new(
                "backup_last_success_timestamp_seconds",
                "When the last successful backup command finished (Unix time; 0 never), by command",
            ),
            &["command"],
        )?;
        let last_failed = IntGaugeVec::new(
            Opts::new(
                "backup_last_run_failed",
                "1 if the newest run of the backup command failed, by command",
            ),
            &["command"],
        )?;
        metrics.register(Box::new(last_success.clone()))?;
        metrics.register(Box::new(last_failed.clone()))?;
        for command in COMMANDS {
            last_success.with_label_values(&[command]).set(0.0);
            last_failed.with_label_values(&[command]).set(0);
        }
        Ok(Self {
            last_success,
            last_failed,
        })
    }

    /// Reads the runs once.
    pub async fn refresh(&self, db: &PgPool) -> Result<(), sqlx::Error> {
        let rows = sqlx::query!(
            r#"SELECT command AS "command!",
                      max(finished_at) FILTER (WHERE outcome = 'ok') AS last_ok,
                      (array_agg(outcome ORDER BY finished_at DESC))[1] AS "last_outcome!"
               FROM backup_runs WHERE command IN ('now', 'verify', 'drill') GROUP BY command"#
        )
        .fetch_all(db)
        .await?;
        for row in rows {
            if let Some(at) = row.last_ok {
                self.last_success
                    .with_label_values(&[row.command.as_str()])
                    .set(at.timestamp() as f64);
            }
            self.last_failed
                .with_label_values(&[row.command.as_str()])
                .set(i64::from(row.last_outcome == "failed"));
        }
        Ok(())
    }

    /// Refreshes every minute for the life of the server.
    pub fn follow(self, db: PgPool) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tick.tick().await;
                if let Err(error) = self.refresh(&db).await {
                    tracing::warn!(error = %error, "cannot read the backup runs for the metrics");
                }
            }
        });
    }
}

//! Detection of misuse by insiders: rules over the audit trail, run on a schedule once across
//! instances (the job queue's crontab). Each finding becomes an alert with its evidence (audit
//! sequence numbers, counts); alert text names the staff member and the numbers, never a
//! patient or anything read.
//!
//! | rule | finds | dedup |
//! |---|---|---|
//! | `volume` | distinct patients touched in the window above max(minimum, factor × baseline); the baseline is the user's own hourly average over 30 days, or their role peers' when the user has under 10 active hours | user, day |
//! | `off_hours` | patient access outside the working hours (in the clinic's time zone) | user, day |
//! | `family_name` | access to a patient whose family-name blind index equals the user's family name's | user, patient, day |
//! | `watched_patient` | access to a patient the privacy office watches (VIP, employee) | user, patient, day |
//! | `break_glass` | an emergency access granted | grant |
//! | `mass_export` | exports and downloads in the window above a limit | user, day |
//! | `dormant_account` | a login after no login for `dormant_days` | user, day |
//! | `two_networks` | one account active from two networks (/16 IPv4, /48 IPv6) within 30 min | user, day |

use std::time::Duration;

use chrono::{DateTime, Utc};
use clinicd_crypto::Keyring;
use clinicd_crypto::blind_index::BlindIndexSpec;
use sqlx::PgPool;
use uuid::Uuid;

use crate::alerts::{self, Channels, NewAlert, Severity};

/// The rules' settings.
#[derive(Debug, Clone)]
pub struct DetectSettings {
    /// How far back each run looks (runs overlap; alerts deduplicate).
    pub window: Duration,
    pub volume_min: u32,
    pub volume_factor: u32,
    /// Working hours `[start, end)` in `timezone`; `None` turns the rule off.
    pub working_hours: Option<(u32, u32)>,
    /// An IANA zone name Postgres knows (`America/Chicago`).
    pub timezone: String,
    pub export_max: u32,
    pub dormant_days: u32,
}

impl Default for DetectSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3600),
            volume_min: 100,
            volume_factor: 5,
            working_hours: Some((6, 20)),
            timezone: "UTC".into(),
            export_max: 20,
            dormant_days: 90,
        }
    }
}

/// What one run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: u32,
    pub new_alerts: u32,
}

/// Runs every rule over the last `window` before `now` and raises what it finds.
pub async fn run(
    db: &PgPool,
    keyring: &Keyring,
    family_name: &BlindIndexSpec,
    settings: &DetectSettings,
    channels: Channels,
    now: DateTime<Utc>,
) -> Result<Report, DetectError> {
    let since =
        now - chrono::Duration::from_std(settings.window).unwrap_or(chrono::Duration::hours(1));
    let mut found = Vec::new();
    found.extend(volume(db, settings, since, now).await?);
    if let Some(hours) = settings.working_hours {
        found.extend(off_hours(db, settings, hours, since, now).await?);
    }
    found.extend(family_names(db, keyring, family_name, since, now).await?);
    found.extend(watched(db, since, now).await?);
    found.extend(break_glass(db, since, now).await?);
    found.extend(mass_export(db, settings, since, now).await?);
    found.extend(dormant(db, settings, since, now).await?);
    found.extend(two_networks(db, since, now).await?);
    let mut report = Report {
        findings: u32::try_from(found.len()).unwrap_or(u32::MAX),
        new_alerts: 0,
    };
    for alert in found {
        let mut tx = db.begin().await?;
        let raised = alerts::raise(&mut tx, &alert, channels, now).await?;
        tx.commit().await?;
        if raised.new {
            report.new_alerts += 1;
            tracing::warn!(alert = %raised.id, rule = %alert.rule, "security alert raised");
        }
    }
    Ok(report)
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Crypto(#[from] clinicd_crypto::CryptoError),
}

fn day(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%d").to_string()
}

fn user_alert(
    rule: &str,
    severity: Severity,
    user: Uuid,
    dedup: String,
    summary: String,
    evidence: serde_json::Value,
) -> NewAlert {
    NewAlert {
        rule: rule.into(),
        severity,
        dedup_key: dedup,
        subject_user: Some(user),
        subject_ip: None,
        summary,
        evidence,
    }
}

async fn volume(
    db: &PgPool,
    settings: &DetectSettings,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<NewAlert>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH recent AS (
               SELECT e.actor_user_id AS u, count(DISTINCT d.patient_id) AS n,
                      (array_agg(DISTINCT e.seq ORDER BY e.seq DESC))[1:20] AS seqs
                 FROM audit_disclosures d
                 JOIN audit_events e ON e.seq = d.seq AND e.occurred_at = d.occurred_at
                WHERE d.occurred_at > $1 AND d.occurred_at <= $2
                  AND e.actor_user_id IS NOT NULL AND e.outcome = 'success'
                GROUP BY 1),
           hourly AS (
               SELECT e.actor_user_id AS u, date_trunc('hour', d.occurred_at) AS h, count(DISTINCT d.patient_id) AS n
                 FROM audit_disclosures d
                 JOIN audit_events e ON e.seq = d.seq AND e.occurred_at = d.occurred_at
                WHERE d.occurred_at > $1 - interval '30 days' AND d.occurred_at <= $1
                  AND e.actor_user_id IS NOT NULL AND e.outcome = 'success'
                GROUP BY 1, 2),
           own AS (SELECT u, avg(n)::float8 AS avg, count(*) AS hours FROM hourly GROUP BY u),
           peers AS (
               SELECT r.u, avg(h.n)::float8 AS avg
                 FROM recent r
                 JOIN user_roles mine ON mine.user_id = r.u
                 JOIN user_roles theirs ON theirs.role_name = mine.role_name AND theirs.user_id <> r.u
                 JOIN hourly h ON h.u = theirs.user_id
                GROUP BY r.u)
           SELECT r.u AS "user!", usr.username AS "username!", r.n AS "n!", r.seqs AS "seqs!",
                  CASE WHEN coalesce(o.hours, 0) >= 10 THEN o.avg ELSE p.avg END AS baseline
             FROM recent r
             JOIN users usr ON usr.id = r.u
             LEFT JOIN own o ON o.u = r.u
             LEFT JOIN peers p ON p.u = r.u"#,
        since,
        now
    )
    .fetch_all(db)
    .await?;
    let mut found = Vec::new();
    for row in rows {
        let baseline = row.baseline.unwrap_or(0.0);
        let threshold =
            f64::from(settings.volume_min).max(baseline * f64::from(settings.volume_factor));
        #[expect(
            clippy::cast_precision_loss,
            reason = "counts of patients are far below 2^52"
        )]
        let n = row.n as f64;
        if n > threshold {
            found.push(user_alert(
                "volume",
                Severity::High,
                row.user,
                format!("volume:{}:{}", row.user, day(now)),
                format!(
                    "user {} touched {} distinct patients in {} min (threshold {:.0}, baseline {:.1} per hour)",
                    row.username,
                    row.n,
                    settings.window.as_secs() / 60,
                    threshold,
                    baseline
                ),
                serde_json::json!({ "count": row.n, "threshold": threshold, "baseline_per_hour": baseline,
                                    "window_secs": settings.window.as_secs(), "audit_seqs": row.seqs }),
            ));
        }
    }
    Ok(found)
}

async fn off_hours(
    db: &PgPool,
    settings: &DetectSettings,
    (start, end): (u32, u32),
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<NewAlert>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT e.actor_user_id AS "user!", u.username AS "username!", count(DISTINCT e.seq) AS "n!",
                  count(DISTINCT d.patient_id) AS "patients!", (array_agg(DISTINCT e.seq ORDER BY e.seq DESC))[1:20] AS "seqs!"
             FROM audit_disclosures d
             JOIN audit_events e ON e.seq = d.seq AND e.occurred_at = d.occurred_at
             JOIN users u ON u.id = e.actor_user_id
            WHERE d.occurred_at > $1 AND d.occurred_at <= $2 AND e.outcome = 'success'
              AND NOT (extract(hour FROM d.occurred_at AT TIME ZONE $3)::int >= $4
                       AND extract(hour FROM d.occurred_at AT TIME ZONE $3)::int < $5)
            GROUP BY 1, 2"#,
        since,
        now,
        settings.timezone,
        i32::try_from(start).unwrap_or(0),
        i32::try_from(end).unwrap_or(24)
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            user_alert(
                "off_hours",
                Severity::Medium,
                row.user,
                format!("off_hours:{}:{}", row.user, day(now)),
                format!(
                    "user {} accessed {} patient(s) outside working hours {start:02}:00-{end:02}:00 {}",
                    row.username, row.patients, settings.timezone
                ),
                serde_json::json!({ "events": row.n, "patients": row.patients, "audit_seqs": row.seqs }),
            )
        })
        .collect())
}

async fn family_names(
    db: &PgPool,
    keyring: &Keyring,
    spec: &BlindIndexSpec,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<NewAlert>, DetectError> {
    let users = sqlx::query!(
        r#"SELECT DISTINCT u.id, u.username, u.display_name
             FROM audit_disclosures d
             JOIN audit_events e ON e.seq = d.seq AND e.occurred_at = d.occurred_at
             JOIN users u ON u.id = e.actor_user_id
            WHERE d.occurred_at > $1 AND d.occurred_at <= $2 AND e.outcome = 'success'"#,
        since,
        now
    )
    .fetch_all(db)
    .await?;
    let mut found = Vec::new();
    for user in users {
        let Some(family) = user.display_name.split_whitespace().last() else {
            continue;
        };
        let Some(index) = keyring.blind_index(spec, family).await? else {
            continue;
        };
        let rows = sqlx::query!(
            r#"SELECT d.patient_id AS "patient!", count(*) AS "n!", (array_agg(e.seq ORDER BY e.seq DESC))[1:20] AS "seqs!"
                 FROM audit_disclosures d
                 JOIN audit_events e ON e.seq = d.seq AND e.occurred_at = d.occurred_at
                 JOIN patients p ON p.id = d.patient_id
                WHERE d.occurred_at > $1 AND d.occurred_at <= $2 AND e.actor_user_id = $3 AND e.outcome = 'success'
                  AND p.family_name_bidx = $4 AND p.family_name_bidx_version = $5
                GROUP BY 1"#,
            since,
            now,
            user.id,
            index.value,
            i32::try_from(index.key_version).unwrap_or(i32::MAX)
        )
        .fetch_all(db)
        .await?;
        for row in rows {
            found.push(user_alert(
                "family_name",
                Severity::Medium,
                user.id,
                format!("family_name:{}:{}:{}", user.id, row.patient, day(now)),
                format!(
                    "user {} accessed patient {} who may share their family name ({} event(s))",
                    user.username, row.patient, row.n
                ),
                serde_json::json!({ "patient_id": row.patient, "events": row.n, "audit_seqs": row.seqs }),
            ));
        }
    }
    Ok(found)
}

async fn watched(
    db: &PgPool,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<NewAlert>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT e.actor_user_id AS "user!", u.username AS "username!", d.patient_id AS "patient!",
                  w.label AS "label!", count(*) AS "n!", (array_agg(e.seq ORDER BY e.seq DESC))[1:20] AS "seqs!"
             FROM audit_disclosures d
             JOIN watched_patients w ON w.patient_id = d.patient_id
             JOIN audit_events e ON e.seq = d.seq AND e.occurred_at = d.occurred_at
             JOIN users u ON u.id = e.actor_user_id
            WHERE d.occurred_at > $1 AND d.occurred_at <= $2 AND e.outcome = 'success'
            GROUP BY 1, 2, 3, 4"#,
        since,
        now
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            user_alert(
                "watched_patient",
                Severity::High,
                row.user,
                format!("watched:{}:{}:{}", row.user, row.patient, day(now)),
                format!(
                    "user {} accessed watched patient {} ({}), {} event(s)",
                    row.username, row.patient, row.label, row.n
                ),
                serde_json::json!({ "patient_id": row.patient, "label": row.label, "events": row.n, "audit_seqs": row.seqs }),
            )
        })
        .collect())
}

async fn break_glass(
    db: &PgPool,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<NewAlert>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT g.id, g.user_id, u.username, g.patient_id, g.granted_at, g.expires_at
             FROM break_glass_grants g JOIN users u ON u.id = g.user_id
            WHERE g.granted_at > $1 AND g.granted_at <= $2"#,
        since,
        now
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            user_alert(
                "break_glass",
                Severity::Medium,
                row.user_id,
                format!("break_glass:{}", row.id),
                format!(
                    "user {} used break-the-glass on patient {}; review it",
                    row.username, row.patient_id
                ),
                serde_json::json!({ "grant_id": row.id, "patient_id": row.patient_id,
                                    "granted_at": row.granted_at, "expires_at": row.expires_at }),
            )
        })
        .collect())
}

async fn mass_export(
    db: &PgPool,
    settings: &DetectSettings,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<NewAlert>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT e.actor_user_id AS "user!", u.username AS "username!", count(*) AS "n!",
                  (array_agg(e.seq ORDER BY e.seq DESC))[1:20] AS "seqs!"
             FROM audit_events e JOIN users u ON u.id = e.actor_user_id
            WHERE e.occurred_at > $1 AND e.occurred_at <= $2 AND e.outcome = 'success'
              AND e.action IN ('export', 'download')
            GROUP BY 1, 2 HAVING count(*) > $3"#,
        since,
        now,
        i64::from(settings.export_max)
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            user_alert(
                "mass_export",
                Severity::High,
                row.user,
                format!("mass_export:{}:{}", row.user, day(now)),
                format!(
                    "user {} made {} exports or downloads in {} min (limit {})",
                    row.username,
                    row.n,
                    settings.window.as_secs() / 60,
                    settings.export_max
                ),
                serde_json::json!({ "count": row.n, "limit": settings.export_max, "audit_seqs": row.seqs }),
            )
        })
        .collect())
}

async fn dormant(
    db: &PgPool,
    settings: &DetectSettings,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<NewAlert>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT e.actor_user_id AS "user!", u.username AS "username!", e.seq AS "seq!",
                  (SELECT max(p.occurred_at) FROM audit_events p
                    WHERE p.actor_user_id = e.actor_user_id AND p.action = 'login' AND p.outcome = 'success'
                      AND p.occurred_at < e.occurred_at) AS previous
             FROM audit_events e JOIN users u ON u.id = e.actor_user_id
            WHERE e.occurred_at > $1 AND e.occurred_at <= $2 AND e.action = 'login' AND e.outcome = 'success'
              AND u.created_at < e.occurred_at - make_interval(days => $3)"#,
        since,
        now,
        i32::try_from(settings.dormant_days).unwrap_or(i32::MAX)
    )
    .fetch_all(db)
    .await?;
    let dormant_after = chrono::Duration::days(i64::from(settings.dormant_days));
    // "No login ever" counts only if the trail reaches back that far: a trail that began last
    // week (a new installation, an archived past) cannot tell a dormant account from any other.
    let trail_start = sqlx::query_scalar!("SELECT min(occurred_at) FROM audit_events")
        .fetch_one(db)
        .await?;
    let trail_covers = trail_start.is_some_and(|t| now - t > dormant_after);
    Ok(rows
        .into_iter()
        .filter(|row| match row.previous {
            Some(previous) => now - previous > dormant_after,
            None => trail_covers,
        })
        .map(|row| {
            let idle = row.previous.map_or_else(
                || "never before".to_owned(),
                |p| format!("none for {} days", (now - p).num_days()),
            );
            user_alert(
                "dormant_account",
                Severity::Medium,
                row.user,
                format!("dormant:{}:{}", row.user, day(now)),
                format!(
                    "dormant account {} logged in (previous login: {idle})",
                    row.username
                ),
                serde_json::json!({ "previous_login": row.previous, "audit_seqs": [row.seq] }),
            )
        })
        .collect())
}

async fn two_networks(
    db: &PgPool,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<NewAlert>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH events AS (
               SELECT actor_user_id AS u, seq, occurred_at, client_ip::inet AS ip
                 FROM audit_events
                WHERE occurred_at > $1 AND occurred_at <= $2 AND outcome = 'success'
                  AND actor_user_id IS NOT NULL AND client_ip ~ '^[0-9A-Fa-f:.]+$'),
           nets AS (
               SELECT u, seq, occurred_at,
                      network(set_masklen(ip, CASE WHEN family(ip) = 4 THEN 16 ELSE 48 END)) AS net
                 FROM events),
           -- Two events within 30 minutes from different networks imply two consecutive ones
           -- that are: comparing each event with the one before it finds every case.
           steps AS (
               SELECT u, seq, net, occurred_at,
                      lag(net) OVER (PARTITION BY u ORDER BY occurred_at, seq) AS prev_net,
                      lag(occurred_at) OVER (PARTITION BY u ORDER BY occurred_at, seq) AS prev_at,
                      lag(seq) OVER (PARTITION BY u ORDER BY occurred_at, seq) AS prev_seq
                 FROM nets)
           SELECT s.u AS "user!", usr.username AS "username!",
                  count(DISTINCT s.net) + 1 AS "networks!",
                  array_agg(DISTINCT host(s.net)) || array_agg(DISTINCT host(s.prev_net)) AS "nets!",
                  (array_agg(s.seq ORDER BY s.seq DESC) || array_agg(s.prev_seq ORDER BY s.seq DESC))[1:20] AS "seqs!"
             FROM steps s JOIN users usr ON usr.id = s.u
            WHERE s.prev_net IS NOT NULL AND s.net <> s.prev_net
              AND s.occurred_at - s.prev_at <= interval '30 minutes'
            GROUP BY s.u, usr.username"#,
        since,
        now
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            user_alert(
                "two_networks",
                Severity::Medium,
                row.user,
                format!("two_networks:{}:{}", row.user, day(now)),
                format!(
                    "account {} was used from {} networks within 30 min",
                    row.username, row.networks
                ),
                serde_json::json!({ "networks": row.nets, "audit_seqs": row.seqs }),
            )
        })
        .collect())
}

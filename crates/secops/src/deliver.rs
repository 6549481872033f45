//! Alert delivery: a webhook (HMAC-signed) and e-mail (SMTP over TLS, lettre). Due deliveries
//! are claimed with `FOR UPDATE SKIP LOCKED`, so any instance may deliver and none twice; a
//! failure is retried with exponential backoff (30 s, 1 min, 2 min, ... capped at 1 h) and
//! dead-lettered after the last try, which the admin API lists.
//!
//! The webhook body is the alert as JSON; `Clinicd-Signature: t=UNIX,v1=HEX` is
//! HMAC-SHA256 over `t.body` under the shared secret, so the receiver can check origin and
//! freshness (the scheme Stripe and others use).

use std::time::Duration;

use aws_lc_rs::hmac;
use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use uuid::Uuid;

use crate::alerts::{self, Alert};

/// Where and how alerts are delivered.
#[derive(Clone, Default)]
pub struct DeliverySettings {
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<SecretString>,
    /// `smtps://host:465`, `smtp://host:587?tls=required`; plain `smtp://` only to loopback.
    pub smtp_url: Option<SecretString>,
    pub email_from: Option<String>,
    pub email_to: Vec<String>,
    /// Tries before a delivery is dead.
    pub max_attempts: u32,
    /// Deliveries per channel per hour before further ones are suppressed.
    pub per_hour: u32,
}

impl std::fmt::Debug for DeliverySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliverySettings")
            .field("webhook_url", &self.webhook_url)
            .field("email_to", &self.email_to)
            .field("max_attempts", &self.max_attempts)
            .field("per_hour", &self.per_hour)
            .finish_non_exhaustive()
    }
}

impl DeliverySettings {
    pub fn channels(&self) -> alerts::Channels {
        alerts::Channels {
            webhook: self.webhook_url.is_some(),
            email: self.smtp_url.is_some() && !self.email_to.is_empty(),
            per_hour: self.per_hour,
        }
    }
}

/// The signature header value for `body` at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={timestamp},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// The delay before try `attempts + 1`.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(30u64.saturating_mul(1 << attempts.min(7))).min(Duration::from_secs(3600))
}

/// What one pass delivered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub sent: u32,
    pub retried: u32,
    pub dead: u32,
}

/// Delivers what is due (at most `batch`).
pub async fn deliver_due(
    db: &PgPool,
    settings: &DeliverySettings,
    http: &reqwest::Client,
    batch: i64,
) -> Result<Pass, sqlx::Error> {
    let mut pass = Pass::default();
    let mut tx = db.begin().await?;
    let due = sqlx::query!(
        "SELECT id, alert_id, channel, attempts FROM alert_deliveries \
          WHERE state = 'pending' AND next_attempt_at <= now() \
          ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        batch
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in due {
        let Some(alert) = alerts::get(&mut tx, row.alert_id).await? else {
            continue;
        };
        let sent = match row.channel.as_str() {
            "webhook" => send_webhook(settings, http, &alert).await,
            "email" => send_email(settings, &alert).await,
            other => Err(format!("unknown channel {other}")),
        };
        let attempts = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
        match sent {
            Ok(()) => {
                pass.sent += 1;
                sqlx::query!(
                    "UPDATE alert_deliveries SET state = 'sent', attempts = $2, sent_at = now(), last_error = NULL WHERE id = $1",
                    row.id,
                    i32::try_from(attempts).unwrap_or(i32::MAX)
                )
                .execute(&mut *tx)
                .await?;
            }
            Err(error) => {
                let dead = attempts >= settings.max_attempts.max(1);
                if dead {
                    pass.dead += 1;
                    tracing::error!(delivery = %row.id, channel = %row.channel, %error, "alert delivery dead-lettered");
                } else {
                    pass.retried += 1;
                    tracing::warn!(delivery = %row.id, channel = %row.channel, %error, "alert delivery failed; will retry");
                }
                let next = Utc::now()
                    + chrono::Duration::from_std(backoff(attempts))
                        .unwrap_or(chrono::Duration::hours(1));
                record_failure(&mut tx, row.id, attempts, dead, next, &error).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(pass)
}

async fn record_failure(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    attempts: u32,
    dead: bool,
    next: DateTime<Utc>,
    error: &str,
) -> Result<(), sqlx::Error> {
    let state = if dead { "dead" } else { "pending" };
    let error: String = error.chars().take(500).collect();
    sqlx::query!(
        "UPDATE alert_deliveries SET state = $2, attempts = $3, next_attempt_at = $4, last_error = $5 WHERE id = $1",
        id,
        state,
        i32::try_from(attempts).unwrap_or(i32::MAX),
        next,
        error
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The alert as the receivers get it.
pub fn payload(alert: &Alert) -> serde_json::Value {
    serde_json::json!({
        "type": "clinicd.security_alert",
        "alert": alert,
    })
}

async fn send_webhook(
    settings: &DeliverySettings,
    http: &reqwest::Client,
    alert: &Alert,
) -> Result<(), String> {
    let url = settings
        .webhook_url
        .as_deref()
        .ok_or("no webhook configured")?;
    let body = serde_json::to_vec(&payload(alert)).map_err(|e| e.to_string())?;
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header("clinicd-alert-id", alert.id.to_string());
    if let Some(secret) = &settings.webhook_secret {
        let sig = signature(
            secret.expose_secret().as_bytes(),
            Utc::now().timestamp(),
            &body,
        );
        request = request.header("clinicd-signature", sig);
    }
    let response = request
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("webhook request failed: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("webhook answered {}", response.status()))
    }
}

async fn send_email(settings: &DeliverySettings, alert: &Alert) -> Result<(), String> {
    let url = settings
        .smtp_url
        .as_ref()
        .ok_or("no SMTP server configured")?;
    let transport = smtp_transport(url.expose_secret())?;
    let from: Mailbox = settings
        .email_from
        .as_deref()
        .unwrap_or("clinicd <clinicd@localhost>")
        .parse()
        .map_err(|e| format!("bad sender address: {e}"))?;
    let mut message = Message::builder()
        .from(from)
        .subject(format!("[clinicd {}] {}", alert.severity, alert.rule));
    for to in &settings.email_to {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("bad recipient address: {e}"))?;
        message = message.to(to);
    }
    let body = format!(
        "{}\n\nAlert {} ({}), {} occurrence(s), first seen {}, last seen {}.\nEvidence: {}\n\n\
         Review it in clinicd: GET /api/security/alerts/{}\n",
        alert.summary,
        alert.id,
        alert.state,
        alert.occurrences,
        alert.first_seen.to_rfc3339(),
        alert.last_seen.to_rfc3339(),
        alert.evidence,
        alert.id
    );
    let message = message.body(body).map_err(|e| e.to_string())?;
    transport
        .send(message)
        .await
        .map_err(|e| format!("SMTP delivery failed: {e}"))?;
    Ok(())
}

/// The SMTP transport of a URL: TLS required (`smtps://`, or `smtp://` with STARTTLS required)
/// except to a loopback address, where a local relay or a test sink may speak plain SMTP.
pub fn smtp_transport(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("bad SMTP URL: {e}"))?;
    let loopback = parsed.host_str().is_some_and(is_loopback);
    let tls = parsed.scheme() == "smtps"
        || parsed
            .query_pairs()
            .any(|(k, v)| k == "tls" && v == "required");
    if !tls && !loopback {
        return Err(
            "SMTP without TLS is allowed only to a loopback relay: use smtps:// or ?tls=required"
                .into(),
        );
    }
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map(|builder| builder.timeout(Some(Duration::from_secs(10))).build())
        .map_err(|e| format!("bad SMTP URL: {e}"))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_timestamp_and_body() {
        let sig = signature(b"secret", 1_700_000_000, b"{}");
        assert!(sig.starts_with("t=1700000000,v1="), "{sig}");
        assert_ne!(sig, signature(b"secret", 1_700_000_001, b"{}"));
        assert_ne!(sig, signature(b"other", 1_700_000_000, b"{}"));
    }

    #[test]
    fn backs_off_exponentially_up_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(30));
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(3), Duration::from_secs(240));
        assert_eq!(backoff(20), Duration::from_secs(3600));
    }

    #[test]
    fn smtp_needs_tls_unless_loopback() {
        assert!(smtp_transport("smtp://mail.example.com:25").is_err());
        assert!(smtp_transport("smtps://mail.example.com:465").is_ok());
        assert!(smtp_transport("smtp://mail.example.com:587?tls=required").is_ok());
        assert!(smtp_transport("smtp://127.0.0.1:2525").is_ok());
    }
}

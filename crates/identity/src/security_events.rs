//! Brings identity's security events (failed logins with their reason, lockouts, refresh-token
//! reuse, MFA failures, password and MFA changes, administrator actions) into the trail.
//!
//! Identity records them in `security_events` as they happen, inside its own transactions, and
//! owns the SQL that claims and marks them. The server's scheduled job `forward_security_events`
//! moves unforwarded rows into the chain; the append and the mark on the source rows share one
//! transaction, and rows are claimed with `SKIP LOCKED`, so each event lands exactly once
//! whichever instance moves it. They are system events: the request that
//! caused one has its own event (route, status) from the audit layer.

use chrono::{DateTime, Utc};
use clinicd_audit::AuditError;
use clinicd_audit::writer::append_in;
use clinicd_audit::{Action, NewEvent, Outcome};
use clinicd_crypto::Keyring;
use sqlx::PgPool;
use uuid::Uuid;

use crate::sessions::{self, RecordedEvent};

const BATCH: i64 = 500;

/// Who met a stored file that failed verification (a swapped, truncated or re-keyed object),
/// for the security officer: the event is a possible tampering with the store.
#[derive(Debug, Clone)]
pub struct FileIntegrityFailure {
    pub file: Uuid,
    pub user: Uuid,
    pub session: Uuid,
    pub client: sessions::ClientInfo,
}

/// Records a file integrity failure as a security event on its own connection (the request
/// that met it is failing, and its own transaction, if any, will not commit). A failure to
/// record is logged, not raised: the download is refused either way.
pub async fn file_integrity_failure(
    db: &PgPool,
    failure: FileIntegrityFailure,
    now: DateTime<Utc>,
) {
    let reason = format!("file {}", failure.file);
    let event = sessions::SecurityEvent {
        kind: "file_integrity_failure",
        user: Some(failure.user),
        session: Some(failure.session),
        reason: Some(&reason),
        actor: None,
    };
    let recorded = async {
        let mut conn = db.acquire().await.map_err(|e| e.to_string())?;
        sessions::record_event(&mut conn, now, event, &failure.client)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    if let Err(e) = recorded {
        tracing::error!(file = %failure.file, error = %e, "could not record a file integrity failure");
    }
}

/// Moves up to one batch of unforwarded security events into the trail; returns how many.
pub async fn forward(db: &PgPool, keyring: &Keyring) -> Result<usize, AuditError> {
    let mut tx = db.begin().await?;
    let rows = sessions::claim_unforwarded(&mut tx, BATCH).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let events: Vec<NewEvent> = rows.iter().map(to_event).collect();
    let refs: Vec<&NewEvent> = events.iter().collect();
    append_in(&mut tx, keyring, &refs).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    sessions::mark_forwarded(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(rows.len())
}

fn to_event(row: &RecordedEvent) -> NewEvent {
    let (action, outcome) = classify(&row.kind);
    let mut event = NewEvent::new(action, outcome);
    event.occurred_at = row.occurred_at;
    event.actor_user_id = row
        .detail
        .get("actor")
        .and_then(|a| a.as_str())
        .and_then(|a| a.parse().ok())
        .or(row.user_id);
    event.actor_username.clone_from(&row.actor_username);
    event.session_id = row.session_id;
    event.resource_type = Some("security_event".into());
    event.resource_id = row.user_id.map(|u| u.to_string());
    event.client_ip.clone_from(&row.client_ip);
    event.reason = row
        .detail
        .get("reason")
        .and_then(|r| r.as_str())
        .map(str::to_owned);
    event.metadata = serde_json::json!({ "kind": row.kind, "security_event_id": row.id });
    event
}

/// The audit action and outcome of an identity event kind.
fn classify(kind: &str) -> (Action, Outcome) {
    match kind {
        "login_failed" | "login_refused" => (Action::LoginFailed, Outcome::Denied),
        "account_locked" | "account_unlocked" | "user_disabled" | "user_enabled"
        | "password_reset" | "mfa_reset" => (Action::UserChange, Outcome::Success),
        "refresh_token_reuse" => (Action::Refresh, Outcome::Denied),
        "mfa_failed" | "mfa_disable_failed" | "mfa_backup_codes_failed" => {
            (Action::MfaVerify, Outcome::Failure)
        }
        "password_changed" => (Action::PasswordChange, Outcome::Success),
        "password_change_failed" => (Action::PasswordChange, Outcome::Failure),
        "mfa_disabled" => (Action::MfaDisable, Outcome::Success),
        "mfa_code_sent" => (Action::MfaSend, Outcome::Success),
        "mfa_backup_codes_regenerated" => (Action::MfaBackupCodes, Outcome::Success),
        "mfa_backup_code_used" | "mfa_device_check" | "mfa_device_trusted" => {
            (Action::MfaVerify, Outcome::Success)
        }
        _ => (Action::SecurityEvent, Outcome::Success),
    }
}

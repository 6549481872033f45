//! `clinicd admin`: what the server's operator does to accounts from the command line. Each
//! change commits with its audit event (reason `cli`, the command named), like a request's.

use std::io::Write;

use anyhow::Context;
use clinicd_audit::Action;
use clinicd_identity::Identity;
use clinicd_identity::otp::{OtpMessage, OtpPurpose};
use clinicd_identity::users::{self, UserId};
use clinicd_rbac::administration;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use uuid::Uuid;

use crate::Settings;
use crate::cli_audit::CliAudit;

/// `clinicd admin create`: the first administrator, with a one-time password printed once to
/// the operator who ran the command.
pub async fn create(
    settings: &Settings,
    pool: &PgPool,
    audit: &CliAudit,
    username: &str,
    email: Option<&str>,
) -> anyhow::Result<()> {
    let hasher = clinicd_identity::password::PasswordHasherPool::new(settings.identity.hash, 1)?;
    let mut tx = pool.begin().await?;
    let (id, password) =
        clinicd_identity::bootstrap::create_admin(&mut tx, &hasher, username, email).await?;
    let note = audit.note(id.0, None, serde_json::json!({ "roles": ["Admin"] }));
    audit
        .recorder(Action::UserChange, "user")
        .commit(tx, None, note)
        .await
        .context("the audit event could not be written; nothing was created")?;
    // The one place a password is printed: once, to the operator who ran the command.
    say(&format!(
        "Created administrator `{username}`.\nOne-time password (shown once; it must be changed at first login):\n\n    {}\n\n",
        password.expose_secret()
    ))
}

/// `clinicd admin unlock`: clears a lockout, for an administrator locked out with no other to
/// unlock them.
pub async fn unlock(identity: &Identity, audit: &CliAudit, username: &str) -> anyhow::Result<()> {
    let user = users::find_by_username(&identity.db, username)
        .await?
        .with_context(|| format!("no account `{username}`"))?;
    let mut tx = identity.db.begin().await?;
    identity.login.unlock(&mut tx, user.id, None).await?;
    let note = audit.note(user.id.0, None, serde_json::json!({ "unlocked": true }));
    audit
        .recorder(Action::UserChange, "user")
        .commit(tx, None, note)
        .await
        .context("the audit event could not be written; nothing changed")?;
    say(&format!("Unlocked `{}`.\n", user.username))
}

/// `clinicd admin approve`: the operator approves a pending proposal, as the second person of
/// a clinic with one administrator. The proposer's own rights still bound the change.
pub async fn approve(
    settings: &Settings,
    identity: &Identity,
    audit: &CliAudit,
    proposal: Uuid,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let mut tx = identity.db.begin().await?;
    let (proposal, applied) = administration::approve(&mut tx, identity, None, proposal, now)
        .await
        .map_err(|e| anyhow::anyhow!("the proposal was not approved: {e}"))?;
    let delivered = match (&applied.credential, proposal.target_user()) {
        (Some(password), Some(user)) => Some(deliver(settings, identity, user, password).await?),
        _ => None,
    };
    let note = clinicd_audit::Note {
        values: Some((applied.before, applied.after)),
        ..audit.note(
            proposal.id,
            None,
            serde_json::json!({ "kind": proposal.kind.as_str(), "target": proposal.target }),
        )
    };
    audit
        .recorder(Action::Approve, "proposal")
        .commit(tx, None, note)
        .await
        .context("the audit event could not be written; nothing changed")?;
    say(&format!(
        "Approved {} of {}.\n",
        proposal.kind.as_str(),
        proposal.target
    ))?;
    if let Some(Some(shown)) = delivered {
        say(&format!(
            "One-time password (development mode only; shown once):\n\n    {shown}\n\n"
        ))?;
    }
    Ok(())
}

/// A reset's one-time password: to its owner through the out-of-band channel in production,
/// shown to the operator in development.
async fn deliver(
    settings: &Settings,
    identity: &Identity,
    user: UserId,
    password: &SecretString,
) -> anyhow::Result<Option<String>> {
    if !settings.is_production() {
        return Ok(Some(password.expose_secret().to_owned()));
    }
    let sender = identity
        .login
        .otp_sender()
        .context("no out-of-band channel is configured (CLINICD_MFA_FALLBACK): nothing changed")?;
    let record = users::find_by_id(&identity.db, user)
        .await?
        .context("the account is gone")?;
    sender
        .send(&OtpMessage {
            user_id: user.0,
            to: &record.email,
            purpose: OtpPurpose::OneTimePassword,
            code: password,
            expires_at: None,
        })
        .await
        .context("the one-time password could not be delivered: nothing changed")?;
    Ok(None)
}

fn say(text: &str) -> anyhow::Result<()> {
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

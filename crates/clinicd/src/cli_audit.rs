//! Audit events for the commands that create PHI or change security state outside HTTP
//! (`import patients`, `files import`, the `keys` rotations). The API's audit layer never sees
//! them, so they write their own to the same tamper-evident chain: one event per record created,
//! naming the patient and the record (never a value), or per key change; its `reason` is `cli`
//! and its user agent the command. The actor is whoever may run the binary with the server's
//! configuration; no user account is involved. Fail closed: an event that cannot be written
//! stops the command.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clinicd_audit::{Action, AuditWriter, NewEvent, Note, Outcome, Recorder, WriterSettings};
use clinicd_crypto::Keyring;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug)]
pub struct CliAudit {
    writer: AuditWriter,
    command: &'static str,
}

impl CliAudit {
    pub fn start(db: PgPool, keyring: Arc<Keyring>, command: &'static str) -> Self {
        Self {
            writer: AuditWriter::start(db, keyring, WriterSettings::default()),
            command,
        }
    }

    /// `resource` (`patient` or `file`) `id` of `patient` was created by `action`; returns once
    /// the event is committed.
    pub async fn created(
        &self,
        action: Action,
        resource: &str,
        id: Uuid,
        patient: Uuid,
        metadata: serde_json::Value,
    ) -> anyhow::Result<()> {
        let mut event = NewEvent::new(action, Outcome::Success);
        event.resource_id = Some(id.to_string());
        event.patient_id = Some(patient);
        self.append(event, resource, metadata).await
    }

    /// The command did `action` to `resource` (no one record); returns once committed.
    pub async fn record(
        &self,
        action: Action,
        resource: &str,
        metadata: serde_json::Value,
    ) -> anyhow::Result<()> {
        self.append(NewEvent::new(action, Outcome::Success), resource, metadata)
            .await
    }

    /// As [`Self::record`], with the command's outcome (a failed backup is an event too).
    pub async fn record_outcome(
        &self,
        action: Action,
        outcome: Outcome,
        resource: &str,
        metadata: serde_json::Value,
    ) -> anyhow::Result<()> {
        self.append(NewEvent::new(action, outcome), resource, metadata)
            .await
    }

    /// A recorder for a change the command makes to `resource`: the change and its event
    /// commit together (see [`clinicd_audit::Recorder`]).
    pub fn recorder(&self, action: Action, resource: &str) -> Recorder {
        let mut event = NewEvent::new(action, Outcome::Success);
        self.stamp(&mut event, resource);
        Recorder::new(self.writer.clone(), event, Arc::new(AtomicBool::new(false)))
    }

    /// The note of record `id` of `patient`, naming the command in its metadata.
    pub fn note(&self, id: Uuid, patient: Option<Uuid>, metadata: serde_json::Value) -> Note {
        Note {
            resource_id: Some(id.to_string()),
            patient_id: patient,
            metadata: Some(self.with_command(metadata)),
            ..Note::default()
        }
    }

    fn with_command(&self, mut metadata: serde_json::Value) -> serde_json::Value {
        if let Some(fields) = metadata.as_object_mut() {
            fields.insert("command".into(), self.command.into());
        }
        metadata
    }

    fn stamp(&self, event: &mut NewEvent, resource: &str) {
        event.resource_type = Some(resource.to_owned());
        event.reason = Some("cli".to_owned());
        event.user_agent = Some(format!(
            "clinicd/{} {}",
            env!("CARGO_PKG_VERSION"),
            self.command
        ));
    }

    async fn append(
        &self,
        mut event: NewEvent,
        resource: &str,
        metadata: serde_json::Value,
    ) -> anyhow::Result<()> {
        self.stamp(&mut event, resource);
        event.metadata = self.with_command(metadata);
        self.writer
            .record(event)
            .await
            .context("the audit event could not be written; stopping")?;
        Ok(())
    }
}

//! A change and the event that records it, committed in one transaction.
//!
//! Whoever changes state does the work in a transaction and hands that transaction to a
//! [`Recorder`]: it completes the event drafted for the request (route, caller, client) with
//! what the change says about itself (a [`Note`]), appends it to the chain inside the same
//! transaction and commits. The change and its event land together or not at all: if the
//! trail cannot take the event, the transaction rolls back and nothing changed.
//!
//! Reads do not need this: they change nothing, and the batching writer commits their event
//! before the response leaves ([`crate::AuditWriter::record`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::AuditError;
use crate::event::{NewEvent, Outcome};
use crate::values::seal_values;
use crate::writer::{AuditWriter, append_in};

/// What a change (or a read) knows about itself that its request does not show: whom it
/// acted for, which record it touched, which patients it disclosed, the values before and
/// after. Never a value in clear: `values` are sealed before they reach the event.
#[derive(Debug, Clone, Default)]
pub struct Note {
    pub actor: Option<Uuid>,
    pub actor_username: Option<String>,
    pub session: Option<Uuid>,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    /// Other patients whose data the answer disclosed (each one a search or a list returned),
    /// for their accounting of disclosures: kept in `metadata.patients`.
    pub patients: Vec<Uuid>,
    /// Counts, ids, names of fields: never values.
    pub metadata: Option<Value>,
    /// A short reason code (for a refusal that still changed something, such as a reused
    /// refresh token revoking its session).
    pub reason: Option<String>,
    /// Before and after values of a change: sealed under the audit key before the event is
    /// written (only the changed field names stay readable, in `metadata.changed`).
    pub values: Option<(Value, Value)>,
}

impl Note {
    /// A note that only adds counts or ids to the event (a list's `returned`, say).
    pub fn with_metadata(metadata: Value) -> Self {
        Self {
            metadata: Some(metadata),
            ..Self::default()
        }
    }

    /// Copies what the note knows into `event`.
    pub fn apply(&self, event: &mut NewEvent) {
        if self.actor.is_some() {
            event.actor_user_id = self.actor;
        }
        if self.actor_username.is_some() {
            event.actor_username.clone_from(&self.actor_username);
        }
        if self.session.is_some() {
            event.session_id = self.session;
        }
        if self.resource_id.is_some() {
            event.resource_id.clone_from(&self.resource_id);
        }
        if self.patient_id.is_some() {
            event.patient_id = self.patient_id;
        }
        if let Some(metadata) = &self.metadata {
            event.metadata = metadata.clone();
        }
        if !self.patients.is_empty()
            && let Value::Object(fields) = &mut event.metadata
        {
            let mut patients = self.patients.clone();
            patients.sort_unstable();
            patients.dedup();
            fields.insert("patients".into(), serde_json::json!(patients));
        }
        if self.reason.is_some() {
            event.reason.clone_from(&self.reason);
        }
    }
}

/// Commits a change together with its event. Built from the event drafted for the request
/// and a flag the request's audit layer watches: once set, the layer knows the event is in
/// the chain and does not record another.
#[derive(Debug)]
pub struct Recorder {
    writer: AuditWriter,
    draft: NewEvent,
    done: Arc<AtomicBool>,
}

impl Recorder {
    pub fn new(writer: AuditWriter, draft: NewEvent, done: Arc<AtomicBool>) -> Self {
        Self {
            writer,
            draft,
            done,
        }
    }

    /// The event as drafted so far.
    pub fn draft(&self) -> &NewEvent {
        &self.draft
    }

    /// Appends the event (with the HTTP `status` of a request, `None` for a command, and
    /// `note`) inside `tx` and commits `tx`. On any failure the transaction is rolled back:
    /// neither the change nor the event remains.
    pub async fn commit(
        self,
        mut tx: Transaction<'_, Postgres>,
        status: Option<u16>,
        note: Note,
    ) -> Result<i64, AuditError> {
        self.writer.ensure_key().await?;
        let mut event = self.draft;
        if let Some(status) = status {
            event.status_code = Some(i32::from(status));
            event.outcome = Outcome::from_status(status);
        }
        note.apply(&mut event);
        if let Some((before, after)) = &note.values {
            seal_values(self.writer.keyring(), &mut event, before, after).await?;
        }
        let seq = append_in(&mut tx, self.writer.keyring(), &[&event]).await?;
        tx.commit().await?;
        self.done.store(true, Ordering::Release);
        Ok(seq)
    }
}

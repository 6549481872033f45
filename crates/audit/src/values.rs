//! Before and after values of a change, kept in the event only as a ciphertext (a field
//! ciphertext of the crypto crate, bound to its own random id, which the event carries in
//! `metadata.values_id`): under the patient's own subject key when the event concerns a
//! patient, so that erasing the patient (destroying that key) reaches their values here and in
//! the trail's archives while the chain, which covers the ciphertext, still verifies; under the
//! audit key otherwise (users, roles, settings). Reading them back needs the key and, at the API, the
//! `audit:read_values` permission (RBAC); the field names changed stay readable in
//! `metadata.changed`.

use clinicd_crypto::{FieldLocation, Keyring, Owner, Purpose, SubjectId};
use serde_json::Value;
use uuid::Uuid;

use crate::error::AuditError;
use crate::event::NewEvent;

fn location(id: Uuid) -> FieldLocation<'static> {
    FieldLocation::new("audit_events", "sealed_values", id)
}

/// Seals `{"before": ..., "after": ...}` into `event` (under its patient's key, if it has a
/// patient), and lists the changed field names.
pub async fn seal_values(
    keyring: &Keyring,
    event: &mut NewEvent,
    before: &Value,
    after: &Value,
) -> Result<(), AuditError> {
    let id = Uuid::now_v7();
    let plain = serde_json::to_vec(&serde_json::json!({ "before": before, "after": after }))
        .map_err(|e| AuditError::Unavailable(e.to_string()))?;
    let owner = match event.patient_id {
        Some(patient) => Owner::Subject(SubjectId(patient)),
        None => Owner::Purpose(Purpose::Audit),
    };
    let sealed = keyring.encrypt(owner, &location(id), &plain).await?;
    let changed: Vec<&String> = match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let mut names: Vec<&String> = a
                .keys()
                .chain(b.keys())
                .filter(|k| b.get(*k) != a.get(*k))
                .collect();
            names.sort();
            names.dedup();
            names
        }
        _ => Vec::new(),
    };
    if let Value::Object(metadata) = &mut event.metadata {
        metadata.insert("values_id".into(), Value::String(id.to_string()));
        metadata.insert("changed".into(), serde_json::json!(changed));
    }
    event.sealed_values = Some(sealed);
    Ok(())
}

/// Opens the values of a stored event (`metadata.values_id` and `sealed_values`).
pub async fn open_values(
    keyring: &Keyring,
    metadata: &Value,
    sealed: &[u8],
) -> Result<Value, AuditError> {
    let id: Uuid = metadata
        .get("values_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| AuditError::Unavailable("the event names no sealed values".into()))?;
    let plain = keyring
        .decrypt(&location(id), sealed)
        .await
        .map_err(|error| match error {
            clinicd_crypto::CryptoError::KeyDestroyed => AuditError::Destroyed,
            other => other.into(),
        })?;
    serde_json::from_slice(&plain).map_err(|e| AuditError::Unavailable(e.to_string()))
}

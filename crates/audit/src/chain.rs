//! The hash chain and its authenticated head.
//!
//! Each event's hash is SHA-256 over the previous event's hash and a canonical encoding of the
//! event (every column but the hashes, in a fixed order, each length-prefixed, so no two
//! different events encode alike). The first event links to 32 zero bytes. After each batch the
//! writer stores the head (last sequence number and hash) with an HMAC under the audit key; a
//! chain rebuilt by someone without the key cannot carry valid heads.
//!
//! Hand-written because it must be byte-for-byte stable across versions and instances, and no
//! canonical-encoding crate is both small and stable enough to trust with that; the format is
//! the one below, versioned by its domain string.

use aws_lc_rs::digest::{Context, SHA256};
use aws_lc_rs::hmac;
use serde_json::Value;

use crate::event::StoredEvent;

pub const GENESIS: [u8; 32] = [0; 32];
const EVENT_DOMAIN: &[u8] = b"clinicd-audit-event-v1";
const HEAD_DOMAIN: &[u8] = b"clinicd-audit-head-v1";

/// The hash of `event` linked to `prev`.
pub fn link(prev: &[u8], event: &StoredEvent) -> Vec<u8> {
    let mut context = Context::new(&SHA256);
    context.update(EVENT_DOMAIN);
    context.update(prev);
    context.update(&canonical(event));
    context.finish().as_ref().to_vec()
}

/// The MAC of a chain head.
pub fn head_mac(key: &hmac::Key, seq: i64, hash: &[u8]) -> Vec<u8> {
    let mut context = hmac::Context::with_key(key);
    context.update(HEAD_DOMAIN);
    context.update(&seq.to_be_bytes());
    context.update(hash);
    context.sign().as_ref().to_vec()
}

pub fn head_mac_valid(key: &hmac::Key, seq: i64, hash: &[u8], mac: &[u8]) -> bool {
    let mut message = Vec::with_capacity(HEAD_DOMAIN.len() + 8 + hash.len());
    message.extend_from_slice(HEAD_DOMAIN);
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(hash);
    hmac::verify(key, &message, mac).is_ok()
}

fn canonical(event: &StoredEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut put = |field: Option<&[u8]>| match field {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    };
    let text = |s: &Option<String>| s.as_deref().map(str::as_bytes).map(<[u8]>::to_vec);
    let uuid = |u: &Option<uuid::Uuid>| u.map(|u| u.as_bytes().to_vec());
    let fields: [Option<Vec<u8>>; 19] = [
        Some(event.seq.to_be_bytes().to_vec()),
        Some(event.occurred_at.timestamp_micros().to_be_bytes().to_vec()),
        uuid(&event.actor_user_id),
        text(&event.actor_username),
        uuid(&event.session_id),
        Some(event.action.as_bytes().to_vec()),
        text(&event.resource_type),
        text(&event.resource_id),
        uuid(&event.patient_id),
        Some(event.outcome.as_bytes().to_vec()),
        text(&event.http_method),
        text(&event.route),
        event.status_code.map(|c| c.to_be_bytes().to_vec()),
        text(&event.client_ip),
        text(&event.user_agent),
        text(&event.request_id),
        text(&event.reason),
        Some(canonical_json(&event.metadata).into_bytes()),
        event.sealed_values.clone(),
    ];
    for field in &fields {
        put(field.as_deref());
    }
    out
}

/// JSON with object keys sorted at every depth, so an object reads back from jsonb (which
/// reorders keys) encodes as it did when written.
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let members: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::String(k.clone()),
                        canonical_json(&map[k.as_str()])
                    )
                })
                .collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, NewEvent, Outcome};

    fn event() -> StoredEvent {
        let mut new = NewEvent::new(Action::View, Outcome::Success);
        new.metadata = serde_json::json!({ "b": [1, {"z": 1, "a": 2}], "a": "x" });
        StoredEvent::from_new(1, &new)
    }

    #[test]
    fn key_order_does_not_change_the_hash_but_any_field_does() {
        let a = event();
        let mut b = a.clone();
        b.metadata = serde_json::json!({ "a": "x", "b": [1, {"a": 2, "z": 1}] });
        assert_eq!(link(&GENESIS, &a), link(&GENESIS, &b));
        let mut c = a.clone();
        c.outcome = "denied".into();
        assert_ne!(link(&GENESIS, &a), link(&GENESIS, &c));
        let mut d = a.clone();
        d.resource_id = Some(String::new());
        assert_ne!(
            link(&GENESIS, &a),
            link(&GENESIS, &d),
            "empty is not absent"
        );
        assert_ne!(
            link(&GENESIS, &a),
            link(&[1; 32], &a),
            "the previous hash matters"
        );
    }

    #[test]
    fn head_macs_verify_only_under_their_key() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[1; 32]);
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[2; 32]);
        let mac = head_mac(&key, 7, &[3; 32]);
        assert!(head_mac_valid(&key, 7, &[3; 32], &mac));
        assert!(!head_mac_valid(&other, 7, &[3; 32], &mac));
        assert!(!head_mac_valid(&key, 8, &[3; 32], &mac));
    }
}

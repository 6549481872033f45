//! Clinical records: patients, their care teams, bookings, notes and files. Every route here
//! that names a row takes a `Reachable*` extractor (`crate::extract::reachable`).

pub mod appointments;
pub mod care_team;
pub mod consents;
pub mod files;
pub mod notes;
pub mod patients;
mod pdf_stamp;

use actix_web::http::header;
use clinicd_domain::Label;
use clinicd_rbac::{Grants, Reach};
use uuid::Uuid;

use crate::audit::AuditNote;
use crate::problem::ApiError;
use crate::state::ApiState;

/// The audit note of a label change (a note's, a file's, a patient's): the confidentiality
/// levels in the metadata, the codes and the reason only in the values sealed under the
/// patient's key (a code such as HIV beside a patient id is itself sensitive).
pub(crate) fn relabel_note(
    patient: Uuid,
    resource: Uuid,
    before: &Label,
    after: &Label,
    reason: String,
) -> AuditNote {
    AuditNote {
        patient_id: Some(patient),
        resource_id: Some(resource.to_string()),
        metadata: Some(serde_json::json!({ "relabel": true,
            "confidentiality": { "from": before.confidentiality.as_str(),
                                 "to": after.confidentiality.as_str() } })),
        values: Some((
            serde_json::json!({ "label": before }),
            serde_json::json!({ "label": after, "reason": reason }),
        )),
        ..AuditNote::default()
    }
}

/// A `Repr-Digest` header value for a SHA-256 digest.
pub(crate) fn repr_digest(sha256: &[u8; 32]) -> String {
    use base64::Engine;
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha256)
    )
}

/// Whether the caller may read the content of an item labelled `label` (a note, a file),
/// reaching its patient by `reach` (docs/lifecycle.md).
pub(crate) fn readable(state: &ApiState, grants: &Grants, reach: Reach, label: &Label) -> bool {
    label.readable(grants, reach, state.settings.break_glass_opens_psychiatric)
}

/// Refuses a caller who may not read an item labelled `label`, naming the label.
pub(crate) fn guard(
    state: &ApiState,
    grants: &Grants,
    reach: Reach,
    label: &Label,
) -> Result<(), ApiError> {
    if readable(state, grants, reach, label) {
        Ok(())
    } else {
        Err(ApiError::RestrictedContent(label.describe()))
    }
}

/// The facts every downloaded copy carries in its headers (and its audit event the id): who,
/// when, a forensic download id, and that it holds PHI. The request id is in `X-Request-Id`.
pub(crate) struct DownloadStamp {
    pub id: Uuid,
    by: String,
    at: chrono::DateTime<chrono::Utc>,
}

impl DownloadStamp {
    pub fn new(username: &str) -> Self {
        Self {
            id: Uuid::now_v7(),
            by: username.to_owned(),
            at: chrono::Utc::now(),
        }
    }

    /// The visible line on a stamped PDF's pages.
    pub fn line(&self) -> String {
        let request = crate::request_id::current()
            .map(|id| id.to_string())
            .unwrap_or_else(|| "-".to_owned());
        format!(
            "Downloaded by {} at {} - request {request} - download {} - confidential: contains PHI",
            self.by,
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.id
        )
    }

    pub fn mark(&self, headers: &mut header::HeaderMap) {
        let at = self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for (name, value) in [
            ("clinicd-download-id", self.id.to_string()),
            ("clinicd-downloaded-by", self.by.clone()),
            ("clinicd-downloaded-at", at),
            ("clinicd-notice", "confidential: contains PHI".to_owned()),
        ] {
            // Usernames are checked ASCII at creation; a value that is not a valid header is
            // left out rather than failing the download.
            if let Ok(value) = header::HeaderValue::from_str(&value) {
                headers.insert(header::HeaderName::from_static(name), value);
            }
        }
    }
}

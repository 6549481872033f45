//! What the audit layer ([`crate::middleware::audit`]) needs from handlers and errors.

use actix_web::HttpResponse;
use clinicd_audit::{Action, NewEvent};
use uuid::Uuid;

/// What a route records: its action and the type of resource it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditDeclaration {
    pub action: Action,
    pub resource: &'static str,
}

/// What a handler knows that the request does not show: who logged in, which record was read,
/// which ids a search returned. Attached to the response; read by the audit layer.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub actor: Option<Uuid>,
    pub session: Option<Uuid>,
    pub resource_id: Option<String>,
    pub patient_id: Option<Uuid>,
    pub metadata: Option<serde_json::Value>,
    /// Before and after values of a change: sealed under the audit key before the event is
    /// written (only the changed field names stay readable).
    pub values: Option<(serde_json::Value, serde_json::Value)>,
}

impl AuditNote {
    pub fn attach(self, response: &mut HttpResponse) {
        response.extensions_mut().insert(self);
    }

    pub(crate) fn apply(&self, event: &mut NewEvent) {
        if self.actor.is_some() {
            event.actor_user_id = self.actor;
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
    }
}

/// The problem code of an error response, for the audit reason.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

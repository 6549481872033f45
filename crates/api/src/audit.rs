//! What the audit layer ([`crate::middleware::audit`]) shares with handlers and errors.
//!
//! Reads attach an [`AuditNote`] to their response and the layer records the event before
//! the response leaves. Changes take an [`Audit`] and commit their transaction through it,
//! so the change and its event land together ([`clinicd_audit::Recorder`]); the layer then
//! records nothing more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse};
use clinicd_audit::{Action, NewEvent, Recorder};
use clinicd_identity::sessions::Principal;
use sqlx::{Postgres, Transaction};

use crate::problem::ApiError;
use crate::state::ApiState;

pub use clinicd_audit::Note as AuditNote;

/// What a route records: its action, the type of resource it touches, and whether it changes
/// state (then a success must commit its event with the change, through [`Audit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditDeclaration {
    pub action: Action,
    pub resource: &'static str,
    pub changes: bool,
}

/// Attaches a note to a response, for the audit layer to read.
pub trait Attach {
    fn attach(self, response: &mut HttpResponse);
}

impl Attach for AuditNote {
    fn attach(self, response: &mut HttpResponse) {
        response.extensions_mut().insert(self);
    }
}

/// The problem code of an error response, for the audit reason.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// The event the audit layer drafted for this request (route, method, client, request id),
/// the flag that tells it the event was committed with a change, and the one that tells it a
/// change's append failed (already counted for the operators).
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditDraft {
    pub event: Option<NewEvent>,
    pub done: Arc<AtomicBool>,
    pub failed: Arc<AtomicBool>,
}

impl AuditDraft {
    pub fn committed(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// A change's way into the audit trail: [`Audit::commit`] appends the request's event inside
/// the change's transaction and commits both. Only on routes the route table declares
/// audited (elsewhere it refuses: fail closed).
#[derive(Debug)]
pub struct Audit {
    draft: AuditDraft,
    state: ApiState,
    req: HttpRequest,
}

impl FromRequest for Audit {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let draft = req.extensions().get::<AuditDraft>().cloned();
        let state = req.app_data::<actix_web::web::Data<ApiState>>().cloned();
        std::future::ready(match (draft, state) {
            (Some(draft), Some(state)) if draft.event.is_some() => Ok(Self {
                draft,
                state: state.get_ref().clone(),
                req: req.clone(),
            }),
            _ => Err(ApiError::unexpected(
                "a change on a route without an audit declaration",
            )),
        })
    }
}

impl Audit {
    /// A recorder for this request's event, with the caller as the actor (when authenticated
    /// by now). It is `Send`, for work that finishes in a task of its own.
    pub fn recorder(&self) -> Recorder {
        let mut event = self
            .draft
            .event
            .clone()
            .unwrap_or_else(|| NewEvent::new(Action::View, clinicd_audit::Outcome::Error));
        if let Some(principal) = self.req.extensions().get::<Principal>() {
            event.actor_user_id = Some(principal.user_id.0);
            event.actor_username = Some(principal.username.clone());
            event.session_id = Some(principal.session_id);
        }
        Recorder::new(self.state.audit.clone(), event, self.draft.done.clone())
    }

    /// Commits `tx` with this request's event: `status` is the answer the handler will give.
    /// If the trail cannot take the event, nothing of the change remains and the answer is 503.
    pub async fn commit(
        &self,
        tx: Transaction<'_, Postgres>,
        status: StatusCode,
        note: AuditNote,
    ) -> Result<(), ApiError> {
        self.recorder()
            .commit(tx, Some(status.as_u16()), note)
            .await
            .map(|_| ())
            .map_err(|error| self.failed(&error))
    }

    /// The answer when the trail could not take this change's event: the change was rolled
    /// back. Counted for the operators once (the audit layer then counts no second failure).
    pub fn failed(&self, error: &clinicd_audit::AuditError) -> ApiError {
        tracing::error!(error = %error, "audit event not committed: the change was rolled back");
        if !self.draft.failed.swap(true, Ordering::AcqRel) {
            self.state.metrics.count_audit_failure();
        }
        ApiError::Unavailable
    }

    /// Opens a transaction for the change.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, ApiError> {
        self.state.db.begin().await.map_err(ApiError::unexpected)
    }
}

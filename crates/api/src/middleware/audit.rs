//! The audit layer: every route the route table marks as auditable writes exactly one audit
//! event, and its response leaves only after that event is committed. If the trail cannot take
//! the event, the response (which may carry PHI) is dropped and the client gets 503
//! problem+json instead. Coverage is by construction: the layer reads the route table, and a
//! test fails if a route under `/api/` has no audit declaration.
//!
//! A change commits its event itself, in its own transaction ([`crate::audit::Audit`]): the
//! layer drafts the event before the handler runs and hands it over, and afterwards records
//! nothing more once the change has. Failures (which change nothing) and reads are recorded
//! here, through the batching writer.
//!
//! What goes in: the route template (never the path or query), method, status, outcome, actor
//! and session (from the authenticated principal or the handler's note), client address, user
//! agent, request id, and for failures the problem code as the reason.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use clinicd_audit::values::seal_values;
use clinicd_audit::{Action, NewEvent, Outcome};
use clinicd_identity::sessions::Principal;

use crate::audit::{AuditDraft, AuditNote, ErrorCode};
use crate::client_ip::ClientIp;
use crate::problem::ApiError;
use crate::request_id;
use crate::routes::MatchedRoute;

pub async fn audit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let declared = MatchedRoute::of(req.request())
        .and_then(|route| route.0.audit.map(|a| (route.0.path.to_owned(), a)));
    let Some((route, declaration)) = declared else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let state = super::state(req.request()).clone();
    let mut event = NewEvent::new(declaration.action, Outcome::Success);
    event.resource_type = Some(declaration.resource.to_owned());
    event.route = Some(route);
    event.http_method = Some(req.method().as_str().to_owned());
    event.client_ip = req
        .extensions()
        .get::<ClientIp>()
        .map(|ip| ip.0.to_string());
    event.user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect());
    event.request_id = request_id::current().map(|id| id.to_string());
    let draft = AuditDraft {
        event: Some(event.clone()),
        ..AuditDraft::default()
    };
    req.extensions_mut().insert(draft.clone());

    let response = next.call(req).await?;
    if draft.committed() {
        // The change committed its event with itself.
        return Ok(response.map_into_boxed_body());
    }
    if declaration.changes && response.status().is_success() {
        // A change that bypassed `Audit::commit`: a bug, caught by the test that walks every
        // changing route with a failing trail. Record it late rather than not at all.
        tracing::error!(route = %event.route.as_deref().unwrap_or(""), "a change answered without committing its audit event");
        state.metrics.count_audit_failure();
    }
    complete(&mut event, &response);
    let sealed = match values(&response) {
        Some((before, after)) => {
            seal_values(&state.identity.keyring, &mut event, &before, &after).await
        }
        None => Ok(()),
    };
    let recorded = match sealed {
        Ok(()) => state.audit.record(event).await.map(|_| ()),
        Err(error) => Err(error),
    };
    match recorded {
        Ok(_) => Ok(response.map_into_boxed_body()),
        Err(error) => {
            tracing::error!(error = %error, "audit event not committed: response withheld");
            if !draft.failed() {
                state.metrics.count_audit_failure();
            }
            let (request, _withheld) = response.into_parts();
            Ok(ServiceResponse::new(
                request,
                ApiError::Unavailable.error_response(),
            ))
        }
    }
}

/// Fills in what only the response knows.
fn complete<B>(event: &mut NewEvent, response: &ServiceResponse<B>) {
    let status = response.status().as_u16();
    event.status_code = Some(i32::from(status));
    event.outcome = Outcome::from_status(status);
    if let Some(principal) = response.request().extensions().get::<Principal>() {
        event.actor_user_id = Some(principal.user_id.0);
        event.actor_username = Some(principal.username.clone());
        event.session_id = Some(principal.session_id);
    }
    if event.outcome != Outcome::Success {
        if event.action == Action::Login {
            event.action = Action::LoginFailed;
        }
        event.reason = response
            .response()
            .extensions()
            .get::<ErrorCode>()
            .map(|code| code.0.to_owned());
    }
    if let Some(note) = response.response().extensions().get::<AuditNote>() {
        note.apply(event);
    }
    // A refusal for want of a permission is its own action, so reviews find every one; the
    // action that was attempted stays in the metadata.
    if event.reason.as_deref() == Some("permission_denied") {
        if let serde_json::Value::Object(metadata) = &mut event.metadata {
            metadata.insert("attempted".into(), event.action.as_str().into());
        }
        event.action = Action::PermissionDenied;
    }
}

fn values<B>(response: &ServiceResponse<B>) -> Option<(serde_json::Value, serde_json::Value)> {
    response
        .response()
        .extensions()
        .get::<AuditNote>()
        .and_then(|note| note.values.clone())
}

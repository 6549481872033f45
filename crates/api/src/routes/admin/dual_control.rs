//! Dual control: an administrative change that widens access waits, as a proposal, for a
//! second administrator. What the admin routes share to make and answer one.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use clinicd_rbac::administration::Actor;
use clinicd_rbac::proposals::Proposal;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{Audit, AuditNote};
use crate::extract::Granted;
use crate::problem::ApiError;
use crate::state::ApiState;

/// A change waiting for (or decided by) a second administrator.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProposalView {
    pub id: Uuid,
    /// `user_roles`, `role_permissions`, `user_email`, `user_enable`, `user_disable`,
    /// `user_reset_password` or `user_reset_mfa`.
    pub kind: String,
    /// The user id, or the role name for `role_permissions`.
    pub target: String,
    /// What would be applied (roles, a role's content, an e-mail address; empty otherwise).
    pub payload: serde_json::Value,
    pub proposed_by: Uuid,
    pub proposed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub status: String,
    /// `null` with a decision: decided at the command line (`clinicd admin approve`).
    pub decided_by: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl ProposalView {
    pub fn of(p: &Proposal, now: DateTime<Utc>) -> Self {
        Self {
            id: p.id,
            kind: p.kind.as_str().to_owned(),
            target: p.target.clone(),
            payload: p.payload.clone(),
            proposed_by: p.proposed_by,
            proposed_at: p.proposed_at,
            expires_at: p.expires_at,
            status: p.status(now).as_str().to_owned(),
            decided_by: p.decided_by,
            decided_at: p.decided_at,
        }
    }
}

/// A password reset. The one-time password goes to the account's owner out of band in
/// production; only development mode shows it here.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PasswordReset {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_time_password: Option<String>,
    /// `shown` (development) or the channel the password went through (`email`).
    pub credential_delivery: String,
}

/// The actor of an administrative change, with the settings dual control needs.
pub(crate) fn actor<'a>(state: &ApiState, granted: &'a Granted) -> Actor<'a> {
    Actor {
        grants: &granted.0,
        now: state.rbac.now(),
        proposal_ttl_hours: state.settings.proposal_ttl_hours,
    }
}

/// 202 with a proposal just made, its event committed with it.
pub(crate) async fn proposed(
    audit: &Audit,
    tx: Transaction<'static, Postgres>,
    target: &str,
    proposal: Proposal,
    before: serde_json::Value,
    after: serde_json::Value,
) -> Result<HttpResponse, ApiError> {
    let view = ProposalView::of(&proposal, proposal.proposed_at);
    let note = AuditNote {
        resource_id: Some(target.to_owned()),
        metadata: Some(serde_json::json!({
            "proposal": proposal.id,
            "kind": proposal.kind.as_str(),
            "pending": true,
        })),
        values: Some((before, after)),
        ..AuditNote::default()
    };
    audit.commit(tx, StatusCode::ACCEPTED, note).await?;
    Ok(HttpResponse::Accepted().json(view))
}

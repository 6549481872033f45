use crate::permission::Permissions;

/// Why an RBAC operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    #[error("no such resource")]
    NotFound,
    #[error("no such role: `{0}`")]
    UnknownRole(String),
    #[error("no such active user")]
    UnknownUser,
    #[error("a role named `{0}` already exists")]
    RoleExists(String),
    #[error("a role name is a letter followed by up to 63 letters, digits, `_` or `-`")]
    InvalidRoleName,
    #[error("the description is longer than 500 characters")]
    InvalidDescription,
    #[error("built-in roles cannot be changed or deleted")]
    BuiltInRole,
    #[error("the role is still assigned to {0} user(s)")]
    RoleInUse(i64),
    #[error("permissions the caller does not hold cannot be granted: {}", .0.names().join(", "))]
    NotHeld(Permissions),
    #[error("no one can change their own roles")]
    OwnRoles,
    #[error("this would leave no active administrator")]
    LastAdministrator,
    #[error("the reason must be 20 to 1000 characters")]
    InvalidReason,
    #[error("an access cannot be reviewed by the person who made it")]
    OwnReview,
    #[error(
        "no one can put themselves on a care team: another member of staff assigns them, or they use break-the-glass"
    )]
    SelfAssignment,
    #[error("the reason must be 10 to 500 printable characters")]
    InvalidAssignmentReason,
    #[error("the proposal has expired: propose the change again")]
    ProposalExpired,
    #[error("the proposal has already been decided")]
    ProposalDecided,
    #[error("a proposal is approved by another administrator than the one who made it")]
    OwnProposal,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("encryption error: {0}")]
    Crypto(#[from] clinicd_crypto::CryptoError),
    #[error("security event not recorded: {0}")]
    Identity(#[from] clinicd_identity::sessions::SessionError),
    #[error(transparent)]
    User(clinicd_identity::users::UserError),
    #[error("the account change failed: {0}")]
    Account(String),
}

//! Identity: user accounts, password hashing and policy, login, sessions and MFA.
//!
//! Owns: the `users`, `sessions`, `refresh_tokens`, `mfa_*`, `trusted_devices`, `user_roles`
//! and `security_events` tables, and the `roles` flag "MFA required" (RBAC owns the rest of a
//! role); token issuance and validation; the per-account failure counter and lockout; moving
//! its security events into the audit trail (the audit crate sits below it).
//!
//! Must not: import actix or know about HTTP (the API crate maps its errors and sets cookies);
//! decide permissions (RBAC); store a secret in clear (TOTP secrets go through the crypto crate).
//!

pub mod account;
pub mod admin;
pub mod bootstrap;
pub mod challenge;
pub mod clock;
pub mod devices;
pub mod failure;
mod live_sessions;
pub mod login;
pub mod mfa;
pub mod otp;
pub mod password;
pub mod policy;
mod recent_sessions;
pub mod security_events;
pub mod service;
pub mod sessions;
pub mod tokens;
pub mod users;

pub use failure::Failure;
pub use service::{Identity, IdentitySettings};

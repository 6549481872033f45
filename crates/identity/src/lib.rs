//! Identity: user accounts, password hashing and policy, login, sessions and MFA.
//!
//! Owns: the `users`, `sessions`, `refresh_tokens`, `mfa_*` and `security_events` tables; token
//! issuance and validation; the per-account failure counter and lockout.
//!
//! Must not: import actix or know about HTTP (the API crate maps its errors and sets cookies);
//! decide permissions (RBAC); store a secret in clear (TOTP secrets go through the crypto crate).
//!
//! Status: password policy and hashing, tokens, user records and the bootstrap administrator are
//! built; login, sessions and MFA follow in the identity issue. Until then the API crate's `Authenticated` extractor refuses every caller.

pub mod admin;
pub mod bootstrap;
pub mod clock;
pub mod login;
pub mod mfa;
pub mod password;
pub mod policy;
pub mod service;
pub mod sessions;
pub mod tokens;
pub mod users;

pub use service::{Identity, IdentitySettings};

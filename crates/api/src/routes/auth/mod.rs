//! The caller's own account: logging in and out, refreshing, the second factor, sessions and
//! devices, the password.

pub mod login;
pub mod mfa;
pub mod session;

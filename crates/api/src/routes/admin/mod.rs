//! Administration and oversight: accounts, roles and their proposals (dual control), the audit
//! trail, and the keys' status.

pub mod audit;
pub mod dual_control;
pub mod keys;
pub mod proposals;
pub mod roles;
pub mod users;

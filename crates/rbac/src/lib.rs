//! Role-based access control: the closed set of permissions, roles, role assignments,
//! care-team assignments and break-the-glass grants.
//!
//! Owns: the `roles`, `user_roles`, `patient_assignments` and `break_glass_grants` tables and
//! the decision "may this principal do this to that resource".
//!
//! Must not: import actix; authenticate anyone (identity does); write audit rows itself
//! (callers audit the decision it returns).
//!
//! Status: scaffold. The RBAC issue fills it in; until then nothing is authorised.

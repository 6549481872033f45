//! The identity crate against real Postgres, with a manual clock: no test sleeps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests: a panic is the report"
)]

/// Runs `$body` (an expression using `$tx`, a `&mut PgConnection`) in a transaction and commits
/// it if the result is `Ok`: what a request does with a change, less its audit event.
macro_rules! in_tx {
    ($db:expr, |$tx:ident| $body:expr) => {{
        let mut transaction = $db.begin().await.unwrap();
        let result = {
            let $tx: &mut sqlx::PgConnection = &mut transaction;
            $body.await
        };
        if result.is_ok() {
            transaction.commit().await.unwrap();
        }
        result
    }};
}

mod admin;
mod login;
mod mfa;
mod mfa_manage;
mod sessions;
mod support;
mod users;

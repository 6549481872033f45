//! The server's connection pool (`clinicd::startup::pool_options`): a connection used moments
//! ago is handed out without a ping, one idle for longer is pinged first, and a connection the
//! database closed is never handed out twice.

use std::time::Duration;

use clinicd::startup::{PING_IDLE_AFTER, pool_options};
use clinicd_identity::failure::is_outage;
use sqlx::PgPool;

/// Ends every backend of this database but the caller's, as a restart or a DBA would.
async fn terminate_others(admin: &PgPool) -> u64 {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(admin)
    .await
    .unwrap()
    .rows_affected()
}

async fn backend(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
}

#[sqlx::test(migrations = false)]
async fn an_idle_connection_is_pinged_and_a_broken_one_is_dropped(admin: PgPool) {
    let options = admin.connect_options().as_ref().clone();
    let pool = pool_options(1).connect_with(options).await.unwrap();
    let first = backend(&pool).await.unwrap();
    assert_eq!(
        backend(&pool).await.unwrap(),
        first,
        "one connection, reused"
    );

    // Closed by the database, then idle past the threshold: the ping finds it broken and a new
    // connection answers, with no error for the caller.
    assert!(terminate_others(&admin).await >= 1);
    tokio::time::sleep(PING_IDLE_AFTER + Duration::from_millis(500)).await;
    let second = backend(&pool).await.expect("a pinged, replaced connection");
    assert_ne!(second, first);

    // Closed moments after its last use: handed out unpinged, so this one statement fails as
    // an outage (503 to a client), and the broken connection is not handed out again.
    assert!(terminate_others(&admin).await >= 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let error = backend(&pool)
        .await
        .expect_err("the closed connection was used");
    assert!(is_outage(&error), "{error:?} is not an outage");
    let third = backend(&pool).await.expect("a new connection");
    assert_ne!(third, second);
}

//! The server's connection pool (`clinicd::startup::pool_options`) and each API worker's own
//! connections for patient reads: a connection used moments ago is handed out without a ping,
//! one idle for longer is pinged first, and a connection the database closed is never handed
//! out twice.

use std::sync::Arc;
use std::time::Duration;

use clinicd::startup::{PING_IDLE_AFTER, pool_options};
use clinicd_domain::read_connections::{ACQUIRE_TIMEOUT, ReadConnections};
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

/// A worker's own connections for patient reads (`clinicd_domain::read_connections`), as the
/// server makes them: from the shared pool's connect options.
fn worker_connections(admin: &PgPool, max: u32) -> Arc<ReadConnections> {
    Arc::new(ReadConnections::new(
        admin.connect_options().as_ref().clone(),
        max,
    ))
}

async fn leased_backend(own: &ReadConnections) -> Result<i32, sqlx::Error> {
    let mut lease = own.acquire().await?;
    let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(lease.connection()?)
        .await?;
    lease.release();
    Ok(pid)
}

#[sqlx::test(migrations = false)]
async fn a_workers_connection_is_reused_pinged_after_idle_and_dropped_when_broken(admin: PgPool) {
    let own = worker_connections(&admin, 1);
    assert_eq!(own.size(), 0, "nothing opens before the first read");
    let first = leased_backend(&own).await.unwrap();
    assert_eq!(
        leased_backend(&own).await.unwrap(),
        first,
        "one connection, reused"
    );
    assert_eq!((own.size(), own.num_idle()), (1, 1));

    // Closed by the database, then idle past the threshold: the ping finds it broken and a new
    // connection answers, with no error for the caller.
    assert!(terminate_others(&admin).await >= 1);
    tokio::time::sleep(PING_IDLE_AFTER + Duration::from_millis(500)).await;
    let second = leased_backend(&own)
        .await
        .expect("a pinged, replaced connection");
    assert_ne!(second, first);
    assert_eq!(own.size(), 1, "the broken one was closed, not counted");

    // Closed moments after its last use: handed out unpinged, so this one statement fails as
    // an outage (503 to a client); the lease is not released, so the connection is closed.
    assert!(terminate_others(&admin).await >= 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let error = leased_backend(&own)
        .await
        .expect_err("the closed connection was used");
    assert!(is_outage(&error), "{error:?} is not an outage");
    assert_eq!((own.size(), own.num_idle()), (0, 0));
    let third = leased_backend(&own).await.expect("a new connection");
    assert_ne!(third, second);
}

/// A statement abandoned midway (a request cancelled while it waited on Postgres) never puts
/// its connection back: the next caller gets a fresh connection, not one with a reply pending.
#[sqlx::test(migrations = false)]
async fn a_lease_dropped_before_its_statement_returned_closes_its_connection(admin: PgPool) {
    let own = worker_connections(&admin, 1);
    let first = leased_backend(&own).await.unwrap();
    {
        let mut lease = own.acquire().await.unwrap();
        let connection = lease.connection().unwrap();
        let slow = sqlx::query("SELECT pg_sleep(5)").execute(connection);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), slow)
                .await
                .is_err(),
            "the statement was still running"
        );
    }
    assert_eq!((own.size(), own.num_idle()), (0, 0), "closed, not kept");
    let next = tokio::time::timeout(Duration::from_secs(2), leased_backend(&own))
        .await
        .expect("answered at once, not after the abandoned sleep")
        .unwrap();
    assert_ne!(next, first);
}

/// At most `max` connections: a caller waits for one to come back, and past the acquire
/// timeout gets an outage (503) rather than a connection over the limit.
#[sqlx::test(migrations = false)]
async fn a_worker_opens_at_most_its_limit_and_a_caller_waits(admin: PgPool) {
    let own = worker_connections(&admin, 1);
    let held = own.acquire().await.unwrap();
    let waiting = tokio::spawn({
        let own = Arc::clone(&own);
        async move { leased_backend(&own).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a second connection was opened");
    assert_eq!(own.size(), 1);
    drop(held);
    waiting
        .await
        .unwrap()
        .expect("served once the first came back");
    assert_eq!(own.size(), 1);

    let _held = own.acquire().await.unwrap();
    let started = std::time::Instant::now();
    let error = own.acquire().await.expect_err("over the limit");
    assert!(matches!(error, sqlx::Error::PoolTimedOut), "{error:?}");
    assert!(is_outage(&error));
    assert!(started.elapsed() >= ACQUIRE_TIMEOUT);
    assert_eq!(own.size(), 1);
}

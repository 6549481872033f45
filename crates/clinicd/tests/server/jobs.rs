//! Scheduled work runs once across instances: two servers on one database share graphile_worker's
//! crontab, so each tick of each job is scheduled once and run by one of them.

use std::time::Duration;

use sqlx::PgPool;

use crate::support::start;

/// The jobs that ran, per (job, tick), and how many times each tick ran.
async fn runs_per_tick(pool: &PgPool, job: &str) -> Vec<(chrono::DateTime<chrono::Utc>, i64)> {
    sqlx::query_as(
        "SELECT scheduled_for, count(*) FROM job_runs \
         WHERE job = $1 AND scheduled_for IS NOT NULL GROUP BY 1 ORDER BY 1",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_instances_run_each_tick_of_each_job_once(pool: PgPool) {
    // The queue as an earlier server left it, its schedules last run ten minutes ago: both
    // servers starting now find ten missed minutes to catch up on, at the same moment.
    graphile_worker::WorkerOptions::default()
        .schema(clinicd::jobs::SCHEMA)
        .pg_pool(pool.clone())
        .init()
        .await
        .unwrap();
    for job in ["forward_security_events", "audit_checkpoint"] {
        sqlx::query(
            "INSERT INTO clinicd_jobs._private_known_crontabs (identifier, known_since, last_execution) \
             VALUES ($1, now() - interval '10 minutes', now() - interval '10 minutes')",
        )
        .bind(job)
        .execute(&pool)
        .await
        .unwrap();
    }
    // Security events waiting to be carried into the trail.
    for _ in 0..3 {
        sqlx::query(
            "INSERT INTO security_events (id, occurred_at, kind, detail) \
             VALUES ($1, now(), 'login_failed', '{\"reason\": \"bad_password\"}')",
        )
        .bind(uuid::Uuid::now_v7())
        .execute(&pool)
        .await
        .unwrap();
    }

    let every_minute = [("CLINICD_AUDIT_CHECKPOINT_SECS", "60")];
    let (_a, _b) = tokio::join!(
        start(pool.clone(), &every_minute),
        start(pool.clone(), &every_minute)
    );

    // Ten ticks of each (more if a minute turns meanwhile), whichever instance ran them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let forwarded = runs_per_tick(&pool, "forward_security_events").await;
        let checkpoints = runs_per_tick(&pool, "audit_checkpoint").await;
        let partitions: i64 =
            sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE job = 'audit_partitions'")
                .fetch_one(&pool)
                .await
                .unwrap();
        // Runs finish out of order (two instances, two workers each): wait until no tick
        // between the first and the last is still in flight.
        let contiguous = |ticks: &[(chrono::DateTime<chrono::Utc>, i64)]| {
            ticks
                .windows(2)
                .all(|pair| pair[1].0 - pair[0].0 == chrono::TimeDelta::minutes(1))
        };
        if forwarded.len() >= 10
            && checkpoints.len() >= 10
            && partitions >= 1
            && contiguous(&forwarded)
            && contiguous(&checkpoints)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the missed ticks were not run: {forwarded:?} {checkpoints:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let anything scheduled twice show itself.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for job in ["forward_security_events", "audit_checkpoint"] {
        let ticks = runs_per_tick(&pool, job).await;
        assert!(
            ticks.iter().all(|(_, runs)| *runs == 1),
            "{job} ran a tick more than once: {ticks:?}"
        );
        for pair in ticks.windows(2) {
            assert_eq!(
                pair[1].0 - pair[0].0,
                chrono::TimeDelta::minutes(1),
                "{ticks:?}"
            );
        }
    }
    let failed: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT job, outcome, detail::text FROM job_runs WHERE outcome <> 'ok' ORDER BY started_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(failed.is_empty(), "runs that failed: {failed:?}");

    // Each security event reached the trail once.
    let forwarded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE resource_type = 'security_event'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(forwarded, 3);
    // Partitions are kept ahead from the start: this month and the next twelve exist.
    let ahead: bool = sqlx::query_scalar(
        "SELECT to_regclass('audit_events_' || to_char(now() + interval '12 months', 'YYYY_MM')) IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(ahead);
}

/// How many runs of `job` have been recorded.
async fn runs_of(pool: &PgPool, job: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE job = $1")
        .bind(job)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_job_worker_comes_back_after_the_database_drops_its_connections(pool: PgPool) {
    let _server = start(pool.clone(), &[]).await;
    // The worker is up once its at-start job has run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while runs_of(&pool, "audit_partitions").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A database restart or failover, as the server sees it: every connection it had is gone
    // and new ones are refused for a few seconds.
    let mut test = pool.acquire().await.unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut *test)
        .await
        .unwrap();
    // Allowing connections is set from another database (not the one being closed).
    let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL must be set");
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    let allow = |on: bool| {
        sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{database}\" WITH ALLOW_CONNECTIONS {on}"
        ))
    };
    sqlx::query(allow(false)).execute(&mut admin).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut *test)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    sqlx::query(allow(true)).execute(&mut admin).await.unwrap();

    // Work queued afterwards still runs, with nobody restarting the server.
    sqlx::query("SELECT clinicd_jobs.add_job('forget_login_attempts', '{}'::json)")
        .execute(&mut *test)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while runs_of(&pool, "forget_login_attempts").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job worker did not come back after the database dropped its connections"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

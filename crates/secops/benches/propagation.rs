//! How fast a block reaches another instance, and what the in-memory check costs a request.
//!
//! `DATABASE_URL=... cargo bench -p clinicd-secops --bench propagation` against a migrated
//! database (it adds and lifts its own blocks, in 192.0.2.0/24). Prints p50/p99/max of the time
//! from a block's commit until a follower instance's list holds it, and again for the lifting;
//! then the cost of `BlockList::ip` with 1,000 active blocks, against a bare hash of the address.
//! docs/security-operations.md records the figures.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::print_stdout,
    reason = "a benchmark"
)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use clinicd_secops::BlockList;
use sqlx::PgPool;
use uuid::Uuid;

async fn until(check: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_micros(200)).await;
        assert!(start.elapsed() < Duration::from_secs(10), "never arrived");
    }
    start.elapsed()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let at = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[at]
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL of a migrated database");
    let db = PgPool::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM blocks WHERE network <<= '192.0.2.0/24'")
        .execute(&db)
        .await
        .unwrap();
    let follower = BlockList::new();
    tokio::spawn(follower.clone().follow(db.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut placed, mut lifted) = (Vec::new(), Vec::new());
    for i in 0..200u32 {
        let ip: IpAddr = format!("192.0.2.{}", i % 250 + 1).parse().unwrap();
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO blocks (id, target, network, source, rule, reason, created_at, expires_at) \
             VALUES ($1, 'ip', $2::text::cidr, 'manual', 'bench', 'propagation bench', now(), now() + interval '1 hour')",
        )
        .bind(id)
        .bind(ip.to_string())
        .execute(&db)
        .await
        .unwrap();
        placed.push(until(|| follower.ip(ip, Utc::now()).is_some()).await);
        sqlx::query("UPDATE blocks SET lifted_at = now(), lift_reason = 'bench' WHERE id = $1")
            .bind(id)
            .execute(&db)
            .await
            .unwrap();
        lifted.push(until(|| follower.ip(ip, Utc::now()).is_none()).await);
    }
    for (name, samples) in [("block", &mut placed), ("unblock", &mut lifted)] {
        println!(
            "{name} reached the other instance: p50 {:?}, p99 {:?}, max {:?} ({} samples)",
            percentile(samples, 0.5),
            percentile(samples, 0.99),
            percentile(samples, 1.0),
            samples.len()
        );
    }
    // The per-request check with 1,000 active blocks (an attack in progress).
    for i in 0..1000u32 {
        sqlx::query(
            "INSERT INTO blocks (id, target, network, source, rule, reason, created_at, expires_at) \
             VALUES ($1, 'ip', $2::text::cidr, 'manual', 'bench', 'lookup bench', now(), now() + interval '1 hour')",
        )
        .bind(Uuid::now_v7())
        .bind(format!("198.18.{}.{}/32", i / 250, i % 250 + 1))
        .execute(&db)
        .await
        .unwrap();
    }
    let list = BlockList::new();
    list.reload(&db).await.unwrap();
    let probe: IpAddr = "203.0.113.200".parse().unwrap();
    let now = Utc::now();
    let n = 200_000;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(list.ip(std::hint::black_box(probe), now));
    }
    let per = start.elapsed() / n;
    println!(
        "BlockList::ip with {} blocks held: {per:?} per request",
        list.len()
    );
    sqlx::query("DELETE FROM blocks WHERE rule = 'bench'")
        .execute(&db)
        .await
        .unwrap();
}

//! Rate limits shared by every instance: GCRA in one Postgres statement.
//!
//! Each (policy, key) keeps its "theoretical arrival time" (TAT) in the UNLOGGED table
//! `rate_buckets`. A request is allowed when pushing the TAT one emission interval
//! (`window / count`) further leaves it at most `window` ahead of now; the upsert's `WHERE`
//! refuses otherwise and the row is left alone. The clock is the database's (`now()`), so
//! instances with skewed clocks still share one limit. An UNLOGGED table writes no WAL, so the
//! commit does not wait for a disk flush. Measured on this machine kind (docs/security-
//! operations.md): about 5,400 decisions/s, far above a clinic's rate of logins and uploads;
//! Redis did 13,800/s, which these classes do not need, so no second store to run.

use std::time::Duration;

use sqlx::PgPool;

/// `count` requests per `window`, as a burst of `count` refilling evenly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub window: Duration,
}

impl Rate {
    fn emission_micros(self) -> i64 {
        let micros = self.window.as_micros() / u128::from(self.count.max(1));
        i64::try_from(micros.max(1)).unwrap_or(i64::MAX)
    }

    fn window_micros(self) -> i64 {
        i64::try_from(self.window.as_micros()).unwrap_or(i64::MAX)
    }
}

/// A shared decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed { remaining: u32, reset: Duration },
    Refused { retry_after: Duration },
}

/// The limiter over the shared table.
#[derive(Debug, Clone)]
pub struct SharedLimiter {
    db: PgPool,
}

impl SharedLimiter {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Counts one request of `key` against `policy`.
    pub async fn check(
        &self,
        policy: &str,
        key: &str,
        rate: Rate,
    ) -> Result<Decision, sqlx::Error> {
        let emission = rate.emission_micros();
        let window = rate.window_micros();
        // Returns how far ahead of now the new TAT lies, or no row when refused.
        let ahead = sqlx::query_scalar!(
            r#"INSERT INTO rate_buckets AS b (policy, key, tat)
               VALUES ($1, $2, now() + make_interval(secs => $3::bigint / 1e6))
               ON CONFLICT (policy, key) DO UPDATE
                  SET tat = greatest(b.tat, now()) + make_interval(secs => $3::bigint / 1e6)
                WHERE greatest(b.tat, now()) + make_interval(secs => $3::bigint / 1e6)
                      <= now() + make_interval(secs => $4::bigint / 1e6)
               RETURNING (extract(epoch FROM tat - now()) * 1e6)::bigint AS "ahead!""#,
            policy,
            key,
            emission,
            window,
        )
        .fetch_optional(&self.db)
        .await?;
        Ok(match ahead {
            Some(ahead) => {
                let ahead = ahead.clamp(0, window);
                let free = (window - ahead) / emission;
                Decision::Allowed {
                    remaining: u32::try_from(free).unwrap_or(0),
                    reset: micros(ahead),
                }
            }
            None => {
                let ahead = sqlx::query_scalar!(
                    r#"SELECT (extract(epoch FROM tat - now()) * 1e6)::bigint AS "ahead!"
                         FROM rate_buckets WHERE policy = $1 AND key = $2"#,
                    policy,
                    key
                )
                .fetch_optional(&self.db)
                .await?
                .unwrap_or(window);
                // The next cell frees when the TAT, pushed once more, fits in the window.
                Decision::Refused {
                    retry_after: micros((ahead + emission - window).max(1_000_000)),
                }
            }
        })
    }

    /// Forgets buckets whose TAT has passed (they are full again); returns how many.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query!("DELETE FROM rate_buckets WHERE tat < now()")
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected())
    }
}

fn micros(value: i64) -> Duration {
    Duration::from_micros(u64::try_from(value).unwrap_or(0))
}

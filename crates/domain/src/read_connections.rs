//! An API worker's own connections for the patient store's reads (docs/performance.md).
//!
//! Hand-written rather than a second sqlx pool: a sqlx pool takes every connection back
//! through a task it spawns, which sends a Sync and waits for ReadyForQuery before the
//! connection can serve again. That round trip costs Postgres and the server as much as the
//! ping sqlx does on acquire, which `startup::pool_options` already turns off; sqlx has no
//! setting for the one on release. Without it, reads served 9-11% more requests per second
//! and searches 10-12% (docs/performance.md).
//!
//! What the release ping guards against is a connection handed back mid-statement (a future
//! dropped while it waited on Postgres). Here a connection goes back only through
//! [`Lease::release`], which callers reach only after their statement returned its result
//! (sqlx has then read ReadyForQuery); a lease dropped in any other way (an error, a
//! cancelled request) closes its connection instead. Like the shared pool, a connection idle
//! for more than [`PING_IDLE_AFTER`] is pinged before it is handed out, and one past its
//! lifetime or idle too long is closed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::{Semaphore, SemaphorePermit};

/// A connection idle longer than this is pinged before it is handed out; one used more recently
/// is handed out as it is. Past a few seconds of quiet the database may have restarted or failed
/// over; under load a connection is back in use within milliseconds, so the ping would be a
/// wasted round trip on every query.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(5);
/// How long a caller waits for a connection (to open one or for one to come back), as the
/// shared pool's acquire timeout: then the request is answered 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// sqlx's own defaults for its pools: an idle connection is closed after ten minutes, and every
/// connection after thirty, so that none outlives a server-side setting change for long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_LIFETIME: Duration = Duration::from_secs(1800);

/// One worker's connections: at most `max` open, opened on first use, reused most recent first.
pub struct ReadConnections {
    options: PgConnectOptions,
    max: u32,
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    open: AtomicU32,
}

struct Idle {
    connection: PgConnection,
    opened: Instant,
    since: Instant,
}

impl ReadConnections {
    pub fn new(options: PgConnectOptions, max: u32) -> Self {
        let max = max.max(1);
        Self {
            options,
            max,
            permits: Semaphore::new(usize::try_from(max).unwrap_or(usize::MAX)),
            idle: Mutex::new(Vec::new()),
            open: AtomicU32::new(0),
        }
    }

    /// Connections open, idle and in use.
    pub fn size(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    pub fn num_idle(&self) -> usize {
        self.idle_list().len()
    }

    pub fn max_connections(&self) -> u32 {
        self.max
    }

    /// A connection for one statement, waiting up to [`ACQUIRE_TIMEOUT`] while all are in use.
    pub async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        tokio::time::timeout(ACQUIRE_TIMEOUT, self.lease())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    async fn lease(&self) -> Result<Lease<'_>, sqlx::Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let slot = match self.reuse().await {
            Some(slot) => slot,
            None => {
                let connection = PgConnection::connect_with(&self.options).await?;
                self.open.fetch_add(1, Ordering::Relaxed);
                Slot {
                    connection: Some(connection),
                    opened: Instant::now(),
                    owner: self,
                }
            }
        };
        Ok(Lease {
            slot,
            _permit: permit,
        })
    }

    /// The most recently used idle connection still fit to serve; closes the others it meets.
    async fn reuse(&self) -> Option<Slot<'_>> {
        loop {
            let idle = self.idle_list().pop()?;
            let (idle_for, age) = (idle.since.elapsed(), idle.opened.elapsed());
            // Counted from here on: if this future is dropped during the ping, so is the slot.
            let mut slot = Slot {
                connection: Some(idle.connection),
                opened: idle.opened,
                owner: self,
            };
            if idle_for >= IDLE_TIMEOUT || age >= MAX_LIFETIME {
                continue;
            }
            if idle_for <= PING_IDLE_AFTER {
                return Some(slot);
            }
            if let Ok(connection) = slot.connection()
                && connection.ping().await.is_ok()
            {
                return Some(slot);
            }
        }
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for ReadConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadConnections")
            .field("max", &self.max)
            .field("open", &self.size())
            .finish_non_exhaustive()
    }
}

/// One connection, lent for one statement. Give it back with [`Lease::release`] once the
/// statement has returned; dropped without that, it closes its connection.
#[derive(Debug)]
pub struct Lease<'a> {
    slot: Slot<'a>,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    pub fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        self.slot.connection()
    }

    /// Back to the worker's idle list: call only after a statement returned its result.
    pub fn release(mut self) {
        if let Some(connection) = self.slot.connection.take() {
            self.slot.owner.idle_list().push(Idle {
                connection,
                opened: self.slot.opened,
                since: Instant::now(),
            });
        }
    }
}

/// An open connection out of the idle list, counted in `open` until it goes back or is closed.
#[derive(Debug)]
struct Slot<'a> {
    connection: Option<PgConnection>,
    opened: Instant,
    owner: &'a ReadConnections,
}

impl Slot<'_> {
    fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        // Only `Lease::release` and `drop` take the connection, and both end the slot.
        self.connection.as_mut().ok_or(sqlx::Error::PoolClosed)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        // Dropping the connection closes its socket (a polite Terminate could wait on a dead
        // peer); the count goes down with it.
        if self.connection.take().is_some() {
            self.owner.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection for a read: a worker's own when it has them, else the shared pool's (which goes
/// back through sqlx as usual).
#[derive(Debug)]
pub enum ReadLease<'a> {
    Shared(PoolConnection<Postgres>),
    Own(Lease<'a>),
}

impl<'a> ReadLease<'a> {
    pub async fn acquire(
        shared: &PgPool,
        own: Option<&'a ReadConnections>,
    ) -> Result<Self, sqlx::Error> {
        Ok(match own {
            Some(own) => Self::Own(own.acquire().await?),
            None => Self::Shared(shared.acquire().await?),
        })
    }

    pub fn connection(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        match self {
            Self::Shared(connection) => Ok(&mut **connection),
            Self::Own(lease) => lease.connection(),
        }
    }

    /// Call once the statement has returned its result.
    pub fn release(self) {
        match self {
            Self::Shared(connection) => drop(connection),
            Self::Own(lease) => lease.release(),
        }
    }
}

//! The session check of every request, gathered. Requests that arrive while one check query
//! runs are checked together by the next, in one round trip, as the audit writer gathers
//! events into one commit. Under load the database runs one query for many requests instead
//! of one each; a lone request still pays one round trip.
//!
//! Nothing is cached: a request is answered by a query that began after the request arrived
//! (the task takes what has queued, then queries), so a session revoked, a user disabled or
//! a role changed before the request is seen by its check, on every instance, as with a query
//! per request.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{PgExecutor, PgPool, Postgres};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::clock::Clock;
use crate::sessions::SessionError;

/// A live session and its user, as the check reads them.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub last_seen_at: DateTime<Utc>,
    pub must_change_password: bool,
    pub username: String,
    pub access_version: i64,
    pub display_name: String,
    pub email: String,
    pub mfa_enabled: bool,
}

/// Sessions checked by one query at most: a bound on its array, never a wait for more.
const MAX_BATCH: usize = 256;
const QUEUE: usize = 4096;

type Answer = Result<Option<Live>, SessionError>;

struct Pending {
    session: Uuid,
    user: Uuid,
    done: oneshot::Sender<Answer>,
}

#[derive(Debug)]
pub(crate) struct LiveSessions {
    db: PgPool,
    clock: Arc<dyn Clock>,
    idle_timeout: chrono::Duration,
    /// The gathering task's queue; `None` outside a Tokio runtime (each check then queries).
    queue: Option<mpsc::Sender<Pending>>,
}

impl LiveSessions {
    /// Starts the gathering task on the current Tokio runtime, if there is one.
    pub fn new(db: PgPool, clock: Arc<dyn Clock>, idle_timeout: chrono::Duration) -> Self {
        let queue = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (queue, incoming) = mpsc::channel(QUEUE);
            runtime.spawn(gather(incoming, db.clone(), clock.clone(), idle_timeout));
            queue
        });
        Self {
            db,
            clock,
            idle_timeout,
            queue,
        }
    }

    /// `session` of `user`, if it is live now: not revoked, within its absolute lifetime, used
    /// within the idle timeout, and its user active.
    pub async fn check(&self, session: Uuid, user: Uuid) -> Answer {
        if let Some(queue) = &self.queue {
            let (done, answer) = oneshot::channel();
            if queue
                .send(Pending {
                    session,
                    user,
                    done,
                })
                .await
                .is_ok()
                && let Ok(answer) = answer.await
            {
                return answer;
            }
            // The task has gone with its runtime: check directly.
        }
        let rows = query(&self.db, self.clock.now(), self.idle_timeout, &[session]).await?;
        Ok(pick(&rows, session, user))
    }
}

/// Takes whatever has queued (up to [`MAX_BATCH`]), checks it in one query, answers each.
///
/// While checks keep arriving, the task keeps its connection from one query to the next: sqlx
/// pings a connection when it goes back to the pool, a round trip as costly as the query. It
/// gives the connection back whenever the queue runs empty, so an idle server holds none (and
/// never starts again on a connection that went stale while it idled), and after any error.
async fn gather(
    mut incoming: mpsc::Receiver<Pending>,
    db: PgPool,
    clock: Arc<dyn Clock>,
    idle_timeout: chrono::Duration,
) {
    let mut held: Option<PoolConnection<Postgres>> = None;
    loop {
        let first = match incoming.try_recv() {
            Ok(pending) => pending,
            Err(TryRecvError::Empty) => {
                held = None;
                match incoming.recv().await {
                    Some(pending) => pending,
                    None => return,
                }
            }
            Err(TryRecvError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let sessions: Vec<Uuid> = batch.iter().map(|p| p.session).collect();
        let checked = match held.take() {
            Some(conn) => Ok(conn),
            None => db.acquire().await,
        };
        let rows = match checked {
            Ok(mut conn) => {
                let rows = query(&mut *conn, clock.now(), idle_timeout, &sessions).await;
                if rows.is_ok() {
                    held = Some(conn);
                }
                rows
            }
            Err(error) => Err(error),
        };
        match rows {
            Ok(rows) => {
                for pending in batch {
                    let _ = pending
                        .done
                        .send(Ok(pick(&rows, pending.session, pending.user)));
                }
            }
            Err(error) => {
                let error = SessionError::from(error);
                for pending in batch {
                    let _ = pending.done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The session's row, only if it is the token's user's: a token names both.
fn pick(rows: &[Live], session: Uuid, user: Uuid) -> Option<Live> {
    rows.iter()
        .find(|row| row.session_id == session && row.user_id == user)
        .cloned()
}

/// The live ones of `sessions` at `now`, with what a request needs of their users.
async fn query(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    idle_timeout: chrono::Duration,
    sessions: &[Uuid],
) -> Result<Vec<Live>, sqlx::Error> {
    // A disabled or locked user's sessions stop with the account. The idle timeout holds here
    // too, not only at refresh: a session unused for longer is over even while an access token
    // it issued has not expired. The query is the function `live_sessions` (migration 0030),
    // which keeps its plan: as a statement with `= ANY($1)` it was planned on every execution.
    sqlx::query_as!(
        Live,
        r#"SELECT session_id AS "session_id!", user_id AS "user_id!",
                  last_seen_at AS "last_seen_at!", must_change_password AS "must_change_password!",
                  username AS "username!", access_version AS "access_version!",
                  display_name AS "display_name!", email AS "email!", mfa_enabled AS "mfa_enabled!"
           FROM live_sessions($1, $2, $3)"#,
        sessions,
        now,
        now.checked_sub_signed(idle_timeout)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    )
    .fetch_all(db)
    .await
}

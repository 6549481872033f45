//! Sessions this instance checked in full within the last minute, so that a patient read or
//! search can check its session in its own statement (`session_confirmed`, migration 0031)
//! instead of a query of its own first.
//!
//! Nothing here decides access. What is remembered (the user, their username, and the access
//! version whose grants admitted them) only says what the read's statement must find still
//! true; if it is not, the statement fails and the caller is checked in full again. Entries
//! last a minute so that the full check, which records a session's activity, runs at least
//! that often for a busy session.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::live_sessions::Live;

/// How long a full check is remembered: the activity record's granularity (a full check
/// writes `last_seen_at` when it is older than this).
pub(crate) const REMEMBER_FOR: chrono::Duration = chrono::Duration::seconds(60);

/// Past this many sessions the memory is emptied, not searched for the oldest: a bound on
/// memory that costs one full check per session.
const CAPACITY: usize = 65_536;

#[derive(Debug, Default)]
pub(crate) struct RecentSessions {
    checked: Mutex<HashMap<Uuid, (Live, DateTime<Utc>)>>,
}

impl RecentSessions {
    pub fn remember(&self, live: &Live, at: DateTime<Utc>) {
        // A poisoned lock only loses memory: callers then check in full.
        if let Ok(mut checked) = self.checked.lock() {
            if checked.len() >= CAPACITY {
                checked.clear();
            }
            checked.insert(live.session_id, (live.clone(), at));
        }
    }

    /// The session as its last full check found it, if that was within [`REMEMBER_FOR`] of
    /// `now` and for this user.
    pub fn recall(&self, session: Uuid, user: Uuid, now: DateTime<Utc>) -> Option<Live> {
        let checked = self.checked.lock().ok()?;
        let (live, at) = checked.get(&session)?;
        (live.user_id == user && now - *at < REMEMBER_FOR && *at <= now).then(|| live.clone())
    }

    pub fn forget(&self, session: Uuid) {
        if let Ok(mut checked) = self.checked.lock() {
            checked.remove(&session);
        }
    }
}

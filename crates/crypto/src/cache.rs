//! A small bounded cache with a time-to-live, for plaintext keys and derived ciphers.
//!
//! Hand-written because the hot path of field encryption is a lookup here followed by
//! AES-GCM on a few dozen bytes: a general-purpose cache (moka and the like) costs about as
//! much per lookup as the encryption itself. Values are `Arc`s of key types that zeroize on
//! drop, so an evicted key is wiped once the last user lets go of it. Keys are our own ids and
//! static table names, never attacker-chosen, so the fast non-keyed Fx hash is safe here.
//! Ages are read from the coarse clock (`clock.rs`), and [`TtlCache::get_with`] lends a value
//! under the read lock instead of cloning its `Arc`: on the hot path each costs about as much
//! as the cipher work on a short field.

use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::clock;

#[derive(Debug)]
pub struct TtlCache<K, V> {
    /// Each value with the coarse-clock time it was inserted.
    entries: RwLock<FxHashMap<K, (Duration, Arc<V>)>>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> TtlCache<K, V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: RwLock::new(FxHashMap::default()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        self.get_with(key, Arc::clone)
    }

    /// Runs `f` on a live entry's value under the read lock (other readers go on; an insert
    /// waits for it), so `f` should be short: one field's cipher work, a copy.
    pub fn get_with<R>(&self, key: &K, f: impl FnOnce(&Arc<V>) -> R) -> Option<R> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (inserted, value) = entries.get(key)?;
        self.live(*inserted, clock::now()).then(|| f(value))
    }

    fn live(&self, inserted: Duration, now: Duration) -> bool {
        now.saturating_sub(inserted) < self.ttl
    }

    pub fn insert(&self, key: K, value: Arc<V>) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = clock::now();
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (inserted, _)| now.saturating_sub(*inserted) < ttl);
            if entries.len() >= self.capacity {
                // Still full of live entries: start again (every entry can be recomputed).
                entries.clear();
            }
        }
        entries.insert(key, (now, value));
    }

    /// Drops every entry whose key matches (e.g. all keys of a destroyed subject).
    pub fn remove_where(&self, matches: impl Fn(&K) -> bool) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|key, _| !matches(key));
    }

    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_stays_bounded() {
        let cache = TtlCache::new(Duration::from_millis(0), 2);
        cache.insert(1, Arc::new("a"));
        assert!(cache.get(&1).is_none(), "a zero TTL expires at once");
        assert!(cache.get_with(&1, |_| ()).is_none());

        let cache = TtlCache::new(Duration::from_secs(60), 2);
        for i in 0..10 {
            cache.insert(i, Arc::new(i));
            assert!(cache.len() <= 2);
        }
        assert_eq!(cache.get(&9).as_deref(), Some(&9));
        assert_eq!(cache.get_with(&9, |value| **value + 1), Some(10));
        assert_eq!(cache.get_with(&1, |value| **value), None, "evicted");
        cache.remove_where(|k| *k == 9);
        assert!(cache.get(&9).is_none());
    }
}

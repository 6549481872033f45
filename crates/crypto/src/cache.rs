//! A small bounded cache with a time-to-live, for plaintext keys and derived ciphers.
//!
//! Hand-written because the hot path of field encryption is a lookup here followed by
//! AES-GCM on a few dozen bytes: a general-purpose cache (moka and the like) costs about as
//! much per lookup as the encryption itself. Values are `Arc`s of key types that zeroize on
//! drop, so an evicted key is wiped once the last user lets go of it. Keys are our own ids and
//! static table names, never attacker-chosen, so the fast non-keyed Fx hash is safe here.

use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: RwLock<FxHashMap<K, (Instant, Arc<V>)>>,
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
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (inserted, value) = entries.get(key)?;
        (inserted.elapsed() < self.ttl).then(|| Arc::clone(value))
    }

    pub fn insert(&self, key: K, value: Arc<V>) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (inserted, _)| inserted.elapsed() < ttl);
            if entries.len() >= self.capacity {
                // Still full of live entries: start again (every entry can be recomputed).
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
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

        let cache = TtlCache::new(Duration::from_secs(60), 2);
        for i in 0..10 {
            cache.insert(i, Arc::new(i));
            assert!(cache.len() <= 2);
        }
        assert_eq!(cache.get(&9).as_deref(), Some(&9));
        cache.remove_where(|k| *k == 9);
        assert!(cache.get(&9).is_none());
    }
}

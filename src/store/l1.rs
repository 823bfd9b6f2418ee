//! The in-process tier: hot entries kept in this process's memory in front of Redis, for
//! routes that opt in (`l1 = true`) when the policy sizes it (`[l1] size = "64MiB"`).
//!
//! Coherence across instances comes from invalidations, never from a TTL guess: whoever
//! applies an invalidation in Redis publishes the bases it dropped, and every instance drops
//! them from its tier (the applying instance before its response goes out). Because that
//! message can be lost, the tier is only trusted while the subscription is known to be up:
//! a lost connection, a reconnect or a lagging receiver flushes it. What it cannot see are
//! writes to Redis that bypass the proxy (a `DEL` in redis-cli): those reach the tier after
//! at most the entry's TTL, so routes whose entries are changed that way should not opt in.
//!
//! Memory is bounded by `moka` (a well-kept concurrent cache) weighing each entry by its
//! body and headers.

use crate::policy::key::base_key;
use crate::store::entry::{Entry, now_ms};
use metrics::Counter;
use moka::sync::Cache;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// This process's tier.
pub struct L1 {
    cache: Cache<String, Arc<Entry>>,
    /// Counts invalidations seen. An entry read from Redis is inserted only if no
    /// invalidation arrived since the read began; the lock makes "check, then insert"
    /// atomic against "count, then drop".
    epoch: RwLock<u64>,
    /// Whether the invalidation feed is known to be up; the tier is bypassed while not.
    trusted: AtomicBool,
    /// `cachalot_l1_lookups_total` by result, registered once rather than per lookup.
    hits: Counter,
    misses: Counter,
}

impl L1 {
    /// A tier holding up to `max_bytes` of entries.
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Arc<Entry>| {
                let headers: usize = entry
                    .headers
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len())
                    .sum();
                (key.len() + headers + entry.body.len() + 128)
                    .try_into()
                    .unwrap_or(u32::MAX)
            })
            .support_invalidation_closures()
            .build();
        // Handles registered before the recorder exists would record nowhere.
        crate::observe::metrics::install();
        Self {
            cache,
            epoch: RwLock::new(0),
            trusted: AtomicBool::new(false),
            hits: metrics::counter!("cachalot_l1_lookups_total", "result" => "hit"),
            misses: metrics::counter!("cachalot_l1_lookups_total", "result" => "miss"),
        }
    }

    /// A fresh entry for `key`, if the tier holds one and is trusted now.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        if !self.trusted.load(Ordering::Acquire) {
            return None;
        }
        let found = self.cache.get(key).filter(|entry| entry.is_fresh(now_ms()));
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.increment(1);
        found
    }

    /// The invalidation count now; pass it to [`L1::insert`] for an entry read after this.
    pub fn epoch(&self) -> u64 {
        *self.epoch.read().expect("l1 epoch poisoned")
    }

    /// Keeps an entry read from Redis (or just stored there), unless an invalidation
    /// arrived since `seen` (it might concern this entry).
    pub fn insert(&self, key: &str, entry: Arc<Entry>, seen: u64) {
        let epoch = self.epoch.read().expect("l1 epoch poisoned");
        if *epoch == seen && self.trusted.load(Ordering::Acquire) {
            self.cache.insert(key.to_string(), entry);
            self.report_size();
        }
    }

    /// Sets the size gauges. moka counts lazily: its pending work runs first, so the
    /// gauges show what the tier holds now.
    fn report_size(&self) {
        self.cache.run_pending_tasks();
        metrics::gauge!("cachalot_l1_entries").set(self.cache.entry_count() as f64);
        metrics::gauge!("cachalot_l1_bytes").set(self.cache.weighted_size() as f64);
    }

    /// Drops every entry (all variants) of these bases.
    pub fn drop_bases(&self, bases: &[String]) {
        let bases: HashSet<String> = bases.iter().cloned().collect();
        let mut epoch = self.epoch.write().expect("l1 epoch poisoned");
        *epoch += 1;
        if bases.is_empty() {
            return;
        }
        if self
            .cache
            .invalidate_entries_if(move |key, _| bases.contains(base_key(key)))
            .is_err()
        {
            self.cache.invalidate_all();
        }
        drop(epoch);
        self.report_size();
    }

    /// Flushes the tier and stops using it until [`L1::trust`]: the invalidation feed
    /// may have lost messages.
    pub fn distrust(&self) {
        let mut epoch = self.epoch.write().expect("l1 epoch poisoned");
        *epoch += 1;
        self.trusted.store(false, Ordering::Release);
        self.cache.invalidate_all();
        drop(epoch);
        self.report_size();
    }

    /// The feed is up again (after a flush): use the tier.
    pub fn trust(&self) {
        let mut epoch = self.epoch.write().expect("l1 epoch poisoned");
        *epoch += 1;
        self.cache.invalidate_all();
        self.trusted.store(true, Ordering::Release);
        drop(epoch);
        self.report_size();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Arc<Entry> {
        Arc::new(Entry::for_test(http::HeaderMap::new(), &b"{}"[..]))
    }

    #[test]
    fn serves_only_while_trusted() {
        let l1 = L1::new(1 << 20);
        l1.insert("a", entry(), l1.epoch());
        assert!(l1.get("a").is_none(), "untrusted: nothing kept");
        l1.trust();
        l1.insert("a", entry(), l1.epoch());
        assert!(l1.get("a").is_some());
        l1.distrust();
        assert!(l1.get("a").is_none());
    }

    #[test]
    fn dropping_a_base_drops_its_variants_only() {
        let l1 = L1::new(1 << 20);
        l1.trust();
        for key in ["c:1", "c:1?x=1", "c:2"] {
            l1.insert(key, entry(), l1.epoch());
        }
        l1.drop_bases(&["c:1".to_string()]);
        assert!(l1.get("c:1").is_none() && l1.get("c:1?x=1").is_none());
        assert!(l1.get("c:2").is_some());
    }

    #[test]
    fn an_entry_read_before_an_invalidation_is_not_kept() {
        let l1 = L1::new(1 << 20);
        l1.trust();
        let seen = l1.epoch();
        l1.drop_bases(&["c:1".to_string()]);
        l1.insert("c:1", entry(), seen);
        assert!(l1.get("c:1").is_none());
    }
}

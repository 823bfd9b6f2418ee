//! Which route is eating Redis: per route, the bytes of entries stored since start and an
//! estimate of what Redis holds now, with each route's share of `maxmemory`, for `/metrics`
//! and the status page. The measuring is the store's (`store::memory`); this keeps the
//! latest complete pass, maps keys to routes with the policy in force, and sets the gauges.

use crate::policy::Policy;
use crate::store::Store;
use crate::store::memory::{MemorySample, Pass};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// The latest pass, and the one in progress.
#[derive(Default)]
pub struct RedisMemory {
    latest: Mutex<Option<MemorySample>>,
    /// Taken out for a cycle and put back: a cycle awaits Redis.
    pass: Mutex<Option<Pass>>,
    /// Route labels with gauges set, so a route gone from Redis drops to 0.
    gauged: Mutex<HashSet<Arc<str>>>,
}

impl RedisMemory {
    /// One cycle of the sampling pass (bounded work); publishes the figures when the pass
    /// completes. Redis being down just ends the cycle: the next one starts a new pass.
    pub async fn cycle(&self, store: &Store, policy: &Policy) {
        let taken = self.pass.lock().expect("memory pass poisoned").take();
        let mut pass = taken.unwrap_or_else(|| store.memory_pass());
        let route_of = |base: &str| policy.route_of_base(base).map(|r| Arc::clone(&r.label));
        match store.memory_cycle(&mut pass, route_of).await {
            Ok(Some(sample)) => {
                self.publish(&sample);
                *self.latest.lock().expect("memory sample poisoned") = Some(sample);
                *self.pass.lock().expect("memory pass poisoned") = Some(pass);
            }
            Ok(None) => *self.pass.lock().expect("memory pass poisoned") = Some(pass),
            Err(e) => tracing::debug!(error = %e, "memory sampling pass abandoned"),
        }
    }

    fn publish(&self, sample: &MemorySample) {
        let mut gauged = self.gauged.lock().expect("memory gauges poisoned");
        let now: HashSet<Arc<str>> = sample.routes.iter().map(|r| Arc::clone(&r.route)).collect();
        for gone in gauged.difference(&now) {
            let label = gone.to_string();
            metrics::gauge!("cachalot_redis_route_keys", "route" => label.clone()).set(0.0);
            metrics::gauge!("cachalot_redis_route_bytes", "route" => label.clone()).set(0.0);
            metrics::gauge!("cachalot_redis_route_maxmemory_ratio", "route" => label).set(0.0);
        }
        for route in &sample.routes {
            let label = route.route.to_string();
            metrics::gauge!("cachalot_redis_route_keys", "route" => label.clone())
                .set(route.keys as f64);
            metrics::gauge!("cachalot_redis_route_bytes", "route" => label.clone())
                .set(route.bytes as f64);
            if let Some(max) = sample.maxmemory {
                metrics::gauge!("cachalot_redis_route_maxmemory_ratio", "route" => label)
                    .set(route.bytes as f64 / max as f64);
            }
        }
        if let Some(max) = sample.maxmemory {
            metrics::gauge!("cachalot_redis_maxmemory_bytes").set(max as f64);
        }
        if let Some(used) = sample.used_memory {
            metrics::gauge!("cachalot_redis_used_memory_bytes").set(used as f64);
        }
        *gauged = now;
    }

    /// The status page's figures: the latest pass, and the bytes stored since start.
    pub fn report(&self, store: &Store) -> MemoryReport {
        let latest = self.latest.lock().expect("memory sample poisoned").clone();
        let mut rows: BTreeMap<Arc<str>, RouteMemoryRow> = BTreeMap::new();
        let row = |route: &Arc<str>| RouteMemoryRow {
            route: route.to_string(),
            keys: None,
            sampled: None,
            bytes: None,
            maxmemory_share: None,
            stored_bytes_total: 0,
        };
        if let Some(sample) = &latest {
            for route in &sample.routes {
                let entry = rows
                    .entry(Arc::clone(&route.route))
                    .or_insert_with(|| row(&route.route));
                entry.keys = Some(route.keys);
                entry.sampled = Some(route.sampled);
                entry.bytes = Some(route.bytes);
                entry.maxmemory_share = sample.maxmemory.map(|max| route.bytes as f64 / max as f64);
            }
        }
        for (route, written) in store.written_bytes() {
            rows.entry(Arc::clone(&route))
                .or_insert_with(|| row(&route))
                .stored_bytes_total = written;
        }
        let mut routes: Vec<RouteMemoryRow> = rows.into_values().collect();
        routes.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.route.cmp(&b.route)));
        MemoryReport {
            measured: latest.is_some(),
            maxmemory_bytes: latest.as_ref().and_then(|s| s.maxmemory),
            used_memory_bytes: latest.as_ref().and_then(|s| s.used_memory),
            keys_scanned: latest.as_ref().map(|s| s.keys_scanned),
            pass_seconds: latest.as_ref().map(|s| s.took.as_secs_f64()),
            routes,
        }
    }
}

/// `status.json`'s `redis_memory`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemoryReport {
    /// Whether a sampling pass has completed yet.
    pub measured: bool,
    /// Redis's `maxmemory` (summed over a cluster's primaries); `None` when unlimited.
    pub maxmemory_bytes: Option<u64>,
    pub used_memory_bytes: Option<u64>,
    /// Keys the last pass scanned, and how long it took.
    pub keys_scanned: Option<u64>,
    pub pass_seconds: Option<f64>,
    /// Largest first.
    pub routes: Vec<RouteMemoryRow>,
}

/// One route's use of Redis.
#[derive(Debug, Serialize, Deserialize)]
pub struct RouteMemoryRow {
    /// The route's label, or `(proxy)` (tag sets, purge marks) or `(no route)` (keys no
    /// route of the current policy builds).
    pub route: String,
    /// Keys in Redis at the last pass (entries with their locks, generations, variant sets).
    pub keys: Option<u64>,
    /// Of which `MEMORY USAGE` was read.
    pub sampled: Option<usize>,
    /// Estimated bytes in Redis now.
    pub bytes: Option<u64>,
    /// `bytes` over `maxmemory`.
    pub maxmemory_share: Option<f64>,
    /// Bytes of encoded entries this instance stored since it started.
    pub stored_bytes_total: u64,
}

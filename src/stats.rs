//! Per-route request statistics for the live status page: how often each route hits, how
//! much origin load it saves, and how fast it answers. Prometheus has the full picture
//! (`/metrics`); this is the small, self-contained summary a person reads at a glance.

use crate::cache_status::{CacheStatus, Phase};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latency bucket upper bounds in microseconds, roughly ×2 apart: percentiles read from
/// them are within a factor of two, enough to tell a 0.3 ms hit from a 150 ms origin.
const BUCKETS_US: [u64; 20] = [
    100,
    200,
    400,
    800,
    1_600,
    3_200,
    6_400,
    12_800,
    25_600,
    51_200,
    102_400,
    204_800,
    409_600,
    819_200,
    1_638_400,
    3_276_800,
    6_553_600,
    13_107_200,
    26_214_400,
    u64::MAX,
];

/// Counters of one route (or of requests no route took).
#[derive(Debug, Default, Clone)]
struct RouteStats {
    hits: u64,
    misses: u64,
    collapsed: u64,
    passed: u64,
    bypassed: u64,
    latency: [u64; BUCKETS_US.len()],
}

/// Requests by cache phase and what follows from them: one definition for a route and for
/// all routes together.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    pub collapsed: u64,
    pub passed: u64,
    pub bypassed: u64,
    /// Hits and collapsed requests over all requests the cache handled; `None` before any.
    pub hit_ratio: Option<f64>,
    /// Requests answered without their own origin request (hits and collapsed waiters).
    pub origin_requests_saved: u64,
}

impl Counts {
    fn new(hits: u64, misses: u64, collapsed: u64, passed: u64, bypassed: u64) -> Self {
        let cached = hits + misses + collapsed;
        let saved = hits + collapsed;
        Self {
            requests: cached + passed + bypassed,
            hits,
            misses,
            collapsed,
            passed,
            bypassed,
            hit_ratio: (cached > 0).then(|| saved as f64 / cached as f64),
            origin_requests_saved: saved,
        }
    }

    /// All of them together (percentiles do not add up, so only counts have a total).
    pub fn total<'a>(all: impl IntoIterator<Item = &'a Counts>) -> Self {
        let mut phases = [0u64; 5];
        for c in all {
            for (sum, n) in
                phases
                    .iter_mut()
                    .zip([c.hits, c.misses, c.collapsed, c.passed, c.bypassed])
            {
                *sum += n;
            }
        }
        let [hits, misses, collapsed, passed, bypassed] = phases;
        Self::new(hits, misses, collapsed, passed, bypassed)
    }
}

/// What the status page shows for one route.
#[derive(Debug, Serialize, PartialEq)]
pub struct RouteSummary {
    pub route: String,
    #[serde(flatten)]
    pub counts: Counts,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Statistics of one proxy instance since it started.
pub struct Stats {
    started: Instant,
    routes: Mutex<BTreeMap<Arc<str>, RouteStats>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            routes: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Stats {
    /// Counts one answered request.
    pub fn record(&self, status: &CacheStatus, elapsed: Duration) {
        let label = status
            .label
            .clone()
            .unwrap_or_else(|| Arc::from("(no route)"));
        let bucket = BUCKETS_US
            .iter()
            .position(|&bound| elapsed.as_micros() as u64 <= bound)
            .unwrap_or(BUCKETS_US.len() - 1);
        let mut routes = self.routes.lock().expect("stats poisoned");
        let route = routes.entry(label).or_default();
        match status.phase {
            Phase::Hit => route.hits += 1,
            Phase::Miss => route.misses += 1,
            Phase::Collapsed => route.collapsed += 1,
            Phase::Pass => route.passed += 1,
            Phase::Bypass => route.bypassed += 1,
        }
        route.latency[bucket] += 1;
    }

    /// How long these statistics have been collected.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// One summary per route, in label order.
    pub fn summaries(&self) -> Vec<RouteSummary> {
        let routes = self.routes.lock().expect("stats poisoned").clone();
        routes
            .into_iter()
            .map(|(label, s)| RouteSummary {
                route: label.to_string(),
                counts: Counts::new(s.hits, s.misses, s.collapsed, s.passed, s.bypassed),
                p50_ms: percentile(&s.latency, 0.50),
                p99_ms: percentile(&s.latency, 0.99),
            })
            .collect()
    }
}

/// The upper bound (in ms) of the bucket holding the `q` quantile.
fn percentile(latency: &[u64], q: f64) -> Option<f64> {
    let total: u64 = latency.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (count, bound) in latency.iter().zip(BUCKETS_US) {
        seen += count;
        if seen >= rank {
            let bound = if bound == u64::MAX {
                BUCKETS_US[BUCKETS_US.len() - 2] * 2
            } else {
                bound
            };
            return Some(bound as f64 / 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: Phase, label: &str) -> CacheStatus {
        let mut status = CacheStatus::new(phase);
        status.label = Some(Arc::from(label));
        status
    }

    #[test]
    fn summarises_hit_ratio_saved_requests_and_percentiles() {
        let stats = Stats::default();
        for _ in 0..8 {
            stats.record(
                &status(Phase::Hit, "credential"),
                Duration::from_micros(150),
            );
        }
        stats.record(
            &status(Phase::Collapsed, "credential"),
            Duration::from_millis(30),
        );
        stats.record(
            &status(Phase::Miss, "credential"),
            Duration::from_millis(30),
        );
        stats.record(&CacheStatus::new(Phase::Pass), Duration::from_millis(1));
        let summaries = stats.summaries();
        assert_eq!(summaries.len(), 2);
        let credential = summaries.iter().find(|s| s.route == "credential").unwrap();
        assert_eq!(credential.counts.requests, 10);
        assert_eq!(credential.counts.origin_requests_saved, 9);
        assert_eq!(credential.counts.hit_ratio, Some(0.9));
        assert_eq!(credential.p50_ms, Some(0.2));
        assert_eq!(credential.p99_ms, Some(51.2));
        let unrouted = summaries.iter().find(|s| s.route == "(no route)").unwrap();
        assert_eq!(unrouted.counts.hit_ratio, None);
    }

    #[test]
    fn totals_add_up_and_the_ratio_counts_cached_requests_only() {
        let a = Counts::new(3, 1, 0, 1, 0);
        let b = Counts::new(0, 4, 0, 1, 0);
        let totals = Counts::total([&a, &b]);
        assert_eq!(totals.requests, 10);
        assert_eq!(totals.passed, 2);
        assert_eq!(totals.origin_requests_saved, 3);
        assert_eq!(totals.hit_ratio, Some(3.0 / 8.0));
        assert_eq!(Counts::total([]).hit_ratio, None);
    }
}

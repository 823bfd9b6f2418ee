//! Per-route accounting of every answered request: the live status page's summary (how
//! often each route hits, how much origin load it saves, how fast it answers) and the
//! Prometheus request metrics (`/metrics` has the full picture).
//!
//! Both are kept per route label in one [`Meter`] found by one map read: the metric handles
//! are registered once per route (and per phase and reason, on first use) instead of being
//! looked up by name and labels on every request, and the status page's counters are
//! atomics, so requests on different threads never wait for each other here.

use crate::observe::redis_memory::RedisMemory;
use crate::observe::uncached::Uncached;
use crate::phase::{Outcome, Phase, Reason};
use arc_swap::ArcSwap;
use metrics::{Counter, Histogram, SharedString};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

/// How many phase labels there are (see [`Phase::LABELS`]).
const PHASES: usize = Phase::LABELS.len();

/// A phase's place in the arrays below.
fn slot(phase: Phase) -> usize {
    phase.slot()
}

/// What one route (or the requests no route took) has answered.
struct Meter {
    /// The route's label in `/metrics` (`-` for no route).
    label: SharedString,
    /// Requests by phase, for the status page.
    phases: [AtomicU64; PHASES],
    latency: [AtomicU64; BUCKETS_US.len()],
    /// `cachalot_requests_total` by phase and reason (no reason first), registered when
    /// first used: most of the combinations never happen on a given route.
    requests: Box<[OnceLock<Counter>]>,
    /// `cachalot_request_duration_seconds` by phase, registered when first used.
    durations: [OnceLock<Histogram>; PHASES],
}

impl Meter {
    fn new(label: SharedString) -> Self {
        Self {
            label,
            phases: Default::default(),
            latency: Default::default(),
            requests: (0..PHASES * (Reason::COUNT + 1))
                .map(|_| OnceLock::new())
                .collect(),
            durations: Default::default(),
        }
    }

    fn requests(&self, phase: Phase) -> Counter {
        let reason = phase.reason();
        let register = || metrics::counter!("cachalot_requests_total", "route" => self.label.clone(), "phase" => phase.label(), "reason" => reason.map_or("-", Reason::as_str));
        let column = reason.map_or(0, |r| r as usize + 1);
        if column > Reason::COUNT {
            return register();
        }
        self.requests[slot(phase) * (Reason::COUNT + 1) + column]
            .get_or_init(register)
            .clone()
    }

    fn record(&self, status: &Outcome, elapsed: Duration) {
        let phase = slot(status.phase);
        self.requests(status.phase).increment(1);
        self.durations[phase]
            .get_or_init(|| {
                metrics::histogram!("cachalot_request_duration_seconds", "route" => self.label.clone(), "phase" => status.phase.label())
            })
            .record(elapsed.as_secs_f64());
        self.phases[phase].fetch_add(1, Ordering::Relaxed);
        let bucket = BUCKETS_US
            .iter()
            .position(|&bound| elapsed.as_micros() as u64 <= bound)
            .unwrap_or(BUCKETS_US.len() - 1);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn summary(&self, route: &str) -> RouteSummary {
        let phases = self.phases.each_ref().map(|n| n.load(Ordering::Relaxed));
        let latency = self.latency.each_ref().map(|n| n.load(Ordering::Relaxed));
        RouteSummary {
            route: route.to_string(),
            counts: Counts::new(phases),
            p50_ms: percentile(&latency, 0.50),
            p99_ms: percentile(&latency, 0.99),
        }
    }
}

/// Requests by cache phase and what follows from them: one definition for a route and for
/// all routes together.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq)]
pub struct Counts {
    pub requests: u64,
    pub hits: u64,
    /// Answered from a stale entry (stale-while-revalidate, max-stale, stale-if-error).
    pub stale: u64,
    pub misses: u64,
    /// Stale entries revalidated with the origin.
    pub expired: u64,
    pub collapsed: u64,
    pub passed: u64,
    pub bypassed: u64,
    /// Answered by the proxy itself (bad requests, bodies over the limit, `OPTIONS *`).
    pub refused: u64,
    /// Requests answered from the cache (hit, stale, collapsed) over all requests the cache
    /// handled (those and miss, expired); `None` before any.
    pub hit_ratio: Option<f64>,
    /// Requests answered from a stored entry rather than their own origin response (hit,
    /// stale, collapsed).
    pub origin_requests_saved: u64,
}

impl Counts {
    /// From the counts by phase, in [`Phase::LABELS`] order.
    fn new(phases: [u64; PHASES]) -> Self {
        let [
            hits,
            stale,
            misses,
            expired,
            collapsed,
            passed,
            bypassed,
            refused,
        ] = phases;
        let saved = hits + stale + collapsed;
        let cached = saved + misses + expired;
        Self {
            requests: cached + passed + bypassed + refused,
            hits,
            stale,
            misses,
            expired,
            collapsed,
            passed,
            bypassed,
            refused,
            hit_ratio: (cached > 0).then(|| saved as f64 / cached as f64),
            origin_requests_saved: saved,
        }
    }

    /// All of them together (percentiles do not add up, so only counts have a total).
    pub fn total<'a>(all: impl IntoIterator<Item = &'a Counts>) -> Self {
        let mut phases = [0u64; PHASES];
        for c in all {
            let counted = [
                c.hits,
                c.stale,
                c.misses,
                c.expired,
                c.collapsed,
                c.passed,
                c.bypassed,
                c.refused,
            ];
            for (sum, n) in phases.iter_mut().zip(counted) {
                *sum += n;
            }
        }
        Self::new(phases)
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

/// The status page's name for requests no route took.
const NO_ROUTE: &str = "(no route)";

/// Statistics of one proxy instance since it started.
pub struct Stats {
    started: Instant,
    /// One meter per route label, kept across policy reloads. Read on every request; a
    /// route's first request adds its meter, swapping the map whole.
    meters: ArcSwap<HashMap<Arc<str>, Arc<Meter>>>,
    /// Serialises adding meters, so two first requests do not lose one of them.
    adding: Mutex<()>,
    unrouted: Meter,
    /// `cachalot_response_bytes_total` by where the body came from.
    bytes_from_cache: Counter,
    bytes_from_origin: Counter,
    /// Requests no cached route answered, by shape: what to cache next.
    uncached: Uncached,
    /// Redis memory per route.
    memory: RedisMemory,
}

impl Default for Stats {
    fn default() -> Self {
        // Handles registered before the recorder exists would record nowhere.
        crate::observe::metrics::install();
        Self {
            started: Instant::now(),
            meters: ArcSwap::default(),
            adding: Mutex::new(()),
            unrouted: Meter::new(SharedString::const_str("-")),
            bytes_from_cache: metrics::counter!("cachalot_response_bytes_total", "source" => "cache"),
            bytes_from_origin: metrics::counter!("cachalot_response_bytes_total", "source" => "origin"),
            uncached: Uncached::default(),
            memory: RedisMemory::default(),
        }
    }
}

impl Stats {
    /// Counts one answered request, under its route, cache phase and reason, and the body
    /// bytes it was answered with (when their length is known) by where they came from.
    pub fn record(&self, status: &Outcome, body_bytes: Option<u64>, elapsed: Duration) {
        match &status.label {
            Some(label) => self.meter(label).record(status, elapsed),
            None => self.unrouted.record(status, elapsed),
        }
        if let Some(bytes) = body_bytes {
            if status.phase.from_cache() {
                self.bytes_from_cache.increment(bytes)
            } else {
                self.bytes_from_origin.increment(bytes)
            }
        }
    }

    fn meter(&self, label: &Arc<str>) -> Arc<Meter> {
        if let Some(meter) = self.meters.load().get(label) {
            return Arc::clone(meter);
        }
        let _adding = self.adding.lock().expect("stats poisoned");
        let mut meters = HashMap::clone(&self.meters.load());
        let meter =
            Arc::clone(meters.entry(Arc::clone(label)).or_insert_with(|| {
                Arc::new(Meter::new(SharedString::from_shared(Arc::clone(label))))
            }));
        self.meters.store(Arc::new(meters));
        meter
    }

    /// The requests no cached route answered, grouped (see `uncached`).
    pub fn uncached(&self) -> &Uncached {
        &self.uncached
    }

    /// Redis memory per route (see `redis_memory`).
    pub fn memory(&self) -> &RedisMemory {
        &self.memory
    }

    /// How long these statistics have been collected.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// One summary per route that has answered a request, in label order.
    pub fn summaries(&self) -> Vec<RouteSummary> {
        let meters = self.meters.load();
        let mut summaries: Vec<RouteSummary> = meters
            .iter()
            .map(|(label, meter)| meter.summary(label))
            .collect();
        let unrouted = self.unrouted.summary(NO_ROUTE);
        if unrouted.counts.requests > 0 {
            summaries.push(unrouted);
        }
        summaries.sort_by(|a, b| a.route.cmp(&b.route));
        summaries
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

    use crate::phase::Fill;

    fn status(phase: Phase, label: &str) -> Outcome {
        let mut status = Outcome::new(phase);
        status.label = Some(Arc::from(label));
        status
    }

    #[test]
    fn summarises_hit_ratio_saved_requests_and_percentiles() {
        let stats = Stats::default();
        for _ in 0..8 {
            stats.record(
                &status(Phase::Hit(None), "credential"),
                None,
                Duration::from_micros(150),
            );
        }
        stats.record(
            &status(Phase::Collapsed, "credential"),
            None,
            Duration::from_millis(30),
        );
        stats.record(
            &status(Phase::Miss(Fill::Stored(None)), "credential"),
            Some(10),
            Duration::from_millis(30),
        );
        stats.record(
            &Outcome::new(Phase::Pass(Reason::NoRoute)),
            None,
            Duration::from_millis(1),
        );
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
        let a = Counts::new([3, 0, 1, 0, 0, 1, 0, 0]);
        let b = Counts::new([0, 0, 4, 0, 0, 1, 0, 0]);
        let totals = Counts::total([&a, &b]);
        assert_eq!(totals.requests, 10);
        assert_eq!(totals.passed, 2);
        assert_eq!(totals.origin_requests_saved, 3);
        assert_eq!(totals.hit_ratio, Some(3.0 / 8.0));
        assert_eq!(Counts::total([]).hit_ratio, None);
    }
}

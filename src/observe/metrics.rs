//! Counters and histograms, exported in the Prometheus text format on the admin listener.
//!
//! The `metrics` facade records from anywhere in the code; one process-wide recorder
//! (metrics-exporter-prometheus) renders them for `GET /metrics`. Metric names and label
//! values use the same words as `Cache-Status` and the logs.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Histogram buckets in seconds: a Redis hit takes well under a millisecond, a legacy
/// origin tens to thousands.
const LATENCY_BUCKETS: &[f64] = &[
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the recorder once per process (several proxies in one test process share it).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours renders nothing
        // new, which is what a library embedded in a bigger program should accept.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        metrics::gauge!("cachalot_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // Histograms buffer samples until upkeep folds them into buckets: without it memory
        // grows with every request while nobody scrapes /metrics.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            })
            .expect("a thread can be started");
        handle
    })
}

/// The `# HELP` line of every metric the proxy records (the exporter prints them with the
/// metric once it has a value).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "cachalot_build_info",
        "The running cachalot's version (label), always 1"
    );
    describe_gauge!(
        "cachalot_redis_up",
        "1 while Redis answers, 0 while requests go to the origin without it"
    );
    describe_counter!(
        "cachalot_send_timeouts_total",
        "Responses cut off because the client took nothing for send_timeout, by scope (connection or HTTP/2 stream)"
    );
    describe_counter!(
        "cachalot_h2_late_resets_total",
        "HTTP/2 streams the client reset after the proxy accepted them (counted against h2_max_resets)"
    );
    describe_counter!(
        "cachalot_requests_total",
        "Requests answered, by route and Cache-Status phase and reason"
    );
    describe_histogram!(
        "cachalot_request_duration_seconds",
        Unit::Seconds,
        "Time from request head to response head, by route and Cache-Status phase"
    );
    describe_counter!(
        "cachalot_response_bytes_total",
        Unit::Bytes,
        "Response body bytes sent to clients, by source (cache or origin)"
    );
    describe_counter!(
        "cachalot_origin_requests_total",
        "Requests sent to the origin, by route and response status"
    );
    describe_histogram!(
        "cachalot_origin_duration_seconds",
        Unit::Seconds,
        "Time the origin took to send a response head"
    );
    describe_counter!(
        "cachalot_redis_errors_total",
        "Redis commands that failed, by kind"
    );
    describe_histogram!(
        "cachalot_redis_command_duration_seconds",
        Unit::Seconds,
        "Time per Redis command, by command"
    );
    describe_counter!(
        "cachalot_collapse_waiters_total",
        "Requests that waited for another request's fill of the same key"
    );
    describe_counter!(
        "cachalot_collapse_timeouts_total",
        "Waiters that gave up after collapse.wait and asked the origin themselves"
    );
    describe_counter!(
        "cachalot_background_refreshes_total",
        "Stale entries refreshed in the background (stale-while-revalidate)"
    );
    describe_counter!(
        "cachalot_invalidations_total",
        "Invalidations applied, by source and outcome"
    );
    describe_counter!(
        "cachalot_invalidation_messages_malformed_total",
        "Invalidation messages on the channel that could not be read"
    );
    describe_counter!(
        "cachalot_policy_reloads_total",
        "Policy reloads, applied or rejected"
    );
    describe_counter!(
        "cachalot_connections_refused_total",
        "Connections closed at once because a listener limit was reached"
    );
    describe_counter!(
        "cachalot_variants_refused_total",
        "Responses not stored because their key had too many variants"
    );
    describe_counter!(
        "cachalot_l1_lookups_total",
        "Lookups in the in-process tier, by result"
    );
    describe_counter!(
        "cachalot_log_lines_dropped_total",
        "Log lines dropped because the log's queue was full (the writer could not keep up)"
    );
    describe_gauge!("cachalot_l1_entries", "Entries held in the in-process tier");
    describe_counter!(
        "cachalot_stored_bytes_total",
        Unit::Bytes,
        "Bytes of encoded entries this instance stored in Redis, by route"
    );
    describe_gauge!(
        "cachalot_redis_route_keys",
        "Keys in Redis per route (entries, locks, generations, variant sets) at the last sampling pass"
    );
    describe_gauge!(
        "cachalot_redis_route_bytes",
        Unit::Bytes,
        "Bytes Redis holds per route, from MEMORY USAGE of a sample of its keys at the last pass"
    );
    describe_gauge!(
        "cachalot_redis_route_maxmemory_ratio",
        "Each route's share of Redis maxmemory at the last sampling pass (absent without maxmemory)"
    );
    describe_gauge!(
        "cachalot_redis_maxmemory_bytes",
        Unit::Bytes,
        "Redis maxmemory (INFO memory), summed over a cluster's primaries"
    );
    describe_gauge!(
        "cachalot_redis_used_memory_bytes",
        Unit::Bytes,
        "Redis used_memory (INFO memory), summed over a cluster's primaries"
    );
    describe_counter!(
        "cachalot_verify_total",
        "Fresh hits verified against the origin in the background, by route and result (match, changed, mismatch, error, skipped)"
    );
    describe_counter!(
        "cachalot_verify_differences_total",
        "Parts of the origin's answer that differed from the entry served, by route and part"
    );
    describe_gauge!(
        "cachalot_l1_bytes",
        Unit::Bytes,
        "Bytes held in the in-process tier"
    );
}

/// How often buffered histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The current metrics in the Prometheus text format.
pub fn render() -> String {
    let handle = install();
    crate::observe::log_output::publish_dropped();
    handle.render()
}

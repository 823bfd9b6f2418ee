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

/// How often buffered histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The current metrics in the Prometheus text format.
pub fn render() -> String {
    install().render()
}

//! What the proxy tells its operators: Prometheus metrics and per-route statistics.

pub mod metrics;
pub mod stats;

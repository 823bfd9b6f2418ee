//! What the proxy tells its operators: the access log and where log lines go, Prometheus
//! metrics and per-route statistics.

pub mod access_log;
pub mod log_output;
pub mod metrics;
pub mod stats;

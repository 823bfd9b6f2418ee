//! What the proxy tells its operators: the access log and where log lines go, Prometheus
//! metrics, per-route statistics and what shadow verification found.

pub mod access_log;
pub mod log_output;
pub mod metrics;
pub mod redis_memory;
pub mod shape;
pub mod stats;
pub mod uncached;
pub mod verify;

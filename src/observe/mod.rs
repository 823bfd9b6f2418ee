//! What the proxy tells its operators: the access log, Prometheus metrics, per-route
//! statistics and what shadow verification found.

pub mod access_log;
pub mod metrics;
pub mod stats;
pub mod verify;

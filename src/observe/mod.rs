//! What the proxy tells its operators: the access log, Prometheus metrics, per-route
//! statistics and what shadow verification found.

pub mod access_log;
pub mod metrics;
pub mod redis_memory;
pub mod shape;
pub mod stats;
pub mod uncached;
pub mod verify;

//! What the proxy tells its operators: the access log, Prometheus metrics and per-route
//! statistics.

pub mod access_log;
pub mod metrics;
pub mod redis_memory;
pub mod shape;
pub mod stats;
pub mod uncached;

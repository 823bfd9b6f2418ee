//! The access log: one line per answered request at info, under its own target so that
//! `RUST_LOG=info,cachalot::access=warn` keeps the other logs and drops these. Its words
//! (`phase`, `reason`) are the phase table's (see `crate::phase`), like the header's and the
//! metrics'. Apart from the proxy so that what a line holds is read in one place.

use crate::phase::{Outcome, Reason};
use http::Method;
use std::time::Duration;

/// The access log's target.
pub const ACCESS_LOG: &str = "cachalot::access";

/// Whether lines are written (RUST_LOG=warn, or cachalot::access=warn, turns them off), so
/// the proxy copies the request's target only when they are.
pub fn enabled() -> bool {
    tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO)
}

/// What one line says about a request.
pub struct Line<'a> {
    pub request_id: &'a str,
    pub method: &'a Method,
    /// Path and query, as the client sent them.
    pub path: &'a str,
    pub outcome: &'a Outcome,
    /// The cached route's key (without the Redis prefix), if the cache was involved.
    pub key: Option<&'a str>,
    /// The status sent to the client.
    pub status: u16,
    pub latency: Duration,
}

/// Writes the line.
pub fn record(line: &Line<'_>) {
    tracing::info!(
        target: ACCESS_LOG,
        request_id = line.request_id,
        method = %line.method,
        path = line.path,
        route = line.outcome.label.as_deref().unwrap_or("-"),
        phase = line.outcome.phase.label(),
        reason = line.outcome.phase.reason().map_or("-", Reason::as_str),
        key = line.key.unwrap_or("-"),
        status = line.status,
        latency_us = line.latency.as_micros() as u64,
        "request"
    );
}

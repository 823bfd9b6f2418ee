//! What one response reports: its phase, route, TTL and origin status, written as the
//! `Cache-Status` header.

use super::Phase;
use crate::policy::route::Route;
use http::HeaderValue;
use std::fmt::{self, Write};
use std::sync::Arc;

/// Everything `Cache-Status`, the access log and the metrics report for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub phase: Phase,
    /// The route's name, when it has one (shown in `detail`).
    pub route: Option<Arc<str>>,
    /// The route's label for logs and metrics (its name, else its `match`), if a route matched.
    pub label: Option<Arc<str>>,
    /// Seconds of freshness left, for responses served from a stored entry.
    pub ttl: Option<u64>,
    /// The origin's status, when the origin was asked.
    pub fwd_status: Option<u16>,
}

impl Outcome {
    pub fn new(phase: Phase) -> Self {
        Self {
            phase,
            route: None,
            label: None,
            ttl: None,
            fwd_status: None,
        }
    }

    pub fn on_route(mut self, route: &Route) -> Self {
        self.route = route.name.clone();
        self.label = Some(Arc::clone(&route.label));
        self
    }

    /// The route's label as a metric label value (`-` when no route matched).
    pub fn metric_route(&self) -> metrics::SharedString {
        self.label.clone().map_or_else(
            || metrics::SharedString::const_str("-"),
            metrics::SharedString::from_shared,
        )
    }

    /// The header value, e.g. `cachalot; hit; ttl=540; detail=credential`.
    pub fn header_value(&self) -> HeaderValue {
        let mut text = String::with_capacity(64);
        let _ = write!(text, "{self}");
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .unwrap_or_else(|_| HeaderValue::from_static("cachalot"))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = self.phase.words();
        write!(f, "cachalot; {}", words.fwd)?;
        if let Some(status) = self.fwd_status {
            write!(f, "; fwd-status={status}")?;
        }
        if words.collapsed {
            f.write_str("; collapsed")?;
        }
        if words.stored {
            f.write_str("; stored")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={ttl}")?;
        }
        match (&self.route, words.reason) {
            (Some(route), Some(reason)) => write!(f, "; detail={route}/{}", reason.as_str()),
            (Some(route), None) => write!(f, "; detail={route}"),
            (None, Some(reason)) => write!(f, "; detail={}", reason.as_str()),
            (None, None) => Ok(()),
        }
    }
}

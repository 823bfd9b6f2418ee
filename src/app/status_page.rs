//! The live status page on the admin listener: is it working, is it helping, per route.
//!
//! `GET /` is one self-contained HTML page (inline CSS and script, nothing fetched from
//! elsewhere, so it works on an air-gapped host and leaks nothing to a CDN) that polls
//! `GET /status.json` every two seconds. Requests per second are computed by the page from
//! the difference between two polls, so the proxy keeps no time series for it.
//!
//! Redis health is the store's own view (the flag every request checks). Origin health is a
//! TCP connect to the origin: cheap, needs no health endpoint on the origin, and tells the
//! one thing a connect can, that something accepts connections there.

use crate::observe::redis_memory::MemoryReport;
use crate::observe::stats::{Counts, RouteSummary};
use crate::observe::uncached::UncachedReport;
use crate::observe::verify::{Example, RouteCounts};
use crate::policy::Policy;
use crate::request::proxy::Proxy;
use serde::Serialize;
use std::time::{Duration, Instant};

/// The page, served as is.
pub const PAGE: &str = include_str!("status_page.html");

/// Everything can come from this origin only; inline style and script are the page's own.
/// Enforces "no CDN": a future edit that pulls in a remote asset fails visibly.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; \
    script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Longest the origin probe waits for a connection; a slower origin counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The body of `GET /status.json`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub uptime_s: f64,
    pub policy: PolicyInfo,
    pub redis: RedisHealth,
    pub origin: OriginHealth,
    /// All routes together (no percentiles: they do not add up).
    pub totals: Counts,
    pub routes: Vec<RouteSummary>,
    /// What shadow verification found.
    pub verify: VerifyStatus,
    /// What to cache next: the GET and HEAD requests no cached route answered.
    pub uncached: UncachedReport,
    /// Redis memory per route.
    pub redis_memory: MemoryReport,
}

/// Shadow verification on the status page: per route with a share set or counts kept, and
/// the last answers that differed.
#[derive(Debug, Serialize)]
pub struct VerifyStatus {
    /// `[verify] concurrency`, and how many verification requests are in flight now.
    pub concurrency: usize,
    pub in_flight: usize,
    pub routes: Vec<RouteVerify>,
    /// Newest first.
    pub examples: Vec<VerifyExample>,
}

#[derive(Debug, Serialize)]
pub struct RouteVerify {
    /// The route's share of fresh hits verified under the policy now (0: off).
    pub fraction: f64,
    #[serde(flatten)]
    pub counts: RouteCounts,
}

#[derive(Debug, Serialize)]
pub struct VerifyExample {
    #[serde(flatten)]
    pub example: Example,
    /// Seconds since it was found.
    pub age_s: u64,
}

#[derive(Debug, Serialize)]
pub struct PolicyInfo {
    /// The policy file as given on the command line.
    pub file: String,
    pub routes: usize,
}

#[derive(Debug, Serialize)]
pub struct RedisHealth {
    pub healthy: bool,
}

#[derive(Debug, Serialize)]
pub struct OriginHealth {
    pub url: String,
    /// Whether a TCP connection to the origin opened within a second.
    pub reachable: bool,
    pub connect_ms: Option<f64>,
    pub error: Option<String>,
}

/// The numbers now.
pub async fn snapshot(proxy: &Proxy) -> Status {
    let policy = proxy.policy();
    let routes = proxy.stats().summaries();
    Status {
        uptime_s: proxy.stats().uptime().as_secs_f64(),
        policy: PolicyInfo {
            file: policy.file.clone(),
            routes: policy.routes.len(),
        },
        redis: RedisHealth {
            healthy: proxy.store.is_healthy(),
        },
        origin: probe_origin(&policy.origin.url).await,
        totals: Counts::total(routes.iter().map(|r| &r.counts)),
        routes,
        uncached: proxy.stats().uncached().report(),
        redis_memory: proxy.stats().memory().report(&proxy.store),
        verify: verify_status(proxy, &policy),
    }
}

/// Every route verified so far or set to verify now (by label), with its share now.
fn verify_status(proxy: &Proxy, policy: &Policy) -> VerifyStatus {
    let verifications = proxy.verifications();
    let mut routes: Vec<RouteVerify> = verifications
        .counts()
        .into_iter()
        .map(|counts| RouteVerify {
            fraction: 0.0,
            counts,
        })
        .collect();
    for route in policy.routes.iter() {
        let fraction = policy.verify_fraction(route);
        let label = route.label.as_ref();
        match routes.iter_mut().find(|r| r.counts.route == label) {
            Some(known) => known.fraction = fraction.as_f64(),
            None if !fraction.is_off() => routes.push(RouteVerify {
                fraction: fraction.as_f64(),
                counts: RouteCounts {
                    route: label.to_string(),
                    ..RouteCounts::default()
                },
            }),
            None => {}
        }
    }
    routes.sort_by(|a, b| a.counts.route.cmp(&b.counts.route));
    VerifyStatus {
        concurrency: policy.verify.concurrency,
        in_flight: verifications.in_flight(),
        routes,
        examples: verifications
            .examples()
            .into_iter()
            .map(|(example, age_s)| VerifyExample { example, age_s })
            .collect(),
    }
}

/// Opens (and drops) one TCP connection to the origin.
async fn probe_origin(url: &http::Uri) -> OriginHealth {
    let host = url
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_u16().unwrap_or(80);
    let started = Instant::now();
    let outcome =
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await;
    let error = match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no connection within {PROBE_TIMEOUT:?}")),
    };
    OriginHealth {
        url: url.to_string(),
        reachable: error.is_none(),
        connect_ms: error
            .is_none()
            .then(|| started.elapsed().as_secs_f64() * 1000.0),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for remote in ["http:", "https:", "src=", "href=", "@import", "url("] {
            assert!(!PAGE.contains(remote), "the status page uses {remote}");
        }
        assert!(PAGE.contains("status.json"));
    }

    #[tokio::test]
    async fn a_closed_port_is_an_unreachable_origin() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: http::Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        assert!(probe_origin(&url).await.reachable);
        drop(listener);
        let health = probe_origin(&url).await;
        assert!(!health.reachable);
        assert!(health.error.is_some());
        assert_eq!(health.connect_ms, None);
    }
}

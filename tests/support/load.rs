//! Steady load for failure drills: a few clients request paths in a loop and record every
//! answer's status, latency, whether it was a hit and when it came.

use super::get;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One answer during a drill.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When the answer arrived.
    pub at: Instant,
    pub latency: Duration,
    pub ok: bool,
    pub hit: bool,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Report {
    pub samples: Vec<Sample>,
}

impl Report {
    pub fn requests(&self) -> usize {
        self.samples.len()
    }

    /// Answers other than 200.
    pub fn errors(&self) -> usize {
        self.samples.iter().filter(|s| !s.ok).count()
    }

    pub fn max_latency(&self) -> Duration {
        self.samples
            .iter()
            .map(|s| s.latency)
            .max()
            .unwrap_or_default()
    }

    /// The longest latency of a request sent after `from` that answered before `until`.
    pub fn max_latency_between(&self, from: Instant, until: Instant) -> Duration {
        self.samples
            .iter()
            .filter(|s| s.at - s.latency >= from && s.at <= until)
            .map(|s| s.latency)
            .max()
            .unwrap_or_default()
    }

    /// How long after `since` the first hit arrived.
    pub fn first_hit_after(&self, since: Instant) -> Option<Duration> {
        self.samples
            .iter()
            .filter(|s| s.hit && s.at - s.latency >= since)
            .map(|s| s.at - since)
            .min()
    }
}

/// Requests `paths` round-robin from `clients` concurrent clients for `length`.
pub async fn steady(
    addr: SocketAddr,
    paths: Vec<String>,
    clients: usize,
    length: Duration,
) -> Report {
    let deadline = Instant::now() + length;
    let paths = std::sync::Arc::new(paths);
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let paths = paths.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut i = c * paths.len() / clients.max(1);
                while Instant::now() < deadline {
                    i = (i + 1) % paths.len();
                    let sent = Instant::now();
                    let got = get(addr, &paths[i], &[]).await;
                    samples.push(Sample {
                        at: Instant::now(),
                        latency: sent.elapsed(),
                        ok: got.status == 200,
                        hit: got.hit(),
                    });
                }
                samples
            })
        })
        .collect();
    let mut report = Report::default();
    for worker in workers {
        report.samples.extend(worker.await.expect("load client"));
    }
    report.samples.sort_by_key(|s| s.at);
    report
}

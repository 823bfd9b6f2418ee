//! How much of Redis each route takes: the bytes of the entries the proxy wrote (counted as
//! they are stored), and what Redis holds now, measured by a sampling pass over the proxy's
//! keys.
//!
//! A pass SCANs `<prefix>:*` (on every primary of a cluster, since each holds only its own
//! slots), a bounded number of keys per cycle, resuming where the last cycle stopped. Each
//! key is attributed to a base (an entry, and its lock, generation and variant set, all name
//! their base) and the caller maps the base to a route. Per route it keeps the key count and
//! a uniform sample of its keys (reservoir sampling); when the pass ends it runs
//! `MEMORY USAGE` on the samples and extrapolates: the sum itself when every key was
//! sampled, else the key count times the sampled mean. `INFO memory` gives `maxmemory`
//! (managed Redis often refuses `CONFIG GET`), summed over a cluster's primaries.

use super::command::Op;
use super::{Failure, Store, Unavailable};
use fred::prelude::*;
use fred::types::InfoKind;
use fred::types::config::Server;
use metrics::Counter;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Keys one cycle scans at most: a SCAN of this many keys costs Redis a few milliseconds.
pub const KEYS_PER_CYCLE: usize = 10_000;
/// Keys asked for per SCAN call.
const SCAN_BATCH: u32 = 1_000;
/// Keys per route whose `MEMORY USAGE` is asked at the end of a pass.
pub const SAMPLES_PER_ROUTE: usize = 100;
/// `MEMORY USAGE` commands per pipeline.
const USAGE_BATCH: usize = 500;

/// The tally of keys that belong to no base: tag sets and purge marks.
pub const PROXY_OWN: &str = "(proxy)";
/// The tally of entries no route of the current policy builds (an older policy's).
pub const NO_ROUTE: &str = "(no route)";

/// Bytes of encoded entries written per route, since start: `cachalot_stored_bytes_total`.
#[derive(Default)]
pub(super) struct Written(Mutex<HashMap<Arc<str>, (u64, Counter)>>);

impl Written {
    pub(super) fn add(&self, route: &Arc<str>, bytes: u64) {
        let mut routes = self.0.lock().expect("written bytes poisoned");
        let (total, counter) = routes.entry(Arc::clone(route)).or_insert_with(|| {
            (
                0,
                metrics::counter!("cachalot_stored_bytes_total", "route" => route.to_string()),
            )
        });
        *total += bytes;
        counter.increment(bytes);
    }
}

/// One pass over the proxy's keys, carried from cycle to cycle.
pub struct Pass {
    /// Nodes still to scan, with their cursors (`None`: not a cluster).
    nodes: Vec<(Option<Server>, String)>,
    started: Instant,
    scanned: u64,
    tallies: HashMap<Arc<str>, Tally>,
}

#[derive(Default)]
struct Tally {
    keys: u64,
    sample: Vec<String>,
}

impl Tally {
    /// Reservoir sampling: every key seen so far is in the sample with equal chance.
    fn add(&mut self, key: &str, rng: &mut impl Rng) {
        self.keys += 1;
        if self.sample.len() < SAMPLES_PER_ROUTE {
            self.sample.push(key.to_string());
        } else {
            let slot = rng.random_range(0..self.keys) as usize;
            if slot < SAMPLES_PER_ROUTE {
                self.sample[slot] = key.to_string();
            }
        }
    }
}

/// What one pass found.
#[derive(Debug, Clone)]
pub struct MemorySample {
    /// Per route label (and [`PROXY_OWN`], [`NO_ROUTE`]), by label.
    pub routes: Vec<RouteMemory>,
    /// `maxmemory` summed over the primaries; `None` when one has no limit (or `INFO` was
    /// refused).
    pub maxmemory: Option<u64>,
    /// `used_memory` summed over the primaries.
    pub used_memory: Option<u64>,
    pub keys_scanned: u64,
    pub took: Duration,
}

/// One route's share of Redis.
#[derive(Debug, Clone)]
pub struct RouteMemory {
    pub route: Arc<str>,
    pub keys: u64,
    /// Keys whose `MEMORY USAGE` was read.
    pub sampled: usize,
    /// Estimated bytes in Redis.
    pub bytes: u64,
}

impl Store {
    /// Bytes of encoded entries stored per route since start, by route label.
    pub fn written_bytes(&self) -> Vec<(Arc<str>, u64)> {
        let routes = self.written.0.lock().expect("written bytes poisoned");
        routes
            .iter()
            .map(|(route, (bytes, _))| (Arc::clone(route), *bytes))
            .collect()
    }

    /// A new pass over every primary.
    pub fn memory_pass(&self) -> Pass {
        Pass {
            nodes: self
                .primaries()
                .into_iter()
                .map(|n| (n, "0".to_string()))
                .collect(),
            started: Instant::now(),
            scanned: 0,
            tallies: HashMap::new(),
        }
    }

    /// Scans up to [`KEYS_PER_CYCLE`] keys of the pass; `route_of` names the route a base
    /// belongs to. When the pass is complete, samples and returns what it found.
    pub async fn memory_cycle(
        &self,
        pass: &mut Pass,
        route_of: impl Fn(&str) -> Option<Arc<str>>,
    ) -> Result<Option<MemorySample>, Unavailable> {
        let pattern = self.keys.everything();
        let own: Arc<str> = Arc::from(PROXY_OWN);
        let unrouted: Arc<str> = Arc::from(NO_ROUTE);
        let mut budget = KEYS_PER_CYCLE;
        while budget > 0 {
            let Some((node, cursor)) = pass.nodes.last_mut() else {
                break;
            };
            let page = self.scan_page_on(node.clone(), cursor.clone(), pattern.clone(), SCAN_BATCH);
            let (next, keys) = self.run(Op::Scan, page).await?;
            budget = budget.saturating_sub(keys.len().max(1));
            pass.scanned += keys.len() as u64;
            {
                let mut rng = rand::rng();
                for key in &keys {
                    let Some(owner) = self.keys.owner_of(key) else {
                        continue;
                    };
                    let label = match owner {
                        None => Arc::clone(&own),
                        Some(base) => route_of(base).unwrap_or_else(|| Arc::clone(&unrouted)),
                    };
                    pass.tallies.entry(label).or_default().add(key, &mut rng);
                }
            }
            if next == "0" {
                pass.nodes.pop();
            } else {
                *cursor = next;
            }
        }
        if !pass.nodes.is_empty() {
            return Ok(None);
        }
        let mut routes = Vec::with_capacity(pass.tallies.len());
        for (route, tally) in std::mem::take(&mut pass.tallies) {
            let usages = self.memory_usage(&tally.sample).await?;
            let found: Vec<u64> = usages.into_iter().flatten().collect();
            let sum: u64 = found.iter().sum();
            let bytes = if tally.keys as usize <= SAMPLES_PER_ROUTE || found.is_empty() {
                sum
            } else {
                (sum as f64 / found.len() as f64 * tally.keys as f64).round() as u64
            };
            routes.push(RouteMemory {
                route,
                keys: tally.keys,
                sampled: found.len(),
                bytes,
            });
        }
        routes.sort_by(|a, b| a.route.cmp(&b.route));
        let (maxmemory, used_memory) = self.memory_info().await;
        let sample = MemorySample {
            routes,
            maxmemory,
            used_memory,
            keys_scanned: pass.scanned,
            took: pass.started.elapsed(),
        };
        *pass = self.memory_pass();
        Ok(Some(sample))
    }

    /// `MEMORY USAGE` of each key (`None`: gone since the scan), pipelined in batches.
    async fn memory_usage(&self, keys: &[String]) -> Result<Vec<Option<u64>>, Unavailable> {
        let client = self.control.with_options(&self.options);
        let mut usages = Vec::with_capacity(keys.len());
        for batch in keys.chunks(USAGE_BATCH) {
            let pipeline = client.pipeline();
            let queued = async {
                for key in batch {
                    pipeline.memory_usage::<(), _>(key.as_str(), None).await?;
                }
                pipeline.all::<Vec<Option<u64>>>().await
            };
            let batch_usages = match self.run(Op::MemoryUsage, Box::pin(queued)).await {
                Ok(found) => found,
                // One batch, not the connection: this pass's figures for it stay unknown.
                Err(Failure::Reply(e)) => {
                    tracing::warn!(error = %e, "MEMORY USAGE refused; memory per route is not measured");
                    vec![None; batch.len()]
                }
                Err(Failure::Outage(e)) => return Err(e),
            };
            usages.extend(batch_usages);
        }
        Ok(usages)
    }

    /// `maxmemory` and `used_memory` from `INFO memory`, summed over the primaries.
    async fn memory_info(&self) -> (Option<u64>, Option<u64>) {
        let (mut max, mut used) = (Some(0u64), Some(0u64));
        for node in self.primaries() {
            let options = Options {
                cluster_node: node,
                ..self.options.clone()
            };
            let client = self.control.with_options(&options);
            let info = self
                .run(
                    Op::Info,
                    Box::pin(client.info::<String>(Some(InfoKind::Memory))),
                )
                .await;
            let Ok(info) = info else {
                return (None, None);
            };
            let field = |name: &str| {
                info.lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            // 0 is "no limit": the share of an unlimited Redis is not a number.
            max = max
                .zip(field("maxmemory").filter(|m| *m > 0))
                .map(|(a, b)| a + b);
            used = used.zip(field("used_memory")).map(|(a, b)| a + b);
        }
        (max, used)
    }
}

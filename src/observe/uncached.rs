//! What to cache next: the GET and HEAD requests no cached route answers, grouped by what
//! they ask for and ranked by the origin time they cost.
//!
//! A request that matches no route is grouped by its path's shape (see `shape`); one that
//! matches a `cache = false` route by that route, which is how the rules of a policy
//! drafted by `cachalot init --flask-routes` (one `cache = false` route per Flask rule) group
//! the traffic. Per group: requests, the origin's time to a response head (total, p50 and
//! p99 from a DDSketch, 1 % relative error), and how many responses a route with default
//! settings would have stored.
//!
//! Memory is bounded whatever clients send: at most [`MAX_GROUPS`] groups, each with a
//! sketch of bounded size. When a new shape arrives and the table is full, the group that
//! cost the origin least is folded into the "other" row (its numbers kept there, the fold
//! counted), so a flood of random paths churns among its own one-request groups and never
//! pushes out the groups that matter. Only GET and HEAD are recorded, so a request line
//! cannot mint groups through an invented method either.

use crate::observe::shape;
use http::Method;
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Groups tracked at most; further shapes fold the cheapest group into "other".
pub const MAX_GROUPS: usize = 200;

/// Groups shown on the status page and in `status.json`, most origin time first.
pub const SHOWN: usize = 50;

/// 1 % relative accuracy from 1 µs; 512 bins span a factor of e^10 at that accuracy (1 ms
/// to 22 s), beyond which the smallest values share a bin: a few KiB per group at most.
fn sketch() -> DDSketch {
    DDSketch::new(Config::new(0.01, 512, 1e-6))
}

/// What a group is: a path shape, or a `cache = false` route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    Shape(Box<str>),
    Route(Arc<str>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    method: &'static str,
    kind: Kind,
}

struct Group {
    requests: u64,
    storable: u64,
    origin_seconds: f64,
    latency: DDSketch,
}

impl Group {
    fn new() -> Self {
        Self {
            requests: 0,
            storable: 0,
            origin_seconds: 0.0,
            latency: sketch(),
        }
    }

    fn add(&mut self, origin: Duration, storable: bool) {
        self.requests += 1;
        self.storable += u64::from(storable);
        self.origin_seconds += origin.as_secs_f64();
        self.latency.add(origin.as_secs_f64());
    }

    fn absorb(&mut self, other: &Group) {
        self.requests += other.requests;
        self.storable += other.storable;
        self.origin_seconds += other.origin_seconds;
        // Same configuration on both sides, which is all merge checks.
        let _ = self.latency.merge(&other.latency);
    }

    fn row(&self, method: &str, shape: &str, route: Option<&str>) -> UncachedRow {
        let quantile = |q| {
            self.latency
                .quantile(q)
                .ok()
                .flatten()
                .map(|s| round(s * 1000.0))
        };
        UncachedRow {
            method: method.to_string(),
            shape: shape.to_string(),
            route: route.map(str::to_string),
            requests: self.requests,
            origin_total_s: round(self.origin_seconds),
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            storable: self.storable,
            storable_share: (self.requests > 0)
                .then(|| self.storable as f64 / self.requests as f64),
        }
    }
}

/// Three decimals: the sketch is accurate to 1 %, more digits are noise.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Default)]
struct Table {
    groups: HashMap<GroupKey, Group>,
    other: Option<Group>,
    /// Groups folded into `other` to make room.
    folded: u64,
}

/// The requests the cache did not answer, by group.
#[derive(Default)]
pub struct Uncached {
    table: Mutex<Table>,
}

/// One uncached request, as the proxy saw it.
pub struct Seen<'a> {
    pub method: &'a Method,
    /// The normalised path (never the query).
    pub path: &'a str,
    /// The `cache = false` route it matched, if any.
    pub route: Option<&'a Arc<str>>,
    /// How long the origin took to send the response head.
    pub origin: Duration,
    /// Whether a route with default settings would have stored the response.
    pub storable: bool,
}

impl Uncached {
    /// Counts one request. GET and HEAD only: nothing else can be cached.
    pub fn record(&self, seen: &Seen<'_>) {
        let method = match *seen.method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            _ => return,
        };
        let kind = match seen.route {
            Some(route) => Kind::Route(Arc::clone(route)),
            None => Kind::Shape(shape::of(seen.path).into()),
        };
        let key = GroupKey { method, kind };
        let mut table = self.table.lock().expect("uncached table poisoned");
        if !table.groups.contains_key(&key) && table.groups.len() >= MAX_GROUPS {
            table.fold_cheapest();
        }
        table
            .groups
            .entry(key)
            .or_insert_with(Group::new)
            .add(seen.origin, seen.storable);
    }

    /// The groups now, most origin time first.
    pub fn report(&self) -> UncachedReport {
        let table = self.table.lock().expect("uncached table poisoned");
        let mut rows: Vec<UncachedRow> = table
            .groups
            .iter()
            .map(|(key, group)| match &key.kind {
                Kind::Shape(shape) => group.row(key.method, shape, None),
                Kind::Route(label) => group.row(key.method, label, Some(label.as_ref())),
            })
            .collect();
        rows.sort_by(|a, b| {
            b.origin_total_s
                .total_cmp(&a.origin_total_s)
                .then(b.requests.cmp(&a.requests))
                .then_with(|| a.shape.cmp(&b.shape))
        });
        let tracked = rows.len();
        rows.truncate(SHOWN);
        UncachedReport {
            rows,
            tracked,
            other: table.other.as_ref().map(|g| g.row("*", "(other)", None)),
            folded: table.folded,
        }
    }
}

impl Table {
    /// Folds the group that cost the origin least into `other`.
    fn fold_cheapest(&mut self) {
        let Some(cheapest) = self
            .groups
            .iter()
            .min_by(|a, b| a.1.origin_seconds.total_cmp(&b.1.origin_seconds))
            .map(|(key, _)| key.clone())
        else {
            return;
        };
        let group = self.groups.remove(&cheapest).expect("found above");
        self.other.get_or_insert_with(Group::new).absorb(&group);
        self.folded += 1;
    }
}

/// `status.json`'s `uncached`: what to cache next.
#[derive(Debug, Serialize, Deserialize)]
pub struct UncachedReport {
    /// The top groups, most origin time first.
    pub rows: Vec<UncachedRow>,
    /// Groups tracked now (at most [`MAX_GROUPS`]).
    pub tracked: usize,
    /// Groups folded to keep the table bounded, all together.
    pub other: Option<UncachedRow>,
    /// How many groups were folded into `other`.
    pub folded: u64,
}

/// One group of uncached requests.
#[derive(Debug, Serialize, Deserialize)]
pub struct UncachedRow {
    pub method: String,
    /// The path shape (`/users/<int>`), or the `cache = false` route's label.
    pub shape: String,
    /// The `cache = false` route these requests matched, if any.
    pub route: Option<String>,
    pub requests: u64,
    /// The origin's time to a response head, summed.
    pub origin_total_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Responses a route with default settings would have stored.
    pub storable: u64,
    pub storable_share: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    static GET: Method = Method::GET;
    static POST: Method = Method::POST;

    fn seen(path: &str, ms: u64, storable: bool) -> Seen<'_> {
        Seen {
            method: &GET,
            path,
            route: None,
            origin: Duration::from_millis(ms),
            storable,
        }
    }

    #[test]
    fn groups_by_shape_and_ranks_by_origin_time() {
        let uncached = Uncached::default();
        for id in 0..10 {
            uncached.record(&seen(&format!("/users/{id}"), 10, true));
        }
        uncached.record(&seen("/reports/7", 500, false));
        uncached.record(&seen("/reports/8", 500, true));
        uncached.record(&Seen {
            method: &POST,
            ..seen("/users/1", 1000, false)
        });
        let report = uncached.report();
        assert_eq!(report.tracked, 2);
        let [reports, users] = &report.rows[..] else {
            panic!("{report:?}")
        };
        assert_eq!(reports.shape, "/reports/<int>");
        assert_eq!(reports.requests, 2);
        assert_eq!(reports.storable_share, Some(0.5));
        assert_eq!(users.requests, 10);
        assert_eq!(users.origin_total_s, 0.1);
        let p50 = users.p50_ms.unwrap();
        assert!((p50 - 10.0).abs() < 0.2, "{p50}");
    }

    #[test]
    fn a_flood_of_shapes_is_folded_and_counted() {
        let uncached = Uncached::default();
        uncached.record(&seen("/slow", 900, true));
        for i in 0..1000 {
            // Words, not numbers: numbers would fold into one shape.
            let word: String = format!("{i:03}")
                .bytes()
                .map(|b| char::from(b - b'0' + b'a'))
                .collect();
            uncached.record(&seen(&format!("/w{word}"), 1, false));
        }
        let report = uncached.report();
        assert_eq!(report.tracked, MAX_GROUPS);
        assert_eq!(report.rows[0].shape, "/slow");
        let other = report.other.unwrap();
        assert_eq!(report.folded, 1001 - MAX_GROUPS as u64);
        assert_eq!(other.requests, report.folded);
    }
}

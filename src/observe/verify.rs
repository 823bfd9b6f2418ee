//! What shadow verification found (see `request::verify`): per route, how many sampled hits
//! the origin answered the same way, differently for the same version (the bug: the answer
//! depends on something the key does not hold), or differently because the content was
//! refreshed since it was stored; the last few examples; a log line once per key per window.
//! Also the two pieces of state sampling needs, kept here with the counts they feed: each
//! route's turn counter (which hit is verified) and the bound on requests in flight.

use crate::policy::verify::Fraction;
use metrics::{Counter, SharedString};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// Examples kept for the status page, newest first.
const EXAMPLES: usize = 20;
/// A key whose answers differ is logged once per this window, not once per sampled hit.
const LOG_WINDOW: Duration = Duration::from_secs(600);
/// Keys remembered as logged; past this, the oldest are forgotten (and may log again).
const LOGGED_KEYS: u64 = 10_000;

/// How one verification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finding {
    /// The origin's answer is the one served.
    Match,
    /// It differs, and its validator says the content was refreshed since it was stored.
    Changed,
    /// It differs for the same version (or with no validator to tell): the answer depends on
    /// something the key does not hold.
    Mismatch,
    /// The origin failed or did not answer within the route's timeout.
    Error,
    /// Picked, but `[verify] concurrency` requests were already in flight.
    Skipped,
}

impl Finding {
    const ALL: [Finding; 5] = [
        Finding::Match,
        Finding::Changed,
        Finding::Mismatch,
        Finding::Error,
        Finding::Skipped,
    ];

    /// The word in metrics (`result`), logs and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Finding::Match => "match",
            Finding::Changed => "changed",
            Finding::Mismatch => "mismatch",
            Finding::Error => "error",
            Finding::Skipped => "skipped",
        }
    }
}

/// One part of the origin's answer that is not what was served. `detail` never holds a body
/// or a secret: statuses, lengths and media types, and only names for the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `status`, `body`, `content-type`, `location`, `vary` or `set-cookie`.
    pub part: &'static str,
    pub detail: String,
}

/// What one verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Changed(Vec<Difference>),
    Mismatch(Vec<Difference>),
    /// Why the origin gave no answer to compare.
    Error(String),
    Skipped,
}

impl Verdict {
    pub fn finding(&self) -> Finding {
        match self {
            Verdict::Match => Finding::Match,
            Verdict::Changed(_) => Finding::Changed,
            Verdict::Mismatch(_) => Finding::Mismatch,
            Verdict::Error(_) => Finding::Error,
            Verdict::Skipped => Finding::Skipped,
        }
    }

    pub fn differences(&self) -> &[Difference] {
        match self {
            Verdict::Changed(d) | Verdict::Mismatch(d) => d,
            _ => &[],
        }
    }
}

/// A verification whose answer differed, as the status page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub route: String,
    /// The Redis key without the prefix.
    pub key: String,
    pub result: Finding,
    pub differences: Vec<Difference>,
    /// When, RFC 3339 in UTC.
    pub at: String,
    #[serde(skip)]
    when: SystemTime,
}

/// One route's verification counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RouteCounts {
    pub route: String,
    /// Answers compared: matched, mismatches and changed together.
    pub verified: u64,
    pub matched: u64,
    /// Differed for the same version: the bug.
    pub mismatches: u64,
    /// Differed because the origin's content was refreshed since it was stored.
    pub changed: u64,
    pub errors: u64,
    pub skipped: u64,
}

/// One route's sampler and counts.
struct Route {
    /// Parts per billion accumulated over this route's fresh hits; a hit that takes it past
    /// a whole is verified (see [`Verifications::picks`]).
    turn: AtomicU64,
    counts: [AtomicU64; Finding::ALL.len()],
    /// `cachalot_verify_total` by result, registered with the route.
    results: [Counter; Finding::ALL.len()],
    label: SharedString,
}

impl Route {
    fn new(label: &Arc<str>) -> Self {
        let label = SharedString::from_shared(Arc::clone(label));
        Self {
            turn: AtomicU64::new(0),
            counts: Default::default(),
            results: Finding::ALL.map(|finding| {
                metrics::counter!("cachalot_verify_total", "route" => label.clone(), "result" => finding.as_str())
            }),
            label,
        }
    }

    fn counts(&self, route: &str) -> RouteCounts {
        let [matched, changed, mismatches, errors, skipped] =
            self.counts.each_ref().map(|n| n.load(Ordering::Relaxed));
        RouteCounts {
            route: route.to_string(),
            verified: matched + changed + mismatches,
            matched,
            mismatches,
            changed,
            errors,
            skipped,
        }
    }
}

/// Shadow verification's state in one proxy instance, kept across policy reloads.
pub struct Verifications {
    routes: RwLock<HashMap<Arc<str>, Arc<Route>>>,
    in_flight: AtomicUsize,
    examples: Mutex<VecDeque<Example>>,
    /// Keys logged within the window (moka: bounded, and entries expire by themselves).
    logged: moka::sync::Cache<String, ()>,
}

impl Default for Verifications {
    fn default() -> Self {
        // Counters registered before the recorder exists would record nowhere.
        crate::observe::metrics::install();
        Self {
            routes: RwLock::default(),
            in_flight: AtomicUsize::new(0),
            examples: Mutex::new(VecDeque::with_capacity(EXAMPLES)),
            logged: moka::sync::Cache::builder()
                .max_capacity(LOGGED_KEYS)
                .time_to_live(LOG_WINDOW)
                .build(),
        }
    }
}

/// A verification request in flight; dropping it frees its place.
pub struct Slot(Arc<Verifications>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Verifications {
    fn route(&self, label: &Arc<str>) -> Arc<Route> {
        if let Some(route) = self.routes.read().expect("verify routes").get(label) {
            return Arc::clone(route);
        }
        let mut routes = self.routes.write().expect("verify routes");
        Arc::clone(
            routes
                .entry(Arc::clone(label))
                .or_insert_with(|| Arc::new(Route::new(label))),
        )
    }

    /// Whether this fresh hit of the route is verified: each hit adds `fraction` to the
    /// route's counter, and the hit that completes a whole is picked. Deterministic, so a
    /// route with `0.25` verifies exactly every fourth hit, and nothing in a request can
    /// choose to be picked.
    pub fn picks(&self, label: &Arc<str>, fraction: Fraction) -> bool {
        if fraction.is_off() {
            return false;
        }
        let step = u64::from(fraction.per_billion());
        let whole = u64::from(Fraction::SCALE);
        let mut picked = false;
        let _ = self
            .route(label)
            .turn
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |turn| {
                let next = turn + step;
                picked = next >= whole;
                Some(if picked { next - whole } else { next })
            });
        picked
    }

    /// A place for one verification request, if fewer than `concurrency` are in flight.
    pub fn slot(self: &Arc<Self>, concurrency: usize) -> Option<Slot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < concurrency).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }

    /// Verification requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Counts a verification of `key` (the Redis key, without the prefix) on the route; an
    /// answer that differed becomes an example and, once per key per window, a log line
    /// naming what differed.
    pub fn record(&self, label: &Arc<str>, key: &str, verdict: &Verdict) {
        let route = self.route(label);
        let finding = verdict.finding();
        let slot = finding as usize;
        route.counts[slot].fetch_add(1, Ordering::Relaxed);
        route.results[slot].increment(1);
        let differences = verdict.differences();
        for difference in differences {
            metrics::counter!("cachalot_verify_differences_total", "route" => route.label.clone(), "part" => difference.part)
                .increment(1);
        }
        if differences.is_empty() {
            if let Verdict::Error(error) = verdict {
                tracing::debug!(route = %label, key, error, "shadow verification: no answer from the origin");
            }
            return;
        }
        let when = SystemTime::now();
        let example = Example {
            route: label.to_string(),
            key: key.to_string(),
            result: finding,
            differences: differences.to_vec(),
            at: humantime::format_rfc3339_seconds(when).to_string(),
            when,
        };
        {
            let mut examples = self.examples.lock().expect("verify examples");
            if examples.len() == EXAMPLES {
                examples.pop_back();
            }
            examples.push_front(example);
        }
        if self.logged.entry(key.to_string()).or_insert(()).is_fresh() {
            let parts: Vec<String> = differences
                .iter()
                .map(|d| format!("{} ({})", d.part, d.detail))
                .collect();
            let meaning = if finding == Finding::Mismatch {
                "the origin answered differently for the same version: the response depends on something the key does not hold"
            } else {
                "the origin's content changed since it was stored"
            };
            tracing::warn!(
                route = %label,
                key,
                result = finding.as_str(),
                differs = parts.join(", "),
                window_s = LOG_WINDOW.as_secs(),
                "shadow verification: {meaning} (logged once per key per window)"
            );
        }
    }

    /// Counts per route that has been verified or picked, in label order.
    pub fn counts(&self) -> Vec<RouteCounts> {
        let routes = self.routes.read().expect("verify routes");
        let mut counts: Vec<RouteCounts> = routes
            .iter()
            .map(|(label, route)| route.counts(label))
            .collect();
        counts.sort_by(|a, b| a.route.cmp(&b.route));
        counts
    }

    /// The last answers that differed, newest first, each with its age in seconds now.
    pub fn examples(&self) -> Vec<(Example, u64)> {
        let now = SystemTime::now();
        self.examples
            .lock()
            .expect("verify examples")
            .iter()
            .map(|e| {
                let age = now.duration_since(e.when).unwrap_or_default().as_secs();
                (e.clone(), age)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fraction(per_billion: u32) -> Fraction {
        // The policy is the only maker of fractions; read one from a policy text.
        let text = format!(
            "[origin]\nurl = \"http://127.0.0.1:1\"\n[verify]\nfraction = {}\n",
            f64::from(per_billion) / f64::from(Fraction::SCALE)
        );
        crate::Policy::parse(&text, "t.toml")
            .unwrap()
            .verify
            .fraction
    }

    #[test]
    fn picks_exactly_the_share_asked_for() {
        let verifications = Verifications::default();
        let label: Arc<str> = Arc::from("picks-test");
        for (per_billion, hits, picked) in [
            (250_000_000, 40, 10),
            (100_000_000, 1000, 100),
            (Fraction::SCALE, 7, 7),
            (10_000_000, 99, 0),
        ] {
            let share = fraction(per_billion);
            let label: Arc<str> = Arc::from(format!("{label}-{per_billion}"));
            let n = (0..hits)
                .filter(|_| verifications.picks(&label, share))
                .count();
            assert_eq!(n, picked, "{share} of {hits}");
        }
        assert!(!verifications.picks(&label, Fraction::default()));
    }

    #[test]
    fn slots_are_bounded_and_freed() {
        let verifications = Arc::new(Verifications::default());
        let a = verifications.slot(2).unwrap();
        let _b = verifications.slot(2).unwrap();
        assert!(verifications.slot(2).is_none());
        drop(a);
        assert!(verifications.slot(2).is_some());
        assert_eq!(verifications.in_flight(), 1);
    }

    #[test]
    fn differences_are_counted_kept_and_bounded() {
        let verifications = Verifications::default();
        let label: Arc<str> = Arc::from("examples-test");
        let differ = Verdict::Mismatch(vec![Difference {
            part: "body",
            detail: "3 → 4 bytes".into(),
        }]);
        for i in 0..EXAMPLES + 5 {
            verifications.record(&label, &format!("k:{i}"), &differ);
        }
        verifications.record(&label, "k:0", &Verdict::Match);
        verifications.record(&label, "k:0", &Verdict::Error("timeout".into()));
        let counts = &verifications.counts()[0];
        assert_eq!(
            (
                counts.verified,
                counts.mismatches,
                counts.matched,
                counts.errors
            ),
            (EXAMPLES as u64 + 6, EXAMPLES as u64 + 5, 1, 1)
        );
        let examples = verifications.examples();
        assert_eq!(examples.len(), EXAMPLES);
        assert_eq!(examples[0].0.key, format!("k:{}", EXAMPLES + 4));
    }
}

//! The one vocabulary for what happened to a request. A request ends in one [`Phase`] (with
//! its reason inside), set where its transition happens; the `Cache-Status` header (RFC 9211),
//! the access log's `phase`, the metric label `phase`, the status page's counts and the table
//! in docs/architecture.md all read it through one `match`, [`Phase::words`], so a header a
//! user sees with curl names the same thing as the log line and the metric.

mod outcome;
mod reason;

pub use outcome::Outcome;
pub use reason::Reason;

use std::fmt::Write;

/// What happened to a request: how it ended, and why when there is a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The proxy answered itself and forwarded nothing: a request it refuses (bad framing,
    /// path or host, a body over `limits.max_body`), or an `OPTIONS *` (no reason).
    Refused(Refusal),
    /// Not a request the cache handles (no route, `cache = false`, a method that is not read).
    Pass(Reason),
    /// A cacheable route, but this request must not use the cache (`Authorization`, `Cookie`,
    /// `Upgrade`, no `Host`), or the cache could not be asked (Redis down).
    Bypass(Reason),
    /// Served from a fresh stored entry (`l1`: from the in-process tier; `early-refresh`: a
    /// background refresh was started too).
    Hit(Option<Reason>),
    /// Served from a stale stored entry (stale-while-revalidate, the client's max-stale, or
    /// stale-if-error when the origin failed).
    Stale(Reason),
    /// Nothing usable was stored: the origin answered.
    Miss(Fill),
    /// A stale entry was revalidated with the origin (a 304, or a new response).
    Expired(Fill),
    /// Another request's fetch answered this one (in this process or another instance).
    Collapsed,
}

/// Why the proxy answered itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `OPTIONS *`: answered, not refused, but nothing was forwarded.
    OptionsStar,
    BadFraming,
    BadPath,
    BadHost,
    MisdirectedHost,
    /// The request body is over `limits.max_body`: 413.
    BodyTooLarge,
    /// The same, for a write on a cached route (its header keeps `fwd=method`).
    MethodBodyTooLarge,
}

impl Refusal {
    fn reason(self) -> Option<Reason> {
        match self {
            Refusal::OptionsStar => None,
            Refusal::BadFraming => Some(Reason::BadFraming),
            Refusal::BadPath => Some(Reason::BadPath),
            Refusal::BadHost => Some(Reason::BadHost),
            Refusal::MisdirectedHost => Some(Reason::MisdirectedHost),
            Refusal::BodyTooLarge | Refusal::MethodBodyTooLarge => Some(Reason::BodyTooLarge),
        }
    }
}

/// What a fill (or an uncached fetch) did with the origin's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Stored; the reason, when there is one, says why this request fetched it itself after
    /// waiting for another (`collapse-timeout`, `origin-error`).
    Stored(Option<Reason>),
    /// Not stored, and why (not storable, the origin failed, Redis refused the write, or the
    /// request was never meant to be stored: `client-no-store`, `not-shared`, ...).
    NotStored(Reason),
}

impl Fill {
    fn or(self, reason: Reason) -> Fill {
        match self {
            Fill::Stored(None) => Fill::Stored(Some(reason)),
            other => other,
        }
    }
}

/// The words one phase is shown with: the single table every output reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    /// `Cache-Status`'s first parameter (RFC 9211): `hit`, or the `fwd` parameter.
    pub fwd: &'static str,
    /// The access log's `phase` and the metrics' `phase` label.
    pub label: &'static str,
    /// The reason (`detail` after the route's name, the log's and the metric's `reason`).
    pub reason: Option<Reason>,
    /// `Cache-Status: stored`.
    pub stored: bool,
    /// `Cache-Status: collapsed`.
    pub collapsed: bool,
}

impl Phase {
    /// Every phase label, in the order the status page and the metrics count them.
    pub const LABELS: [&'static str; 8] = [
        "hit",
        "stale",
        "miss",
        "expired",
        "collapsed",
        "pass",
        "bypass",
        "refused",
    ];

    /// The phase's place in [`Phase::LABELS`] (for counters kept in arrays).
    pub fn slot(self) -> usize {
        match self {
            Phase::Hit(_) => 0,
            Phase::Stale(_) => 1,
            Phase::Miss(_) => 2,
            Phase::Expired(_) => 3,
            Phase::Collapsed => 4,
            Phase::Pass(_) => 5,
            Phase::Bypass(_) => 6,
            Phase::Refused(_) => 7,
        }
    }

    /// The one table: how this phase is written in the header, the log and the metrics.
    pub fn words(self) -> Words {
        let label = self.label();
        let words = |fwd, reason| Words {
            fwd,
            label,
            reason,
            stored: false,
            collapsed: false,
        };
        let fill = |fwd, fill: Fill| match fill {
            Fill::Stored(reason) => Words {
                stored: true,
                ..words(fwd, reason)
            },
            Fill::NotStored(reason) => words(fwd, Some(reason)),
        };
        match self {
            Phase::Refused(Refusal::MethodBodyTooLarge) => {
                words("fwd=method", Some(Reason::BodyTooLarge))
            }
            Phase::Refused(why) => words("fwd=bypass", why.reason()),
            Phase::Pass(Reason::Method) => words("fwd=method", Some(Reason::Method)),
            Phase::Pass(why) => words("fwd=bypass", Some(why)),
            // The client saw an ordinary miss: the origin answered, the cache was not asked.
            Phase::Bypass(Reason::RedisUnavailable) => {
                words("fwd=uri-miss", Some(Reason::RedisUnavailable))
            }
            Phase::Bypass(why) => words("fwd=bypass", Some(why)),
            Phase::Hit(why) => words("hit", why),
            Phase::Stale(Reason::StaleIfError) => words("fwd=stale", Some(Reason::StaleIfError)),
            Phase::Stale(why) => words("hit", Some(why)),
            Phase::Miss(f) => fill("fwd=uri-miss", f),
            Phase::Expired(f) => fill("fwd=stale", f),
            Phase::Collapsed => Words {
                collapsed: true,
                ..words("fwd=uri-miss", None)
            },
        }
    }

    /// The log's and the metrics' word for this phase.
    pub fn label(self) -> &'static str {
        Phase::LABELS[self.slot()]
    }

    /// The reason, if the phase has one.
    pub fn reason(self) -> Option<Reason> {
        self.words().reason
    }

    /// Whether the answer's body came from a stored entry.
    pub fn from_cache(self) -> bool {
        matches!(self, Phase::Hit(_) | Phase::Stale(_) | Phase::Collapsed)
    }

    /// The same request, refused for a body over `limits.max_body` instead of forwarded.
    pub fn body_too_large(self) -> Phase {
        match self {
            Phase::Pass(Reason::Method) => Phase::Refused(Refusal::MethodBodyTooLarge),
            _ => Phase::Refused(Refusal::BodyTooLarge),
        }
    }

    /// The phase a fill starts in: `Expired` when it revalidates a stale entry, else `Miss`;
    /// stored until [`Phase::filled`] says otherwise.
    pub fn fill(expired: bool) -> Phase {
        if expired {
            Phase::Expired(Fill::Stored(None))
        } else {
            Phase::Miss(Fill::Stored(None))
        }
    }

    /// A fill's phase with what it did (other phases are kept).
    pub fn filled(self, fill: Fill) -> Phase {
        match self {
            Phase::Miss(_) => Phase::Miss(fill),
            Phase::Expired(_) => Phase::Expired(fill),
            other => other,
        }
    }

    /// A stored fill's phase with the reason this request fetched it itself, when it has
    /// none of its own (other phases are kept).
    pub fn or_reason(self, reason: Reason) -> Phase {
        match self {
            Phase::Miss(f) => Phase::Miss(f.or(reason)),
            Phase::Expired(f) => Phase::Expired(f.or(reason)),
            other => other,
        }
    }

    /// One phase for every row of the table (each variant with each reason it is set with).
    pub fn all() -> Vec<Phase> {
        use Reason as R;
        let mut all: Vec<Phase> = [
            Refusal::OptionsStar,
            Refusal::BadFraming,
            Refusal::BadPath,
            Refusal::BadHost,
            Refusal::MisdirectedHost,
            Refusal::BodyTooLarge,
            Refusal::MethodBodyTooLarge,
        ]
        .into_iter()
        .map(Phase::Refused)
        .collect();
        all.extend([R::NoRoute, R::RoutePass, R::Method].map(Phase::Pass));
        all.extend(
            [
                R::Authorization,
                R::Cookie,
                R::Upgrade,
                R::NoHost,
                R::RedisUnavailable,
            ]
            .map(Phase::Bypass),
        );
        all.extend([None, Some(R::L1), Some(R::EarlyRefresh)].map(Phase::Hit));
        all.extend([R::StaleWhileRevalidate, R::MaxStale, R::StaleIfError].map(Phase::Stale));
        let stored = [None, Some(R::CollapseTimeout), Some(R::OriginError)].map(Fill::Stored);
        let not_stored = [
            R::StatusNotStored,
            R::SetCookie,
            R::NoStore,
            R::Private,
            R::NoCache,
            R::UnreadableDirectives,
            R::Vary,
            R::TooLarge,
            R::NoFreshness,
            R::InvalidatedDuringFill,
            R::TooManyVariants,
            R::RedisUnavailable,
            R::OriginError,
        ]
        .map(Fill::NotStored);
        // Forwarded without a fill (see `fetch_uncached`): only ever a miss.
        let uncached = [
            R::CollapseTimeout,
            R::NotShared,
            R::ClientNoStore,
            R::OnlyIfCached,
        ]
        .map(Fill::NotStored);
        for fill in stored.iter().chain(&not_stored).chain(&uncached) {
            all.push(Phase::Miss(*fill));
        }
        for fill in stored.iter().chain(&not_stored) {
            all.push(Phase::Expired(*fill));
        }
        all.push(Phase::Collapsed);
        all
    }
}

/// The phase table as Markdown: one row per phase and header form, its reasons listed
/// together. docs/architecture.md holds it; `tests/phase_table.rs` keeps the two equal.
pub fn markdown_table() -> String {
    let mut rows: Vec<(String, String, &str, Vec<&str>)> = Vec::new();
    for phase in Phase::all() {
        let words = phase.words();
        let variant = format!("{phase:?}");
        let variant = variant.split('(').next().unwrap_or(&variant);
        let variant = variant.split(' ').next().unwrap_or(variant).to_string();
        let mut header = format!("`{}", words.fwd);
        if words.collapsed {
            header.push_str("; collapsed");
        }
        if words.stored {
            header.push_str("; stored");
        }
        header.push('`');
        let reason = words.reason.map_or("-", Reason::as_str);
        match rows
            .iter_mut()
            .find(|(v, h, l, _)| *v == variant && *h == header && *l == words.label)
        {
            Some(row) if !row.3.contains(&reason) => row.3.push(reason),
            Some(_) => {}
            None => rows.push((variant, header, words.label, vec![reason])),
        }
    }
    let mut table = String::from(
        "| Phase | Cache-Status | log and metric `phase` | reason |\n| --- | --- | --- | --- |\n",
    );
    for (variant, header, label, reasons) in rows {
        let _ = writeln!(
            table,
            "| {variant} | {header} | {label} | {} |",
            reasons.join(", ")
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn renders_the_documented_forms() {
        let mut hit = Outcome::new(Phase::Hit(None));
        hit.route = Some(Arc::from("credential"));
        hit.ttl = Some(540);
        assert_eq!(hit.to_string(), "cachalot; hit; ttl=540; detail=credential");

        let mut miss = Outcome::new(Phase::Miss(Fill::Stored(None)));
        miss.fwd_status = Some(200);
        assert_eq!(
            miss.to_string(),
            "cachalot; fwd=uri-miss; fwd-status=200; stored"
        );

        let mut bypass = Outcome::new(Phase::Bypass(Reason::Authorization));
        bypass.route = Some(Arc::from("c"));
        assert_eq!(
            bypass.to_string(),
            "cachalot; fwd=bypass; detail=c/authorization"
        );

        let down = Outcome::new(Phase::Bypass(Reason::RedisUnavailable));
        assert_eq!(
            down.to_string(),
            "cachalot; fwd=uri-miss; detail=redis-unavailable"
        );

        let mut revalidated = Outcome::new(Phase::Expired(Fill::Stored(None)));
        revalidated.fwd_status = Some(304);
        assert_eq!(
            revalidated.to_string(),
            "cachalot; fwd=stale; fwd-status=304; stored"
        );
        let while_revalidating = Outcome::new(Phase::Stale(Reason::StaleWhileRevalidate));
        assert_eq!(
            while_revalidating.to_string(),
            "cachalot; hit; detail=stale-while-revalidate"
        );

        let method = Outcome::new(Phase::Pass(Reason::Method));
        assert_eq!(method.to_string(), "cachalot; fwd=method; detail=method");
        let options = Outcome::new(Phase::Refused(Refusal::OptionsStar));
        assert_eq!(options.to_string(), "cachalot; fwd=bypass");
    }

    #[test]
    fn the_labels_are_in_slot_order() {
        let mut seen = [false; Phase::LABELS.len()];
        for phase in Phase::all() {
            seen[phase.slot()] = true;
        }
        assert_eq!(seen, [true; Phase::LABELS.len()]);
    }
}

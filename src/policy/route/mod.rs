//! The compiled route table: which route a request belongs to, and what to do with it.
//!
//! The table is a list sorted from most to least specific, so the first route that matches
//! is the answer. Route tables are tens of entries long; a scan over them costs far less
//! than one Redis round trip, and unlike radix routers (matchit) it can express Flask's
//! `int` converter falling back to a plainer route when the segment is not a number.

mod canonical;
mod pattern;

pub use canonical::Converter;
pub use pattern::{Params, PathPattern, Segment};

use crate::http::freshness::Ttl;
use crate::policy::key::{KeyTemplate, QueryRule};
use http::Method;
use std::sync::Arc;
use std::time::Duration;

/// The methods a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodSet {
    /// No method was written: the route takes every method.
    Any,
    /// The listed methods; a route that lists GET also takes HEAD, as in Flask.
    Only(Vec<Method>),
}

impl MethodSet {
    pub fn allows(&self, method: &Method) -> bool {
        match self {
            MethodSet::Any => true,
            MethodSet::Only(list) => {
                list.contains(method) || (method == Method::HEAD && list.contains(&Method::GET))
            }
        }
    }

    /// Whether a GET or HEAD can match the route, i.e. whether caching can apply at all.
    pub fn allows_reads(&self) -> bool {
        self.allows(&Method::GET) || self.allows(&Method::HEAD)
    }

    /// Whether an unsafe method (one that can change the origin's state) can match the route.
    pub fn allows_writes(&self) -> bool {
        match self {
            MethodSet::Any => true,
            MethodSet::Only(list) => list.iter().any(|m| !m.is_safe()),
        }
    }

    /// A method both sets accept, if any (used to report ambiguous routes).
    fn overlap(&self, other: &Self) -> Option<Method> {
        match (self, other) {
            (MethodSet::Any, MethodSet::Any) => Some(Method::GET),
            (MethodSet::Any, _) | (_, MethodSet::Any) => None,
            (MethodSet::Only(_), MethodSet::Only(theirs)) => theirs
                .iter()
                .chain(theirs.contains(&Method::GET).then_some(&Method::HEAD))
                .find(|m| self.allows(m))
                .cloned(),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            MethodSet::Only(_) => 0,
            MethodSet::Any => 1,
        }
    }
}

impl std::fmt::Display for MethodSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MethodSet::Any => f.write_str("*"),
            MethodSet::Only(list) => {
                let names: Vec<&str> = list.iter().map(Method::as_str).collect();
                f.write_str(&names.join("|"))
            }
        }
    }
}

/// How a cached route stores responses.
#[derive(Debug, Clone)]
pub struct CacheRule {
    /// How long a stored response is fresh: a product decision per route, or the origin's
    /// word (`ttl = "origin"`).
    pub ttl: Ttl,
    /// How long past its freshness an entry is served at once while one request refreshes it.
    pub stale_while_revalidate: Duration,
    /// How long past its freshness an entry stands in for an origin that fails.
    pub stale_if_error: Duration,
    /// Refresh hot entries shortly before they expire (XFetch), so they almost never do.
    pub early_refresh: bool,
    /// Whether clients' `Cache-Control` (`no-cache`, `max-age`, `max-stale`, `only-if-cached`,
    /// `no-store`) is obeyed. Off by default: any client could otherwise stampede the origin.
    pub honor_client_no_cache: bool,
    /// How the Redis key is built from the path parameters.
    pub key: KeyTemplate,
    /// How the query string enters the key (and what reaches the origin).
    pub query: QueryRule,
    /// Origin statuses that may be stored.
    pub statuses: Statuses,
    /// The route's data never depends on cookies: `Cookie` is stripped, not a reason to bypass.
    pub ignore_cookies: bool,
    /// Larger bodies are streamed through and not stored.
    pub max_object_size: u64,
    /// Tags every stored entry of the route carries (templates over path parameters).
    pub tags: Vec<KeyTemplate>,
    /// Whether entries are also kept in the in-process tier (`[l1]`).
    pub l1: bool,
    /// Requests with `Authorization` are cached per credential (keyed on its hash) instead
    /// of bypassing the cache.
    pub per_user: bool,
    /// Request headers that are part of the key and reach the origin on fills (others that
    /// an origin may reflect are stripped; see `fill`).
    pub vary: Vec<http::HeaderName>,
    /// Most variants of one base key stored at a time; further ones are served unstored.
    pub max_variants: u64,
    /// `forward_headers = [...]`: the client headers a fill passes to the origin besides
    /// those the key holds, replacing the default set (see `fill::FORWARDED_BY_DEFAULT`).
    pub forward_headers: Option<Vec<http::HeaderName>>,
    /// `verify = 0.01`: the share of fresh hits also asked of the origin and compared
    /// (`None`: `[verify] fraction`; see `Policy::verify_fraction`).
    pub verify: Option<crate::policy::verify::Fraction>,
    /// Whether bodies may be stored compressed (`[compression]` decides which); `compress =
    /// false` stores them as the origin sent them.
    pub compress: bool,
}

/// Which origin statuses a route stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statuses {
    /// `statuses = [200, 404]`.
    Listed(Vec<u16>),
    /// `ttl = "origin"` without a list: RFC 9111 decides. Any final status with explicit
    /// freshness, and the heuristically cacheable ones without it.
    ByRfc,
}

impl Statuses {
    /// Whether a response with this status may be stored; `explicit` says whether it states
    /// its own freshness.
    pub fn allow(&self, status: http::StatusCode, explicit: bool) -> bool {
        match self {
            Statuses::Listed(list) => list.contains(&status.as_u16()),
            Statuses::ByRfc if explicit => {
                status.as_u16() >= 200 && status.as_u16() != 206 && status.as_u16() != 304
            }
            Statuses::ByRfc => crate::http::freshness::heuristically_cacheable(status),
        }
    }
}

impl std::fmt::Display for Statuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Statuses::Listed(list) => {
                let list: Vec<String> = list.iter().map(u16::to_string).collect();
                f.write_str(&list.join(", "))
            }
            Statuses::ByRfc => f.write_str("those RFC 9111 allows"),
        }
    }
}

/// What a successful write on a route drops, besides the entry for its own URI.
#[derive(Debug, Clone, Default)]
pub struct InvalidateRule {
    /// Keys (templates over path parameters), each with all its variants.
    pub keys: Vec<KeyTemplate>,
    /// Tags (templates over path parameters).
    pub tags: Vec<KeyTemplate>,
}

/// What the proxy does with requests on a route.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forwarded untouched (`cache = false`, or a route for writes only).
    Pass,
    /// GET and HEAD are served from the cache. Boxed: a rule is large, `Pass` is nothing.
    Cache(Box<CacheRule>),
}

/// One `[[route]]` from the policy.
#[derive(Debug)]
pub struct Route {
    /// The route's `name`, if it has one: shown in `Cache-Status`.
    pub name: Option<Arc<str>>,
    /// The name, else the `match` text: the route's label in logs and metrics (bounded by
    /// the policy, never a request's path).
    pub label: Arc<str>,
    pub methods: MethodSet,
    pub pattern: PathPattern,
    pub action: Action,
    /// What a successful write on this route invalidates.
    pub invalidate: InvalidateRule,
    /// Whether WebSocket upgrades are tunnelled (`upgrades = ["websocket"]`, the default);
    /// no other protocol ever is (see `crate::net::upgrade`).
    pub websocket: bool,
    /// `timeout = "..."`: how long the origin may take on this route, when it differs from
    /// `[origin] timeout` (a slow report endpoint, or a lookup that must fail fast).
    pub timeout: Option<Duration>,
    /// The line of the policy file the route starts on, for messages about it.
    pub line: usize,
}

/// A route a request matched, with its parameters.
pub struct Matched<'r, 'p> {
    pub route: &'r Arc<Route>,
    pub params: Params<'p>,
}

/// All routes, most specific first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Sorts the routes by specificity; fails on two routes that are equally specific for
    /// some request (the message names both lines).
    pub fn new(mut routes: Vec<Route>) -> Result<Self, (usize, String)> {
        routes.sort_by(|a, b| {
            a.pattern
                .specificity(&b.pattern)
                .then(a.methods.rank().cmp(&b.methods.rank()))
                .then(a.line.cmp(&b.line))
        });
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
                if !a.pattern.same_shape(&b.pattern) {
                    continue;
                }
                if let Some(method) = a.methods.overlap(&b.methods) {
                    let (first, second) = if a.line < b.line { (a, b) } else { (b, a) };
                    return Err((
                        second.line,
                        format!(
                            "route \"{} {}\" is as specific as \"{} {}\" (line {}) for {} requests; \
                             make the paths or methods differ, or merge the routes",
                            second.methods,
                            second.pattern,
                            first.methods,
                            first.pattern,
                            first.line,
                            method
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        })
    }

    /// The most specific route for a request, given its normalised path and segments.
    pub fn find<'r, 'p>(
        &'r self,
        method: &Method,
        path: &'p str,
        segments: &[&'p str],
    ) -> Option<Matched<'r, 'p>>
    where
        'r: 'p,
    {
        self.routes.iter().find_map(|route| {
            if !route.methods.allows(method) {
                return None;
            }
            let params = route.pattern.matches(path, segments)?;
            Some(Matched { route, params })
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

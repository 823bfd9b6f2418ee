//! A GET or HEAD on a cached route, as every cache stage sees it: the route, the key, the
//! client's request head, and which of its headers reach the origin (what the key must hold,
//! and what a `Vary` is matched against). Its own file because lookup, fill, fetch and the
//! response builders all read it, and none of them should need the others to do so.

use crate::http::request_id;
use crate::phase::{Outcome, Phase};
use crate::policy::route::{Action, CacheRule, Route};
use crate::request::decide;
use http::Method;
use http::header;
use std::net::SocketAddr;
use std::sync::Arc;

/// A GET or HEAD on a cached route, with everything the cache needs to answer it.
pub(crate) struct Cacheable {
    pub route: Arc<Route>,
    pub key: String,
    /// The client's request head (its body, if any, is not used: fills are GETs).
    pub head: http::request::Parts,
    pub client: SocketAddr,
    /// The route's tags for this request (the origin may add more).
    pub tags: Vec<String>,
    /// For routes in the in-process tier: its invalidation count before the lookup.
    pub l1_epoch: Option<u64>,
    /// When the URL's stored response varies and does not fit this request: the variant key
    /// this request's header values name (see `vary`).
    pub variant: Option<String>,
}

impl Cacheable {
    /// The key the fill collapses on and locks: the variant's, when it is known to vary.
    pub fn fill_key(&self) -> &str {
        self.variant.as_deref().unwrap_or(&self.key)
    }

    pub fn rule(&self) -> &CacheRule {
        match &self.route.action {
            Action::Cache(rule) => rule,
            Action::Pass => unreachable!("only cached routes build a Cacheable"),
        }
    }

    /// Path and query as the origin sees them (the route's query rule applied).
    pub fn origin_target(&self) -> String {
        decide::origin_target(&self.head.uri, &self.rule().query)
    }

    /// Whether a client header reaches the origin on this route's fills: what a `Vary` on it
    /// is matched against (see [`reaches_origin`]).
    pub fn forwarded(&self) -> impl Fn(&str) -> bool + '_ {
        |name| reaches_origin(self.rule(), name)
    }

    /// The route's label as a metric label value.
    pub fn metric_route(&self) -> metrics::SharedString {
        metrics::SharedString::from_shared(Arc::clone(&self.route.label))
    }

    pub fn head_only(&self) -> bool {
        self.head.method == Method::HEAD
    }

    pub fn status(&self, phase: Phase) -> Outcome {
        Outcome::new(phase).on_route(&self.route)
    }
}

/// Whether a client's request header reaches the origin in a fill unchanged: what a `Vary`
/// on it is matched against. On a cacheable route the origin sees what the key holds (the
/// authority as `Host`, the route's `vary` headers, `Authorization` when `per_user`), the
/// request id, and the route's `forward_headers` or else [`FORWARDED_BY_DEFAULT`]; nothing
/// else a client sends. `Accept-Encoding` is replaced by `identity` (see `vary::names`).
pub(crate) fn reaches_origin(rule: &CacheRule, name: &str) -> bool {
    let keyed = name == header::HOST.as_str()
        || (rule.per_user && name == header::AUTHORIZATION.as_str())
        || rule.vary.iter().any(|v| v.as_str() == name);
    let listed = match &rule.forward_headers {
        Some(names) => names.iter().any(|n| n.as_str() == name),
        None => FORWARDED_BY_DEFAULT.contains(&name),
    };
    keyed || listed || name == request_id::X_REQUEST_ID.as_str()
}

/// The client headers a fill passes to the origin when a route has no `forward_headers`:
/// content negotiation, which an origin that uses it must declare with `Vary` (the cache
/// then stores a variant per value), and `User-Agent`, likewise (`Vary: User-Agent`). None
/// of them names a host, scheme, port, path or user, so none can redirect a shared response
/// or personalise it without saying so. Everything else (`X-Forwarded-Host`, `X-Original-Url`,
/// `Front-End-Https`, `Referer`, and names no list could foresee) is dropped.
pub(crate) const FORWARDED_BY_DEFAULT: [&str; 4] =
    ["accept", "accept-language", "accept-charset", "user-agent"];

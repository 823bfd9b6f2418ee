//! The decision: what the proxy does with a request, from the policy and the request head
//! alone, before anything is sent anywhere. The proxy acts on it and `cachalot explain`
//! prints it, so the two cannot disagree.

use crate::http::path;
use crate::phase::{Outcome, Phase, Reason};
use crate::policy::Policy;
use crate::policy::key::{self, KeyTemplate, QueryRule};
use crate::policy::route::{Action, Route};
use crate::request::storable;
use crate::store::message::Invalidation;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Uri};
use std::sync::Arc;
use std::time::Duration;

/// What the route says to do with a request.
pub enum Decision {
    /// Forward untouched.
    Forward(Forward),
    /// A GET or HEAD the cache answers.
    Cache(Plan),
}

/// How a request the cache does not answer is forwarded.
pub struct Forward {
    pub status: Outcome,
    /// For a write: what its success invalidates.
    pub invalidate: Option<Invalidation>,
    /// Whether a WebSocket upgrade may be tunnelled (the route's `upgrades`).
    pub websocket: bool,
    /// How long the origin may take (the route's `timeout`, else `[origin] timeout`).
    pub timeout: Duration,
}

/// How the cache answers a GET or HEAD.
pub struct Plan {
    pub route: Arc<Route>,
    /// The Redis key, without the prefix.
    pub key: String,
    /// The route's tags for this request (the origin may add more).
    pub tags: Vec<String>,
    /// The request URI with its typed parameters in canonical form, when the request used
    /// another spelling (`/orders/0042`): the origin is asked for this one, so the entry
    /// stored under the canonical key is the origin's answer for the canonical URL.
    pub canonical_uri: Option<Uri>,
}

/// Decides for one request, whose URI [`path::normalize_uri`] has already normalised (the
/// proxy does that once, and sends the same path to the origin). `authority` is the
/// request's, in normal form (see `authority`): part of the key; without one (HTTP/1.0 with
/// no `Host`) the request is forwarded and never stored, since the origin would fill in its
/// own internal address wherever it builds a URL.
pub fn decide(
    policy: &Policy,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Decision {
    let query = uri.query();
    let path = uri.path();
    let segments = path::segments(path);
    let writes = !method.is_safe();
    let Some(matched) = policy.routes.find(method, path, &segments) else {
        return Decision::Forward(Forward {
            status: Outcome::new(Phase::Pass(Reason::NoRoute)),
            invalidate: writes.then(|| own_uri_invalidation(policy, path, &segments, query)),
            websocket: true,
            timeout: policy.origin.timeout,
        });
    };
    let route = Arc::clone(matched.route);
    let build = |t: &KeyTemplate| t.build(&matched.params, path, None, &QueryRule::Ignore);
    let status = |phase| Outcome::new(phase).on_route(&route);
    let forward = |status: Outcome| {
        Decision::Forward(Forward {
            status,
            invalidate: writes.then(|| {
                // A key or tag named twice (the route's `invalidate` often names the key §4.4
                // already drops) is dropped, logged and explained once.
                let mut planned = own_uri_invalidation(policy, path, &segments, query);
                for key in route.invalidate.keys.iter().map(build) {
                    if !planned.keys.contains(&key) {
                        planned.keys.push(key);
                    }
                }
                for tag in route.invalidate.tags.iter().map(build) {
                    if !planned.tags.contains(&tag) {
                        planned.tags.push(tag);
                    }
                }
                planned
            }),
            websocket: route.websocket,
            timeout: policy.origin_timeout(Some(&route)),
        })
    };
    match &route.action {
        Action::Pass => forward(status(Phase::Pass(Reason::RoutePass))),
        Action::Cache(_) if !matches!(*method, Method::GET | Method::HEAD) => {
            forward(status(Phase::Pass(Reason::Method)))
        }
        Action::Cache(rule) => match (storable::request_bypass(headers, rule), authority) {
            (Some(reason), _) => forward(status(Phase::Bypass(reason))),
            (None, None) => forward(status(Phase::Bypass(Reason::NoHost))),
            (None, Some(authority)) => {
                // An unnamed route without `key` is keyed on the path: the canonical one.
                let canonical = route.pattern.canonical_path(&segments, &matched.params);
                let key_path = canonical.as_deref().unwrap_or(path);
                Decision::Cache(Plan {
                    key: {
                        let mut key = rule
                            .key
                            .build(&matched.params, key_path, query, &rule.query);
                        // One served host: every request has it, so it tells no entry apart.
                        if policy.listen.hosts.len() != 1 {
                            key::append_authority(&mut key, authority);
                        }
                        key::append_header_variant(&mut key, headers, rule.per_user, &rule.vary);
                        key
                    },
                    tags: rule.tags.iter().map(build).collect(),
                    canonical_uri: canonical.map(|path| with_path(uri, &path)),
                    route: Arc::clone(&route),
                })
            }
        },
    }
}

/// `uri` with another path, its query kept.
fn with_path(uri: &Uri, path: &str) -> Uri {
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    // A canonical path is the request's own segments, or digits, hex, '.', and the
    // lower case of its own (escaped) characters: it parses wherever the request's did.
    parts.path_and_query =
        Some(PathAndQuery::try_from(target).expect("a canonical path is a valid request target"));
    Uri::from_parts(parts).expect("only the path changed")
}

/// Path and query as the origin sees them for a cached route: the route's query rule
/// applied. Only misses need it, so it is not built on the hit path.
pub fn origin_target(uri: &Uri, query: &QueryRule) -> String {
    match query.forwarded(uri.query()) {
        Some(q) => format!("{}?{q}", uri.path()),
        None => uri.path().to_string(),
    }
}

/// RFC 9111 §4.4: a successful unsafe request invalidates what a GET of the same URI
/// would have been served from.
fn own_uri_invalidation(
    policy: &Policy,
    path: &str,
    segments: &[&str],
    query: Option<&str>,
) -> Invalidation {
    Invalidation {
        keys: key_for_get(policy, path, segments, query)
            .into_iter()
            .collect(),
        ..Invalidation::default()
    }
}

/// The key a GET of this normalised path and query is cached under, if a cached route
/// takes it.
pub fn key_for_get(
    policy: &Policy,
    path: &str,
    segments: &[&str],
    query: Option<&str>,
) -> Option<String> {
    let matched = policy.routes.find(&Method::GET, path, segments)?;
    let canonical = matched
        .route
        .pattern
        .canonical_path(segments, &matched.params);
    let path = canonical.as_deref().unwrap_or(path);
    match &matched.route.action {
        Action::Cache(rule) => Some(rule.key.build(&matched.params, path, query, &rule.query)),
        Action::Pass => None,
    }
}

/// The key a GET of `target` (path and query, e.g. `/api/credentials/abc?x=1`) is cached
/// under, if a cached route takes it: what `PURGE <target>` drops.
pub fn key_for_target(policy: &Policy, target: &str) -> Option<String> {
    let (raw_path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let path = path::normalize(raw_path).ok()?;
    key_for_get(policy, &path, &path::segments(&path), query)
}

/// The key for a `Location` or `Content-Location` value, when it names a resource on the
/// same host (RFC 9111 §4.4 invalidates those too).
pub fn key_for_location(
    policy: &Policy,
    location: &HeaderValue,
    host: Option<&HeaderValue>,
) -> Option<String> {
    let uri: Uri = location.to_str().ok()?.parse().ok()?;
    if let Some(authority) = uri.authority() {
        let named = crate::http::authority::normalize(authority.as_str().as_bytes()).ok()??;
        let host = crate::http::authority::normalize(host?.as_bytes()).ok()??;
        if named != host {
            return None;
        }
    }
    if !uri.path().starts_with('/') {
        return None;
    }
    let path = path::normalize(uri.path()).ok()?;
    key_for_get(policy, &path, &path::segments(&path), uri.query())
}

//! The request's way through the proxy, as one readable flow:
//!
//! ```text
//! route match ─▶ decision ──pass────────────────────────────▶ origin ─▶ client
//!                   └─cacheable─▶ key ─▶ lookup ─┬─ fresh hit ───────────▶ client
//!                                                └─ miss ─▶ fill (collapse, origin, store)
//! ```
//!
//! Everything the policy does not name is forwarded untouched; the cache only ever sees GET
//! and HEAD on routes that ask for it.

use crate::body::ProxyBody;
use crate::cache_status::{CacheStatus, Phase, Reason};
use crate::collapse::{self, Flights, Join, Landing};
use crate::decision::{self, Decision, Plan};
use crate::entry::{Entry, now_ms};
use crate::fill;
use crate::framing;
use crate::invalidate::{Invalidation, Source};
use crate::origin::{self, Origin, OriginError};
use crate::path;
use crate::policy::Policy;
use crate::request_id;
use crate::route::{Action, CacheRule, Route};
use crate::semantics;
use crate::stats::Stats;
use crate::store::{Applied, Lookup, Store};
use crate::tags;
use crate::upgrade;
use arc_swap::{ArcSwap, Guard};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The access log's target: one line per request at info, with its own target so that
/// `RUST_LOG=info,cachalot::access=warn` keeps the other logs and drops these.
pub const ACCESS_LOG: &str = "cachalot::access";

/// The proxy's shared state: the policy, Redis, the origin client and the flights.
pub struct Proxy {
    /// Swapped whole on reload; a request holds the routes it started with.
    pub(crate) policy: ArcSwap<Policy>,
    pub(crate) store: Arc<Store>,
    pub(crate) origin: Origin,
    pub(crate) flights: Arc<Flights>,
    /// Per-route summary for the status page.
    pub(crate) stats: Stats,
}

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
}

impl Cacheable {
    pub fn rule(&self) -> &CacheRule {
        match &self.route.action {
            Action::Cache(rule) => rule,
            Action::Pass => unreachable!("only cached routes build a Cacheable"),
        }
    }

    /// Path and query as the origin sees them (the route's query rule applied).
    pub fn origin_target(&self) -> String {
        decision::origin_target(&self.head.uri, &self.rule().query)
    }

    /// The route's label as a metric label value.
    pub fn metric_route(&self) -> metrics::SharedString {
        metrics::SharedString::from_shared(Arc::clone(&self.route.label))
    }

    pub fn head_only(&self) -> bool {
        self.head.method == Method::HEAD
    }

    pub fn status(&self, phase: Phase) -> CacheStatus {
        CacheStatus::new(phase).on_route(&self.route)
    }
}

impl Proxy {
    /// The policy in force now.
    pub fn policy(&self) -> Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// Per-route statistics since start (the status page's numbers).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Swaps in a validated policy; requests in flight keep the one they started with.
    pub fn replace_policy(&self, policy: Policy) {
        self.store
            .set_generation_ttl(crate::server::generation_ttl(&policy));
        self.policy.store(Arc::new(policy));
    }

    /// Answers one client request. Never fails: origin and Redis problems become responses.
    pub async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        // Goes to the origin with the request, back with the response, and into the log.
        let request_id = request_id::ensure(request.headers_mut());
        // Copy the target only when the access line will be written (RUST_LOG=warn, or
        // cachalot::access=warn, turns it off).
        let logged = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO)
            .then(|| (request.method().clone(), request.uri().clone()));
        let (mut response, status) = self.route(request, client).await;
        response
            .headers_mut()
            .insert(CACHE_STATUS.clone(), status.header_value());
        let elapsed = started.elapsed();
        record(&status, &response, elapsed);
        self.stats.record(&status, elapsed);
        if let Some((method, uri)) = logged {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            // The cached routes' key, found again rather than carried out of the cache
            // path: it costs one route match, and only when the line is written.
            let key = (status.phase != Phase::Pass)
                .then(|| decision::key_for_target(&self.policy(), path))
                .flatten();
            tracing::info!(
                target: ACCESS_LOG,
                request_id = request_id.to_str().unwrap_or("-"),
                %method,
                path,
                route = status.label.as_deref().unwrap_or("-"),
                outcome = status.phase.as_str(),
                reason = status.reason.map_or("-", Reason::as_str),
                key = key.as_deref().unwrap_or("-"),
                status = response.status().as_u16(),
                latency_us = started.elapsed().as_micros() as u64,
                "request"
            );
        }
        response
            .headers_mut()
            .insert(request_id::X_REQUEST_ID.clone(), request_id);
        response
    }

    async fn route(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
        client: SocketAddr,
    ) -> (Response<ProxyBody>, CacheStatus) {
        if !framing::is_unambiguous(request.headers()) {
            let status = CacheStatus::new(Phase::Pass).because(Reason::BadFraming);
            let text = "cachalot: bad request: Transfer-Encoding must be exactly \"chunked\"\n";
            return (bad_request(text.into()), status);
        }
        // Normalised once: routing, the key and the origin request all use this URI.
        match path::normalize_uri(request.uri()) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(rejected) => {
                let status = CacheStatus::new(Phase::Pass).because(Reason::BadPath);
                tracing::debug!(path = request.uri().path(), %rejected, "refused a request path");
                let text = format!(
                    "cachalot: bad request: {rejected}; send the path with real '/' separators and no encoded control characters\n"
                );
                return (bad_request(text), status);
            }
        }
        let decided = decision::decide(
            &self.policy(),
            request.method(),
            request.uri(),
            request.headers(),
        );
        match decided {
            Decision::Forward { status, invalidate } => {
                self.pass(request, client, status, invalidate).await
            }
            Decision::Cache(Plan { route, key, tags }) => {
                let (head, _body) = request.into_parts();
                let cacheable = Cacheable {
                    route,
                    key,
                    head,
                    client,
                    tags,
                    l1_epoch: None,
                };
                self.lookup(cacheable).await
            }
        }
    }

    /// The key a GET of `target` (path and query, e.g. `/api/credentials/abc?x=1`) is
    /// cached under, if a cached route takes it: what `PURGE <target>` drops.
    pub fn key_for_target(&self, target: &str) -> Option<String> {
        decision::key_for_target(&self.policy(), target)
    }

    /// Drops what an invalidation names, in Redis for every instance; queued if Redis is
    /// down. A prefix is applied a second time once any fill that was already running has
    /// finished: a prefix purge cannot know the keys of fills in flight, so one of them could
    /// otherwise slip an old response back in. (Keys have generations and tags purge marks,
    /// which stop such fills from storing at all.)
    pub async fn invalidate(
        self: &Arc<Self>,
        invalidation: &Invalidation,
        source: Source,
    ) -> Applied {
        let applied = self.store.invalidate(invalidation).await;
        let outcome = match applied {
            Applied::Dropped(_) => "applied",
            Applied::Queued => "queued",
        };
        metrics::counter!("cachalot_invalidations_total", "source" => source.as_str(), "outcome" => outcome)
            .increment(1);
        tracing::info!(
            source = source.as_str(),
            keys = ?invalidation.keys,
            tags = ?invalidation.tags,
            prefix = invalidation.prefix.as_deref().unwrap_or(""),
            reason = invalidation.reason.as_deref().unwrap_or(""),
            ?applied,
            "invalidated"
        );
        if matches!(applied, Applied::Dropped(_)) && invalidation.prefix.is_some() {
            let again = Invalidation {
                prefix: invalidation.prefix.clone(),
                ..Invalidation::default()
            };
            let proxy = Arc::clone(self);
            let settle = self.origin.timeout() + self.policy().redis.timeout * 2;
            tokio::spawn(async move {
                tokio::time::sleep(settle).await;
                proxy.store.invalidate(&again).await;
            });
        }
        applied
    }

    /// Forwards a request the cache does not handle, streaming both ways. A write that
    /// succeeds (2xx or 3xx) invalidates what it names before its response goes out.
    async fn pass(
        self: &Arc<Self>,
        request: Request<Incoming>,
        client: SocketAddr,
        mut status: CacheStatus,
        invalidate: Option<Invalidation>,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let (mut head, body) = request.into_parts();
        let max_body = self.policy().limits.max_body;
        if semantics::content_length(&head.headers).is_some_and(|declared| declared > max_body) {
            status.reason = Some(Reason::BodyTooLarge);
            return (body_too_large(), status);
        }
        let upgrade = upgrade::requested(&head.headers).zip(head.extensions.remove::<OnUpgrade>());
        let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let body = Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX));
        let mut outgoing = origin::request_head(&self.origin, &head, target, client.ip())
            .body(Either::Left(body))
            .expect("a request built from a valid request is valid");
        if let Some((protocol, _)) = &upgrade {
            upgrade::keep(outgoing.headers_mut(), protocol.clone());
        }
        let mut response = match self.origin.send(outgoing, status.metric_route()).await {
            Ok(response) => response,
            Err(OriginError::BodyTooLarge) => {
                status.reason = Some(Reason::BodyTooLarge);
                return (body_too_large(), status);
            }
            Err(e) => {
                tracing::warn!(error = %e, "origin request failed");
                return (error_response(&e), status);
            }
        };
        status.fwd_status = Some(response.status().as_u16());
        if let Some(mut planned) = invalidate
            && (response.status().is_success() || response.status().is_redirection())
        {
            let host = head.headers.get(header::HOST);
            for name in [header::LOCATION, header::CONTENT_LOCATION] {
                if let Some(key) = response
                    .headers()
                    .get(name)
                    .and_then(|v| decision::key_for_location(&self.policy(), v, host))
                {
                    planned.keys.push(key);
                }
            }
            if !planned.is_empty() {
                self.invalidate(&planned, Source::Write).await;
            }
        }
        let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let accepted = response.headers().get(header::UPGRADE).cloned();
        let origin_side = switched.then(|| hyper::upgrade::on(&mut response));
        let (mut parts, body) = response.into_parts();
        origin::strip_hop_by_hop(&mut parts.headers);
        tags::from_response(
            &mut parts.headers,
            self.policy().invalidation.forward_tag_headers,
        );
        if let (Some((_, client_side)), Some(origin_side), Some(protocol)) =
            (upgrade, origin_side, accepted)
        {
            upgrade::keep(&mut parts.headers, protocol);
            upgrade::splice(client_side, origin_side);
        }
        (Response::from_parts(parts, ProxyBody::Stream(body)), status)
    }

    /// Looks the key up in Redis: a fresh entry is a hit, anything else a miss.
    async fn lookup(
        self: &Arc<Self>,
        mut request: Cacheable,
    ) -> (Response<ProxyBody>, CacheStatus) {
        if !self.store.is_healthy() {
            return fill::fetch_uncached(self, &request, Reason::RedisUnavailable).await;
        }
        let use_l1 = request.rule().l1;
        match self.store.get(&request.key, use_l1).await {
            Ok(Lookup {
                entry: Some(entry),
                from_l1,
                ..
            }) if entry.is_fresh(now_ms()) => {
                let mut status = request.status(Phase::Hit);
                if from_l1 {
                    status.reason = Some(Reason::L1);
                }
                (from_entry(&entry, &request, &mut status), status)
            }
            Ok(lookup) => {
                request.l1_epoch = use_l1.then_some(lookup.l1_epoch);
                self.miss(request, lookup.generation).await
            }
            Err(_) => fill::fetch_uncached(self, &request, Reason::RedisUnavailable).await,
        }
    }

    /// A miss joins the key's flight in this process, or leads one.
    async fn miss(
        self: &Arc<Self>,
        request: Cacheable,
        generation: u64,
    ) -> (Response<ProxyBody>, CacheStatus) {
        match self.flights.join(&request.key) {
            Join::Lead(flight) => {
                // The fill runs in its own task, so a client that hangs up does not cancel
                // the fetch its waiters depend on.
                let proxy = Arc::clone(self);
                let request = Arc::new(request);
                let task = tokio::spawn({
                    let request = Arc::clone(&request);
                    async move { fill::lead(&proxy, flight, &request, generation).await }
                });
                match task.await {
                    Ok(answer) => answer,
                    Err(e) => {
                        tracing::error!(error = %e, "fill task failed");
                        let status = request.status(Phase::Miss).because(Reason::OriginError);
                        (plain(StatusCode::BAD_GATEWAY, "fill failed\n"), status)
                    }
                }
            }
            Join::Wait(receiver) => {
                metrics::counter!("cachalot_collapse_waiters_total", "scope" => "process")
                    .increment(1);
                // The flight's leader answers within the lock wait plus one origin fetch;
                // asking the origin before that would be the stampede collapsing prevents.
                let wait = self.policy().collapse.wait + self.origin.timeout();
                match tokio::time::timeout(wait, collapse::landing(receiver)).await {
                    Ok(Landing::Stored(entry)) if entry.generation >= generation => {
                        let mut status = request.status(Phase::Collapsed);
                        (from_entry(&entry, &request, &mut status), status)
                    }
                    // The flight started before an invalidation this request already saw:
                    // its response is older than what the request may be served. Fly again.
                    Ok(Landing::Stored(_)) => Box::pin(self.miss(request, generation)).await,
                    // The response waited for may not be shared (Set-Cookie, an error):
                    // each waiter asks the origin for its own.
                    Ok(_) => fill::fetch_uncached(self, &request, Reason::NotShared).await,
                    Err(_) => {
                        metrics::counter!("cachalot_collapse_timeouts_total").increment(1);
                        fill::fetch_uncached(self, &request, Reason::CollapseTimeout).await
                    }
                }
            }
        }
    }
}

/// Counts the request under its route and cache phase, the words of `Cache-Status`, and
/// the body bytes it was answered with (when their length is known) by where they came from.
fn record(status: &CacheStatus, response: &Response<ProxyBody>, elapsed: std::time::Duration) {
    let route = status.metric_route();
    let phase = status.phase.as_str();
    let reason = status.reason.map_or("-", Reason::as_str);
    metrics::counter!("cachalot_requests_total", "route" => route.clone(), "phase" => phase, "reason" => reason)
        .increment(1);
    metrics::histogram!("cachalot_request_duration_seconds", "route" => route, "phase" => phase)
        .record(elapsed.as_secs_f64());
    if let Some(bytes) = http_body::Body::size_hint(response.body()).exact() {
        let source = match status.phase {
            Phase::Hit | Phase::Collapsed => "cache",
            Phase::Miss | Phase::Pass | Phase::Bypass => "origin",
        };
        metrics::counter!("cachalot_response_bytes_total", "source" => source).increment(bytes);
    }
}

/// A response from a stored entry: the origin's status, headers and body, plus `Age`.
/// Sets the status's `ttl` to the entry's remaining freshness.
pub(crate) fn from_entry(
    entry: &Entry,
    request: &Cacheable,
    status: &mut CacheStatus,
) -> Response<ProxyBody> {
    let now = now_ms();
    status.ttl = Some(entry.ttl_left(now));
    if entry.status == StatusCode::OK
        && semantics::not_modified(&request.head.headers, &entry.headers)
    {
        return not_modified(entry, now);
    }
    let body = if request.head_only() {
        ProxyBody::Empty
    } else {
        ProxyBody::Full(Some(entry.body.clone()))
    };
    let mut response = Response::new(body);
    *response.status_mut() = entry.status;
    let headers = response.headers_mut();
    headers.clone_from(&entry.headers);
    headers.insert(header::AGE, HeaderValue::from(entry.age(now)));
    response
}

/// A 304 for a client that already holds the entry's representation: the headers RFC 9110
/// §15.4.5 asks a 304 to repeat, and no body.
fn not_modified(entry: &Entry, now: u64) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Empty);
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::LAST_MODIFIED,
        header::VARY,
    ] {
        for value in entry.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(header::AGE, HeaderValue::from(entry.age(now)));
    response
}

/// A short plain-text response the proxy writes itself.
pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 400 for a request the proxy will not pass on, saying why; the connection is closed,
/// since whatever follows on it cannot be trusted to be framed as the client meant.
fn bad_request(text: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(text));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 413 for a body over `limits.max_body`. The connection is closed: the rest of the body
/// is not read.
fn body_too_large() -> Response<ProxyBody> {
    let mut response = plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        "cachalot: the request body is larger than limits.max_body\n",
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 502 or 504, with a body that says which.
pub(crate) fn error_response(error: &OriginError) -> Response<ProxyBody> {
    let text = match error {
        OriginError::Timeout(_) => "cachalot: the origin did not answer in time\n",
        OriginError::Connect(_) => "cachalot: the origin cannot be reached\n",
        OriginError::Failed(_) => "cachalot: the origin's response was broken\n",
        OriginError::BodyTooLarge => "cachalot: the request body is larger than limits.max_body\n",
    };
    plain(error.status(), text)
}

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

use crate::http::framing;
use crate::http::freshness::Directives;
use crate::http::path;
use crate::http::request_id;
use crate::http::tags;
use crate::http::vary;
use crate::net::body::ProxyBody;
use crate::net::upgrade;
use crate::observe::stats::Stats;
use crate::origin::{self, Origin, OriginError};
use crate::phase::{Fill, Outcome, Phase, Reason, Refusal};
use crate::policy::Policy;
use crate::request::admit;
use crate::request::cacheable::Cacheable;
use crate::request::collapse::{self, Flights, Join, Landing};
use crate::request::context::{Answer, Stages};
use crate::request::decide::{self, Decision, Forward, Plan};
use crate::request::detach::finishing;
use crate::request::fill;
use crate::request::respond::{
    CACHE_STATUS, bad_request, body_too_large, error_response, from_entry, local_answer, plain,
};
use crate::request::storable;
use crate::store::entry::{Entry, now_ms};
use crate::store::message::{Invalidation, Source};
use crate::store::{Applied, Lookup, Store};
use arc_swap::{ArcSwap, Guard};
use http::header;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{Either, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The access log's target: one line per request at info, with its own target so that
/// `RUST_LOG=info,cachalot::access=warn` keeps the other logs and drops these.
pub const ACCESS_LOG: &str = "cachalot::access";

/// The proxy's shared state: the policy, Redis, the origin client and the flights.
pub struct Proxy {
    /// Swapped whole on reload; a request holds the routes it started with.
    pub(crate) policy: ArcSwap<Policy>,
    pub(crate) store: Arc<Store>,
    pub(crate) origin: Arc<Origin>,
    pub(crate) flights: Arc<Flights>,
    /// Per-route summary for the status page.
    pub(crate) stats: Stats,
}

impl Proxy {
    /// The policy in force now.
    pub fn policy(&self) -> Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// What the stages of one request use: the policy in force now, loaded once.
    pub(crate) fn stages(&self) -> Stages {
        Stages {
            store: Arc::clone(&self.store),
            origin: Arc::clone(&self.origin),
            policy: self.policy.load_full(),
            flights: Arc::clone(&self.flights),
        }
    }

    /// Per-route statistics since start (the status page's numbers).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Swaps in a validated policy; requests in flight keep the one they started with.
    pub fn replace_policy(&self, policy: Policy) {
        self.store
            .set_generation_ttl(crate::policy::generation::generation_ttl(&policy));
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
        let body_bytes = http_body::Body::size_hint(response.body()).exact();
        self.stats.record(&status, body_bytes, started.elapsed());
        if let Some((method, uri)) = logged {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            // The cached routes' key, found again rather than carried out of the cache
            // path: it costs one route match, and only when the line is written.
            let key = (!matches!(status.phase, Phase::Pass(_) | Phase::Refused(_)))
                .then(|| decide::key_for_target(&self.policy(), path))
                .flatten();
            tracing::info!(
                target: ACCESS_LOG,
                request_id = request_id.to_str().unwrap_or("-"),
                %method,
                path,
                route = status.label.as_deref().unwrap_or("-"),
                phase = status.phase.label(),
                reason = status.phase.reason().map_or("-", Reason::as_str),
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
    ) -> (Response<ProxyBody>, Outcome) {
        if !framing::is_unambiguous(request.headers()) {
            let status = Outcome::new(Phase::Refused(Refusal::BadFraming));
            let text = "cachalot: bad request: Transfer-Encoding must be exactly \"chunked\"\n";
            return (bad_request(text.into()), status);
        }
        let authority = match admit::admit(&mut request, &self.policy().listen) {
            Ok(authority) => authority,
            Err(answer) => {
                let status = Outcome::new(Phase::Refused(answer.why));
                return (local_answer(answer), status);
            }
        };
        // Normalised once: routing, the key and the origin request all use this URI.
        match path::normalize_uri(request.uri()) {
            Ok(Some(uri)) => *request.uri_mut() = uri,
            Ok(None) => {}
            Err(rejected) => {
                let status = Outcome::new(Phase::Refused(Refusal::BadPath));
                tracing::debug!(path = request.uri().path(), %rejected, "refused a request path");
                let text = format!(
                    "cachalot: bad request: {rejected}; send the path with real '/' separators and no encoded control characters\n"
                );
                return (bad_request(text), status);
            }
        }
        let decided = decide::decide(
            &self.policy(),
            request.method(),
            request.uri(),
            request.headers(),
            authority.as_deref(),
        );
        match decided {
            // Boxed, as are the miss paths below: hyper moves the request's future into place
            // for every request, so the hit path's future is kept to what a hit needs.
            Decision::Forward(forward) => Box::pin(self.pass(request, client, forward)).await,
            Decision::Cache(Plan {
                route,
                key,
                tags,
                canonical_uri,
            }) => {
                let (mut head, _body) = request.into_parts();
                if let Some(uri) = canonical_uri {
                    head.uri = uri;
                }
                let cacheable = Cacheable {
                    route,
                    key,
                    head,
                    client,
                    tags,
                    l1_epoch: None,
                    variant: None,
                };
                self.lookup(cacheable).await
            }
        }
    }

    /// The key a GET of `target` (path and query, e.g. `/api/credentials/abc?x=1`) is
    /// cached under, if a cached route takes it: what `PURGE <target>` drops.
    pub fn key_for_target(&self, target: &str) -> Option<String> {
        decide::key_for_target(&self.policy(), target)
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
            let policy = self.policy();
            let settle = policy.longest_origin_timeout() + policy.redis.timeout * 2;
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
        forward: Forward,
    ) -> (Response<ProxyBody>, Outcome) {
        let Forward {
            mut status,
            invalidate,
            websocket,
            timeout,
        } = forward;
        let (mut head, body) = request.into_parts();
        let max_body = self.policy().limits.max_body;
        if storable::content_length(&head.headers).is_some_and(|declared| declared > max_body) {
            status.phase = status.phase.body_too_large();
            return (body_too_large(), status);
        }
        // Only WebSocket is tunnelled, where the route allows it; any other Upgrade is
        // dropped with the hop-by-hop headers and the request goes on as plain HTTP/1.1.
        let upgrade = upgrade::requested(&head.headers)
            .filter(|_| websocket)
            .and_then(|offered| upgrade::allowed(&offered))
            .zip(head.extensions.remove::<OnUpgrade>());
        let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let body = Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX));
        let mut outgoing = origin::request_head(&self.origin, &head, target, client.ip())
            .body(Either::Left(body))
            .expect("a request built from a valid request is valid");
        if let Some((protocol, _)) = &upgrade {
            upgrade::keep(outgoing.headers_mut(), protocol.clone());
        }
        let mut response = match self
            .origin
            .send(outgoing, status.metric_route(), timeout)
            .await
        {
            Ok(response) => response,
            Err(OriginError::BodyTooLarge) => {
                status.phase = status.phase.body_too_large();
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
                    .and_then(|v| decide::key_for_location(&self.policy(), v, host))
                    && !planned.keys.contains(&key)
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
        let asked = upgrade.as_ref().map(|(protocol, _)| protocol);
        if switched
            && !asked.is_some_and(|asked| upgrade::switched_to_allowed(accepted.as_ref(), asked))
        {
            tracing::warn!(
                upgrade = ?accepted,
                "the origin switched protocols without being asked to, or to another protocol: not tunnelled"
            );
            return (
                plain(
                    StatusCode::BAD_GATEWAY,
                    "cachalot: the origin switched to a protocol the proxy does not tunnel\n",
                ),
                status,
            );
        }
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

    /// Looks the key up in Redis: a fresh entry is a hit; a stale one is served while it is
    /// refreshed, or revalidated; anything else a miss.
    async fn lookup(self: &Arc<Self>, mut request: Cacheable) -> Answer {
        let stages = self.stages();
        if !self.store.is_healthy() {
            return Box::pin(fill::fetch_uncached(
                &stages,
                &request,
                Reason::RedisUnavailable,
            ))
            .await;
        }
        let client = if request.rule().honor_client_no_cache {
            client_directives(&request.head.headers)
        } else {
            Directives::default()
        };
        if client.no_store {
            return Box::pin(fill::fetch_uncached(
                &stages,
                &request,
                Reason::ClientNoStore,
            ))
            .await;
        }
        let use_l1 = request.rule().l1;
        let lookup = match self.store.get(&request.key, use_l1).await {
            Ok(lookup) => lookup,
            Err(_) => {
                return Box::pin(fill::fetch_uncached(
                    &stages,
                    &request,
                    Reason::RedisUnavailable,
                ))
                .await;
            }
        };
        let Ok(lookup) = self.select_variant(&mut request, lookup).await else {
            return Box::pin(fill::fetch_uncached(
                &stages,
                &request,
                Reason::RedisUnavailable,
            ))
            .await;
        };
        request.l1_epoch = use_l1.then_some(lookup.l1_epoch);
        let Some(entry) = lookup.entry else {
            if client.only_if_cached {
                return only_if_cached(&request);
            }
            return Box::pin(self.miss(request, lookup.generation, None)).await;
        };
        let now = now_ms();
        match reuse(&entry, now, &client) {
            Reuse::Fresh => {
                let refresh =
                    request.rule().early_refresh && !lookup.from_l1 && expires_early(&entry, now);
                let mut status = request.status(Phase::Hit(if lookup.from_l1 {
                    Some(Reason::L1)
                } else if refresh {
                    Some(Reason::EarlyRefresh)
                } else {
                    None
                }));
                let response = from_entry(&entry, &request, &mut status);
                if refresh {
                    fill::refresh(&stages, request, lookup.generation, entry);
                }
                (response, status)
            }
            Reuse::Stale(reason) => {
                let mut status = request.status(Phase::Stale(reason));
                let response = from_entry(&entry, &request, &mut status);
                if reason == Reason::StaleWhileRevalidate {
                    fill::refresh(&stages, request, lookup.generation, entry);
                }
                (response, status)
            }
            Reuse::Revalidate if client.only_if_cached => only_if_cached(&request),
            Reuse::Revalidate => Box::pin(self.miss(request, lookup.generation, Some(entry))).await,
        }
    }

    /// When the URL's entry varies on request headers and does not fit this request, reads
    /// the variant this request's values name instead (a second round trip, only then).
    async fn select_variant(
        &self,
        request: &mut Cacheable,
        lookup: Lookup,
    ) -> Result<Lookup, crate::store::Unavailable> {
        let Some(entry) = &lookup.entry else {
            return Ok(lookup);
        };
        if vary::matches(entry, &request.head.headers, request.forwarded()) {
            return Ok(lookup);
        }
        let selecting = vary::selecting(
            &vary::entry_names(entry),
            &request.head.headers,
            request.forwarded(),
        );
        let key = vary::variant_key(&request.key, &selecting);
        let mut variant = self.store.get(&key, request.rule().l1).await?;
        variant.entry = variant
            .entry
            .filter(|e| vary::matches(e, &request.head.headers, request.forwarded()));
        request.variant = Some(key);
        Ok(variant)
    }

    /// A miss joins the key's flight in this process, or leads one. `stale` is the stored
    /// entry that was too old to serve, if any.
    async fn miss(
        self: &Arc<Self>,
        mut request: Cacheable,
        generation: u64,
        stale: Option<Arc<Entry>>,
    ) -> Answer {
        match self.flights.join(request.fill_key()) {
            Join::Lead(flight) => {
                // Led in this request's task, so the lock is asked for at once; a client
                // that hangs up hands the fill to a task of its own, since the flight's
                // waiters depend on it.
                let stages = self.stages();
                let request = Arc::new(request);
                let fill = finishing({
                    let request = Arc::clone(&request);
                    async move { fill::lead(&stages, flight, &request, generation, stale).await }
                });
                match fill.await {
                    Ok(answer) => answer,
                    Err(e) => {
                        tracing::error!(error = %e, "fill failed");
                        let status =
                            request.status(Phase::Miss(Fill::NotStored(Reason::OriginError)));
                        (plain(StatusCode::BAD_GATEWAY, "fill failed\n"), status)
                    }
                }
            }
            Join::Wait(receiver) => {
                metrics::counter!("cachalot_collapse_waiters_total", "scope" => "process")
                    .increment(1);
                // The flight's leader answers within the lock wait plus one origin fetch;
                // asking the origin before that would be the stampede collapsing prevents.
                let policy = self.policy();
                let wait = policy.collapse.wait + policy.origin_timeout(Some(&request.route));
                match tokio::time::timeout(wait, collapse::landing(receiver)).await {
                    Ok(Landing::Stored(entry))
                        if entry.generation >= generation
                            && vary::matches(
                                &entry,
                                &request.head.headers,
                                request.forwarded(),
                            ) =>
                    {
                        let mut status = request.status(Phase::Collapsed);
                        (from_entry(&entry, &request, &mut status), status)
                    }
                    // The flight started before an invalidation this request already saw:
                    // its response is older than what the request may be served. Fly again.
                    Ok(Landing::Stored(entry)) if entry.generation < generation => {
                        Box::pin(self.miss(request, generation, stale)).await
                    }
                    // The response varies, and not for this request's header values: fly
                    // again for this request's variant (once; its own flight is exact).
                    Ok(Landing::Stored(entry)) if request.variant.is_none() => {
                        let selecting = vary::selecting(
                            &vary::entry_names(&entry),
                            &request.head.headers,
                            request.forwarded(),
                        );
                        request.variant = Some(vary::variant_key(&request.key, &selecting));
                        Box::pin(self.miss(request, generation, stale)).await
                    }
                    // The response waited for may not be shared (Set-Cookie, an error):
                    // each waiter asks the origin for its own.
                    Ok(_) => {
                        fill::fetch_uncached(&self.stages(), &request, Reason::NotShared).await
                    }
                    Err(_) => {
                        metrics::counter!("cachalot_collapse_timeouts_total").increment(1);
                        fill::fetch_uncached(&self.stages(), &request, Reason::CollapseTimeout)
                            .await
                    }
                }
            }
        }
    }
}

/// How a stored entry may answer a request.
enum Reuse {
    Fresh,
    /// Served stale, for this reason (stale-while-revalidate, or the client's max-stale).
    Stale(Reason),
    /// Too old: ask the origin (conditionally, when the entry has a validator).
    Revalidate,
}

/// RFC 9111 §4.2 and §5.2.1: freshness, narrowed or widened by the client's directives
/// (empty unless the route honours them), and the entry's stale-while-revalidate window.
fn reuse(entry: &Entry, now: u64, client: &Directives) -> Reuse {
    if client.no_cache {
        return Reuse::Revalidate;
    }
    let age_ok = client.max_age.is_none_or(|max| entry.age(now) <= max);
    let fresh_enough = client
        .min_fresh
        .is_none_or(|min| entry.fresh_until_ms.saturating_sub(now) >= min * 1000);
    if entry.is_fresh(now) {
        return if age_ok && fresh_enough {
            Reuse::Fresh
        } else {
            Reuse::Revalidate
        };
    }
    let client_allows = match client.max_stale {
        Some(None) => true,
        Some(Some(limit)) => entry.staleness_ms(now) <= limit * 1000,
        None => false,
    };
    if client_allows && age_ok && !entry.forbids_stale {
        return Reuse::Stale(Reason::MaxStale);
    }
    if entry.within_stale_while_revalidate(now) && client.max_age.is_none() {
        return Reuse::Stale(Reason::StaleWhileRevalidate);
    }
    Reuse::Revalidate
}

/// XFetch (Vattani et al.): refresh before expiry with a probability that rises as expiry
/// nears, scaled by how long the origin took, so a hot key is refreshed by one request
/// shortly before it would expire under everyone.
fn expires_early(entry: &Entry, now: u64) -> bool {
    let left = entry.fresh_until_ms.saturating_sub(now) as f64;
    let fetch = entry.fetch_ms.max(1) as f64;
    let draw: f64 = rand::random::<f64>().max(f64::MIN_POSITIVE);
    fetch * -draw.ln() >= left
}

/// The client's `Cache-Control`, or `Pragma: no-cache` when it sends none (RFC 9111 §5.4).
fn client_directives(headers: &HeaderMap) -> Directives {
    if !headers.contains_key(header::CACHE_CONTROL)
        && headers
            .get_all(header::PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
    {
        return Directives {
            no_cache: true,
            ..Directives::default()
        };
    }
    Directives::parse(headers)
}

/// RFC 9111 §5.2.1.7: nothing stored may answer, and the client asked not to go further.
fn only_if_cached(request: &Cacheable) -> (Response<ProxyBody>, Outcome) {
    let status = request.status(Phase::Miss(Fill::NotStored(Reason::OnlyIfCached)));
    (
        plain(
            StatusCode::GATEWAY_TIMEOUT,
            "cachalot: nothing stored answers this request, and it asked for only-if-cached\n",
        ),
        status,
    )
}

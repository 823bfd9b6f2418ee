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
use crate::http::hop_by_hop;
use crate::http::path;
use crate::http::request_id;
use crate::http::tags;
use crate::net::body::ProxyBody;
use crate::net::upgrade;
use crate::observe::access_log;
use crate::observe::stats::Stats;
use crate::observe::uncached::Seen;
use crate::observe::verify::Verifications;
use crate::origin::{self, Origin, OriginError};
use crate::phase::{Outcome, Phase, Reason, Refusal};
use crate::policy::Policy;
use crate::request::admit;
use crate::request::cacheable::Cacheable;
use crate::request::collapse::Flights;
use crate::request::context::Stages;
use crate::request::decide::{self, Decision, Forward, Plan};
use crate::request::lookup;
use crate::request::respond::{
    CACHE_STATUS, bad_request, body_too_large, error_response, local_answer, plain,
};
use crate::request::storable;
use crate::store::message::{Invalidation, Source};
use crate::store::{Applied, Store};
use arc_swap::{ArcSwap, Guard};
use http::header;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The proxy's shared state: the policy, Redis, the origin client and the flights.
pub struct Proxy {
    /// Swapped whole on reload; a request holds the routes it started with.
    pub(crate) policy: ArcSwap<Policy>,
    pub(crate) store: Arc<Store>,
    pub(crate) origin: Arc<Origin>,
    pub(crate) flights: Arc<Flights>,
    /// Per-route summary for the status page.
    pub(crate) stats: Stats,
    /// What shadow verification found, per route (and its samplers and bound).
    pub(crate) verifications: Arc<Verifications>,
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
            verifications: Arc::clone(&self.verifications),
        }
    }

    /// Per-route statistics since start (the status page's numbers).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// What shadow verification has found since start (the status page's numbers).
    pub fn verifications(&self) -> &Verifications {
        &self.verifications
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
        let logged =
            access_log::enabled().then(|| (request.method().clone(), request.uri().clone()));
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
            access_log::record(&access_log::Line {
                request_id: request_id.to_str().unwrap_or("-"),
                method: &method,
                path,
                outcome: &status,
                key: key.as_deref(),
                status: response.status().as_u16(),
                latency: started.elapsed(),
            });
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
                lookup::lookup(&self.stages(), cacheable).await
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

    /// Counts a GET or HEAD that no cached route took, for "what to cache next".
    fn note_uncached(
        &self,
        head: &http::request::Parts,
        status: &Outcome,
        response: &Response<Incoming>,
        origin: std::time::Duration,
    ) {
        let route = match status.phase {
            Phase::Pass(Reason::NoRoute) => None,
            Phase::Pass(Reason::RoutePass) => status.label.as_ref(),
            _ => return,
        };
        self.stats.uncached().record(&Seen {
            method: &head.method,
            path: head.uri.path(),
            route,
            origin,
            storable: storable::storable_by_default(response.status(), response.headers()),
        });
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
        let asked = Instant::now();
        let mut response = match self
            .origin
            .send(outgoing, status.metric_route(), timeout)
            .await
        {
            Ok(response) => {
                self.note_uncached(&head, &status, &response, asked.elapsed());
                response
            }
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
        hop_by_hop::strip_hop_by_hop(&mut parts.headers);
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
}

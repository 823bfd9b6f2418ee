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
use crate::entry::{Entry, now_ms};
use crate::fill;
use crate::origin::{self, Origin, OriginError};
use crate::path;
use crate::policy::Policy;
use crate::route::{Action, CacheRule, Route};
use crate::semantics;
use crate::store::Store;
use crate::upgrade;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The proxy's shared state: the policy, Redis, the origin client and the flights.
pub struct Proxy {
    pub(crate) policy: Arc<Policy>,
    pub(crate) store: Arc<Store>,
    pub(crate) origin: Origin,
    pub(crate) flights: Arc<Flights>,
}

/// A GET or HEAD on a cached route, with everything the cache needs to answer it.
pub(crate) struct Cacheable {
    pub route: Arc<Route>,
    pub key: String,
    /// The client's request head (its body, if any, is not used: fills are GETs).
    pub head: http::request::Parts,
    /// Path and query as the origin sees them (the route's query rule applied).
    pub origin_target: String,
    pub client: SocketAddr,
}

impl Cacheable {
    pub fn rule(&self) -> &CacheRule {
        match &self.route.action {
            Action::Cache(rule) => rule,
            Action::Pass => unreachable!("only cached routes build a Cacheable"),
        }
    }

    pub fn head_only(&self) -> bool {
        self.head.method == Method::HEAD
    }

    pub fn status(&self, phase: Phase) -> CacheStatus {
        CacheStatus::new(phase).on_route(self.route.name.as_deref())
    }
}

impl Proxy {
    /// Answers one client request. Never fails: origin and Redis problems become responses.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        // The access line is at debug: copy the target only when it will be logged.
        let logged = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (request.method().clone(), request.uri().clone()));
        let (mut response, status) = self.route(request, client).await;
        response
            .headers_mut()
            .insert(CACHE_STATUS.clone(), status.header_value());
        if let Some((method, uri)) = logged {
            tracing::debug!(
                %method,
                target = uri.path_and_query().map_or("/", |p| p.as_str()),
                route = status.route.as_deref().unwrap_or("-"),
                phase = status.phase.as_str(),
                reason = status.reason.map_or("-", Reason::as_str),
                status = response.status().as_u16(),
                latency_us = started.elapsed().as_micros() as u64,
                "request"
            );
        }
        response
    }

    async fn route(
        self: &Arc<Self>,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let decision = {
            let path = path::normalize(request.uri().path());
            let segments = path::segments(&path);
            match self.policy.routes.find(request.method(), &path, &segments) {
                None => Err(CacheStatus::new(Phase::Pass).because(Reason::NoRoute)),
                Some(matched) => {
                    let route = Arc::clone(matched.route);
                    let named = |phase| CacheStatus::new(phase).on_route(route.name.as_deref());
                    match &route.action {
                        Action::Pass => Err(named(Phase::Pass).because(Reason::RoutePass)),
                        Action::Cache(_)
                            if !matches!(*request.method(), Method::GET | Method::HEAD) =>
                        {
                            Err(named(Phase::Pass).because(Reason::Method))
                        }
                        Action::Cache(rule) => {
                            match semantics::request_bypass(request.headers(), rule) {
                                Some(reason) => Err(named(Phase::Bypass).because(reason)),
                                None => {
                                    let query = request.uri().query();
                                    let key =
                                        rule.key.build(&matched.params, &path, query, &rule.query);
                                    let origin_target = match rule.query.forwarded(query) {
                                        Some(q) => format!("{}?{q}", request.uri().path()),
                                        None => request.uri().path().to_string(),
                                    };
                                    Ok((Arc::clone(&route), key, origin_target))
                                }
                            }
                        }
                    }
                }
            }
        };
        match decision {
            Err(status) => self.pass(request, client, status).await,
            Ok((route, key, origin_target)) => {
                let (head, _body) = request.into_parts();
                let cacheable = Cacheable {
                    route,
                    key,
                    head,
                    origin_target,
                    client,
                };
                self.lookup(cacheable).await
            }
        }
    }

    /// Forwards a request the cache does not handle, streaming both ways.
    async fn pass(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
        mut status: CacheStatus,
    ) -> (Response<ProxyBody>, CacheStatus) {
        let (mut head, body) = request.into_parts();
        let upgrade = upgrade::requested(&head.headers).zip(head.extensions.remove::<OnUpgrade>());
        let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut outgoing = origin::request_head(&self.origin, &head, target, client.ip())
            .body(Either::Left(body))
            .expect("a request built from a valid request is valid");
        if let Some((protocol, _)) = &upgrade {
            upgrade::keep(outgoing.headers_mut(), protocol.clone());
        }
        match self.origin.send(outgoing).await {
            Ok(mut response) => {
                status.fwd_status = Some(response.status().as_u16());
                let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
                let accepted = response.headers().get(header::UPGRADE).cloned();
                let origin_side = switched.then(|| hyper::upgrade::on(&mut response));
                let (mut parts, body) = response.into_parts();
                origin::strip_hop_by_hop(&mut parts.headers);
                if let (Some((_, client_side)), Some(origin_side), Some(protocol)) =
                    (upgrade, origin_side, accepted)
                {
                    upgrade::keep(&mut parts.headers, protocol);
                    upgrade::splice(client_side, origin_side);
                }
                (Response::from_parts(parts, ProxyBody::Stream(body)), status)
            }
            Err(e) => {
                tracing::warn!(error = %e, "origin request failed");
                (error_response(&e), status)
            }
        }
    }

    /// Looks the key up in Redis: a fresh entry is a hit, anything else a miss.
    async fn lookup(self: &Arc<Self>, request: Cacheable) -> (Response<ProxyBody>, CacheStatus) {
        if !self.store.is_healthy() {
            return fill::fetch_uncached(self, &request, Reason::RedisUnavailable).await;
        }
        match self.store.get(&request.key).await {
            Ok(Some(entry)) if entry.is_fresh(now_ms()) => {
                let mut status = request.status(Phase::Hit);
                (from_entry(&entry, &request, &mut status), status)
            }
            Ok(_) => self.miss(request).await,
            Err(_) => fill::fetch_uncached(self, &request, Reason::RedisUnavailable).await,
        }
    }

    /// A miss joins the key's flight in this process, or leads one.
    async fn miss(self: &Arc<Self>, request: Cacheable) -> (Response<ProxyBody>, CacheStatus) {
        match self.flights.join(&request.key) {
            Join::Lead(flight) => {
                // The fill runs in its own task, so a client that hangs up does not cancel
                // the fetch its waiters depend on.
                let proxy = Arc::clone(self);
                let request = Arc::new(request);
                let task = tokio::spawn({
                    let request = Arc::clone(&request);
                    async move { fill::lead(&proxy, flight, &request).await }
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
                // The flight's leader answers within the lock wait plus one origin fetch;
                // asking the origin before that would be the stampede collapsing prevents.
                let wait = self.policy.collapse.wait + self.origin.timeout();
                match tokio::time::timeout(wait, collapse::landing(receiver)).await {
                    Ok(Landing::Stored(entry)) => {
                        let mut status = request.status(Phase::Collapsed);
                        (from_entry(&entry, &request, &mut status), status)
                    }
                    // The response waited for may not be shared (Set-Cookie, an error):
                    // each waiter asks the origin for its own.
                    Ok(_) => fill::fetch_uncached(self, &request, Reason::NotShared).await,
                    Err(_) => fill::fetch_uncached(self, &request, Reason::CollapseTimeout).await,
                }
            }
        }
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

/// 502 or 504, with a body that says which.
pub(crate) fn error_response(error: &OriginError) -> Response<ProxyBody> {
    let text = match error {
        OriginError::Timeout(_) => "cachalot: the origin did not answer in time\n",
        OriginError::Connect(_) => "cachalot: the origin cannot be reached\n",
        OriginError::Failed(_) => "cachalot: the origin's response was broken\n",
    };
    plain(error.status(), text)
}

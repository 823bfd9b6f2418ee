//! Filling a missing entry: one origin request per key across every instance.
//!
//! The process's flight leader takes the Redis lock (`SET NX PX` with a random token). The
//! winner fetches from the origin, stores the entry, publishes a fill notice and releases
//! the lock by compare-and-delete. A loser waits for the notice (polling with back-off as
//! the fallback), reads the entry and hands it to its own process's waiters. If the winner
//! fails, or `collapse.wait` runs out, the loser asks the origin itself: a client is never
//! left without an answer because another instance died.

use crate::body::ProxyBody;
use crate::cache_status::{CacheStatus, Phase, Reason};
use crate::collapse::{Flight, Landing};
use crate::entry::{Entry, now_ms};
use crate::origin::{self, OriginBody, OriginError};
use crate::proxy::{Cacheable, Proxy, error_response, from_entry};
use crate::semantics;
use crate::store::FillNotice;
use crate::tags;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// First and longest pause between polls while waiting for another instance's fill.
const POLL_START: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_millis(400);

type Answer = (Response<ProxyBody>, CacheStatus);

/// Leads the flight for a key: lock, then fetch and store, or wait for the lock holder.
/// `generation` is the key's invalidation generation seen by the lookup that missed.
pub(crate) async fn lead(
    proxy: &Arc<Proxy>,
    flight: Flight,
    request: &Cacheable,
    generation: u64,
) -> Answer {
    let token = lock_token();
    let lock_ttl = proxy.policy().collapse.lock_ttl;
    match proxy.store.try_lock(&request.key, &token, lock_ttl).await {
        Ok(true) => {
            let (answer, landing) = fetch_and_store(proxy, request, Some(&token), generation).await;
            flight.land(landing);
            answer
        }
        Ok(false) => {
            metrics::counter!("cachalot_collapse_waiters_total", "scope" => "instances")
                .increment(1);
            wait_for_holder(proxy, flight, request, token).await
        }
        Err(_) => {
            flight.land(Landing::Failed);
            fetch_uncached(proxy, request, Reason::RedisUnavailable).await
        }
    }
}

/// Another instance holds the lock: wait for its fill, or take over when it is gone.
async fn wait_for_holder(
    proxy: &Arc<Proxy>,
    flight: Flight,
    request: &Cacheable,
    token: String,
) -> Answer {
    let mut generation;
    let deadline = Instant::now() + proxy.policy().collapse.wait;
    // Register before looking again, so a notice sent in between is not missed.
    let mut notices = proxy.flights.await_remote(&request.key);
    let mut pause = POLL_START;
    let mut first = true;
    let mut gave_up = Reason::CollapseTimeout;
    loop {
        match proxy.store.get(&request.key, false).await {
            Ok(lookup) => match lookup.entry {
                Some(entry) if entry.is_fresh(now_ms()) => {
                    return serve_filled(flight, request, entry);
                }
                _ => generation = lookup.generation,
            },
            Err(_) => {
                flight.land(Landing::Failed);
                return fetch_uncached(proxy, request, Reason::RedisUnavailable).await;
            }
        }
        // The holder may have released the lock without storing (or crashed and the lock
        // expired): then we lead.
        if !first
            && let Ok(true) = proxy
                .store
                .try_lock(&request.key, &token, proxy.policy().collapse.lock_ttl)
                .await
        {
            drop(notices);
            // The holder may have stored and unlocked between our read and our lock.
            if let Ok(lookup) = proxy.store.get(&request.key, false).await {
                match lookup.entry {
                    Some(entry) if entry.is_fresh(now_ms()) => {
                        let _ = proxy.store.unlock(&request.key, &token).await;
                        return serve_filled(flight, request, entry);
                    }
                    _ => generation = lookup.generation,
                }
            }
            let (answer, landing) = fetch_and_store(proxy, request, Some(&token), generation).await;
            flight.land(landing);
            return answer;
        }
        first = false;
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::select! {
            notice = notices.next() => {
                if let Some(FillNotice::Failed(_)) = notice {
                    gave_up = Reason::OriginError;
                    break;
                }
            }
            () = tokio::time::sleep(pause.min(deadline - now)) => pause = (pause * 2).min(POLL_MAX),
        }
    }
    drop(notices);
    if gave_up == Reason::CollapseTimeout {
        metrics::counter!("cachalot_collapse_timeouts_total").increment(1);
    }
    tracing::debug!(key = %request.key, reason = gave_up.as_str(), "no fill from the lock holder; asking the origin");
    let ((response, mut status), landing) = fetch_and_store(proxy, request, None, generation).await;
    if status.reason.is_none() {
        status.reason = Some(gave_up);
    }
    flight.land(landing);
    (response, status)
}

/// Serves another instance's fill to this request and to the flight's waiters.
fn serve_filled(flight: Flight, request: &Cacheable, entry: Arc<Entry>) -> Answer {
    let mut status = request.status(Phase::Collapsed);
    let response = from_entry(&entry, request, &mut status);
    flight.land(Landing::Stored(entry));
    (response, status)
}

/// Fetches the entry from the origin and stores it if it may be stored. Always publishes
/// the outcome and releases the lock (when `token` is ours), whatever happens.
async fn fetch_and_store(
    proxy: &Arc<Proxy>,
    request: &Cacheable,
    token: Option<&str>,
    generation: u64,
) -> (Answer, Landing) {
    let (answer, stored) = fetch(proxy, request, generation).await;
    let key = &request.key;
    let notice = match &stored {
        Some((_, true)) => FillNotice::Stored(key.clone()),
        _ => FillNotice::Failed(key.clone()),
    };
    // Both go out together on the control connection, in this order (one round trip, and
    // a waiter woken by the notice finds the entry, which was written before it).
    let publish = async {
        if token.is_some() || matches!(notice, FillNotice::Stored(_)) {
            let _ = proxy.store.publish(&notice).await;
        }
    };
    let unlock = async {
        if let Some(token) = token {
            let _ = proxy.store.unlock(key, token).await;
        }
    };
    tokio::join!(publish, unlock);
    let landing = match stored {
        // Even if Redis refused the write, the response is shareable with this process's waiters.
        Some((entry, _)) => Landing::Stored(entry),
        None => Landing::Failed,
    };
    (answer, landing)
}

/// One origin fetch for a fill; returns the entry and whether Redis took it, when storable.
async fn fetch(
    proxy: &Arc<Proxy>,
    request: &Cacheable,
    generation: u64,
) -> (Answer, Option<(Arc<Entry>, bool)>) {
    let rule = request.rule();
    let started = Instant::now();
    let started_ms = now_ms();
    let mut status = request.status(Phase::Miss);
    let mut outgoing = origin_request(proxy, request, Method::GET);
    // Stored bodies are served to every client, so ask for one that every client can read,
    // whole and unconditional: the client's own validators and ranges are answered from the
    // stored entry, not passed on to shape what everyone gets.
    let headers = outgoing.headers_mut();
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ] {
        headers.remove(name);
    }
    let response = match proxy.origin.send(outgoing, request.metric_route()).await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(key = %request.key, error = %e, "origin request failed");
            return (
                (error_response(&e), status.because(Reason::OriginError)),
                None,
            );
        }
    };
    status.fwd_status = Some(response.status().as_u16());
    let (mut parts, body) = response.into_parts();
    origin::strip_hop_by_hop(&mut parts.headers);
    let origin_tags = tags::from_response(
        &mut parts.headers,
        proxy.policy().invalidation.forward_tag_headers,
    );

    if let Some(reason) = semantics::not_storable(parts.status, &parts.headers, rule) {
        let body = if request.head_only() {
            ProxyBody::Empty
        } else {
            ProxyBody::Stream(body)
        };
        return (
            (Response::from_parts(parts, body), status.because(reason)),
            None,
        );
    }

    let bytes = match read_body(body, rule.max_object_size, started, proxy.origin.timeout()).await {
        Ok(BodyRead::Complete(bytes)) => bytes,
        Ok(BodyRead::TooLarge { read, rest }) => {
            let body = if request.head_only() {
                ProxyBody::Empty
            } else {
                ProxyBody::Spilled { read, rest }
            };
            return (
                (
                    Response::from_parts(parts, body),
                    status.because(Reason::TooLarge),
                ),
                None,
            );
        }
        Err(e) => {
            tracing::warn!(key = %request.key, error = %e, "origin body failed");
            return (
                (error_response(&e), status.because(Reason::OriginError)),
                None,
            );
        }
    };

    let now = now_ms();
    let initial_age_s = parts
        .headers
        .remove(header::AGE)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let entry = Arc::new(Entry {
        status: parts.status,
        headers: parts.headers,
        body: bytes,
        stored_at_ms: now,
        fresh_until_ms: now + rule.ttl.as_millis() as u64,
        initial_age_s,
        generation,
    });
    match proxy
        .store
        .admit_variant(&request.key, rule.max_variants, rule.ttl)
        .await
    {
        Ok(true) => {}
        // The base already has `max_variants` live variants: served, not stored, and not
        // shared with waiters (each asks on its own, as for any unstored response).
        Ok(false) => {
            metrics::counter!("cachalot_variants_refused_total", "route" => request.metric_route())
                .increment(1);
            status.reason = Some(Reason::TooManyVariants);
            let response = from_entry(&entry, request, &mut status);
            return ((response, status), None);
        }
        Err(_) => {
            status.reason = Some(Reason::RedisUnavailable);
            let response = from_entry(&entry, request, &mut status);
            return ((response, status), Some((entry, false)));
        }
    }
    let mut all_tags = request.tags.clone();
    all_tags.extend(origin_tags);
    let put = proxy
        .store
        .put(
            &request.key,
            &entry,
            rule.ttl,
            &all_tags,
            started_ms,
            request.l1_epoch,
        )
        .await;
    let stored = match put {
        Ok(true) => true,
        // One of its tags was purged while the fetch ran: this response may predate the
        // purge, so it is neither stored nor shared with waiters.
        Ok(false) => {
            status.reason = Some(Reason::Invalidated);
            let response = from_entry(&entry, request, &mut status);
            return ((response, status), None);
        }
        Err(_) => {
            status.reason = Some(Reason::RedisUnavailable);
            false
        }
    };
    status.stored = stored;
    let response = from_entry(&entry, request, &mut status);
    ((response, status), Some((entry, stored)))
}

/// Forwards a cacheable request without the cache (Redis down, or no fill to wait for).
pub(crate) async fn fetch_uncached(
    proxy: &Arc<Proxy>,
    request: &Cacheable,
    reason: Reason,
) -> Answer {
    let phase = if reason == Reason::RedisUnavailable {
        Phase::Bypass
    } else {
        Phase::Miss
    };
    let mut status = request.status(phase).because(reason);
    match proxy
        .origin
        .send(
            origin_request(proxy, request, request.head.method.clone()),
            status.metric_route(),
        )
        .await
    {
        Ok(response) => {
            status.fwd_status = Some(response.status().as_u16());
            let (mut parts, body) = response.into_parts();
            origin::strip_hop_by_hop(&mut parts.headers);
            tags::from_response(
                &mut parts.headers,
                proxy.policy().invalidation.forward_tag_headers,
            );
            (Response::from_parts(parts, ProxyBody::Stream(body)), status)
        }
        Err(e) => {
            tracing::warn!(key = %request.key, error = %e, "origin request failed");
            (error_response(&e), status)
        }
    }
}

/// Request headers an origin may reflect into its response (absolute links, redirects,
/// routing) that the cache key does not hold. On a cacheable route they never reach the
/// origin: otherwise one client could plant a response for everyone (cache poisoning).
const UNKEYED: [&str; 11] = [
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "forwarded",
];

/// The origin request for a cacheable route: the route's query rule applied, `Cookie`
/// removed where the route declared cookies irrelevant (so nothing stored is personalised),
/// and headers the key does not hold removed (see [`UNKEYED`]; a route's `vary` keeps them).
fn origin_request(proxy: &Proxy, request: &Cacheable, method: Method) -> Request<OriginBody> {
    let mut builder = origin::request_head(
        &proxy.origin,
        &request.head,
        &request.origin_target(),
        request.client.ip(),
    )
    .method(method);
    if let Some(headers) = builder.headers_mut() {
        headers.remove(header::COOKIE);
        // The fill reads the whole body; a request body on a GET is not forwarded.
        headers.remove(header::CONTENT_LENGTH);
        for name in UNKEYED {
            // A header the route keys on (`vary`) reaches the origin: each value has its own entry.
            if !request.rule().vary.iter().any(|v| v == name) {
                headers.remove(name);
            }
        }
    }
    builder
        .body(Either::Right(Empty::new()))
        .expect("a request built from a valid request is valid")
}

enum BodyRead {
    Complete(Bytes),
    /// Over the size limit: what was read so far, and the rest of the stream.
    TooLarge {
        read: VecDeque<Bytes>,
        rest: Incoming,
    },
}

/// Reads a body to store, within the origin timeout counted from `started`.
async fn read_body(
    mut body: Incoming,
    limit: u64,
    started: Instant,
    timeout: Duration,
) -> Result<BodyRead, OriginError> {
    let deadline = started + timeout;
    let mut chunks = VecDeque::new();
    let mut total = 0u64;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(OriginError::Timeout(timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(OriginError::Failed(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            chunks.push_back(data);
            if total > limit {
                return Ok(BodyRead::TooLarge {
                    read: chunks,
                    rest: body,
                });
            }
        }
    }
    Ok(BodyRead::Complete(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop_front().expect("one chunk"),
        _ => {
            let mut joined = BytesMut::with_capacity(total as usize);
            for chunk in chunks {
                joined.extend_from_slice(&chunk);
            }
            joined.freeze()
        }
    }))
}

/// A random token that only this leader knows, so only it can release its lock.
fn lock_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

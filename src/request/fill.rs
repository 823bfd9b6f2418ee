//! Filling a missing entry: one origin request per key across every instance.
//!
//! The process's flight leader takes the Redis lock (`SET NX PX` with a random token). The
//! winner fetches from the origin, stores the entry, publishes a fill notice and releases
//! the lock by compare-and-delete. A loser waits for the notice (polling with back-off as
//! the fallback), reads the entry and hands it to its own process's waiters. If the winner
//! fails, or `collapse.wait` runs out, the loser asks the origin itself: a client is never
//! left without an answer because another instance died.

use crate::http::freshness::{self, Directives, Ttl};
use crate::http::tags;
use crate::http::vary;
use crate::net::body::ProxyBody;
use crate::origin::{self, OriginBody, OriginError};
use crate::phase::{Fill, Outcome, Phase, Reason};
use crate::request::cacheable::{Cacheable, reaches_origin};
use crate::request::collapse::{Flight, Join, Landing};
use crate::request::context::{Answer, Stages};
use crate::request::respond::{error_response, from_entry};
use crate::request::storable;
use crate::store::entry::{Entry, now_ms};
use crate::store::{FillNotice, Placement, Put};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// First and longest pause between polls while waiting for another instance's fill.
const POLL_START: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_millis(400);

/// A fetch's answer, and the entry it produced with whether Redis took it.
type Fetched = (Answer, Option<(Arc<Entry>, bool)>);

/// Leads the flight for a key: lock, then fetch and store, or wait for the lock holder.
/// `generation` is the key's invalidation generation seen by the lookup that missed;
/// `stale` the stored response it found too old, if any (revalidated, or served if the
/// origin fails and its `stale-if-error` window allows).
pub(crate) async fn lead(
    stages: &Stages,
    flight: Flight,
    request: &Cacheable,
    generation: u64,
    stale: Option<Arc<Entry>>,
) -> Answer {
    let token = lock_token();
    let lock_ttl = stages.policy.collapse.lock_ttl;
    match stages
        .store
        .try_lock(request.fill_key(), &token, lock_ttl)
        .await
    {
        Ok(true) => {
            let (answer, landing) =
                fetch_and_store(stages, request, Some(&token), generation, stale.as_ref()).await;
            flight.land(landing);
            answer
        }
        Ok(false) => {
            metrics::counter!("cachalot_collapse_waiters_total", "scope" => "instances")
                .increment(1);
            wait_for_holder(stages, flight, request, token, stale).await
        }
        Err(_) => {
            flight.land(Landing::Failed);
            fetch_uncached(stages, request, Reason::RedisUnavailable).await
        }
    }
}

/// Refreshes a stale (or nearly stale) entry in the background while it is served: one
/// refresh per key in this process (the flight) and across instances (the lock); when
/// either is taken, someone is already at it.
pub(crate) fn refresh(stages: &Stages, request: Cacheable, generation: u64, stale: Arc<Entry>) {
    let Join::Lead(flight) = stages.flights.join(request.fill_key()) else {
        return;
    };
    let stages = stages.clone();
    tokio::spawn(async move {
        let token = lock_token();
        let lock_ttl = stages.policy.collapse.lock_ttl;
        let landing = match stages
            .store
            .try_lock(request.fill_key(), &token, lock_ttl)
            .await
        {
            Ok(true) => {
                fetch_and_store(&stages, &request, Some(&token), generation, Some(&stale))
                    .await
                    .1
            }
            _ => Landing::Failed,
        };
        metrics::counter!("cachalot_background_refreshes_total", "route" => request.metric_route())
            .increment(1);
        flight.land(landing);
    });
}

/// Another instance holds the lock: wait for its fill, or take over when it is gone.
async fn wait_for_holder(
    stages: &Stages,
    flight: Flight,
    request: &Cacheable,
    token: String,
    stale: Option<Arc<Entry>>,
) -> Answer {
    let mut generation;
    let waiting_since = now_ms();
    // The holder's fill: fresh, or stored since we started waiting (a response that must be
    // revalidated on every use is never fresh, but is just as new), and for this request's
    // header values when it varies.
    let filled = |entry: &Entry| {
        (entry.is_fresh(now_ms()) || entry.stored_at_ms >= waiting_since)
            && vary::matches(entry, &request.head.headers, request.forwarded())
    };
    let deadline = Instant::now() + stages.policy.collapse.wait;
    // Register before looking again, so a notice sent in between is not missed.
    let mut notices = stages.flights.await_remote(request.fill_key());
    let mut pause = POLL_START;
    let mut first = true;
    let mut gave_up = Reason::CollapseTimeout;
    loop {
        match stages.store.get(request.fill_key(), false).await {
            Ok(lookup) => match lookup.entry {
                Some(entry) if filled(&entry) => {
                    return serve_filled(flight, request, entry);
                }
                _ => generation = lookup.generation,
            },
            Err(_) => {
                flight.land(Landing::Failed);
                return fetch_uncached(stages, request, Reason::RedisUnavailable).await;
            }
        }
        // The holder may have released the lock without storing (or crashed and the lock
        // expired): then we lead.
        if !first
            && let Ok(true) = stages
                .store
                .try_lock(request.fill_key(), &token, stages.policy.collapse.lock_ttl)
                .await
        {
            drop(notices);
            // The holder may have stored and unlocked between our read and our lock.
            if let Ok(lookup) = stages.store.get(request.fill_key(), false).await {
                match lookup.entry {
                    Some(entry) if filled(&entry) => {
                        let _ = stages.store.unlock(request.fill_key(), &token).await;
                        return serve_filled(flight, request, entry);
                    }
                    _ => generation = lookup.generation,
                }
            }
            let (answer, landing) =
                fetch_and_store(stages, request, Some(&token), generation, stale.as_ref()).await;
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
    let ((response, mut status), landing) =
        fetch_and_store(stages, request, None, generation, stale.as_ref()).await;
    status.phase = status.phase.or_reason(gave_up);
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
/// the outcome and releases the lock (when `token` is ours), whatever happens, right after
/// the answer is ready.
async fn fetch_and_store(
    stages: &Stages,
    request: &Cacheable,
    token: Option<&str>,
    generation: u64,
    stale: Option<&Arc<Entry>>,
) -> (Answer, Landing) {
    let (answer, stored) = fetch(stages, request, generation, stale).await;
    let key = request.fill_key().to_string();
    let notice = match &stored {
        Some((_, true)) => FillNotice::Stored(key.clone()),
        _ => FillNotice::Failed(key.clone()),
    };
    // The client's answer does not wait for these: a waiter elsewhere is woken by the notice
    // and reads the entry, which was written before it; the lock only has to go before it
    // expires. Both go out together on the control connection (one round trip).
    let announce = token.is_some() || matches!(notice, FillNotice::Stored(_));
    let token = token.map(str::to_string);
    let store = Arc::clone(&stages.store);
    tokio::spawn(async move {
        let publish = async {
            if announce {
                let _ = store.publish(&notice).await;
            }
        };
        let unlock = async {
            if let Some(token) = &token {
                let _ = store.unlock(&key, token).await;
            }
        };
        tokio::join!(publish, unlock);
    });
    let landing = match stored {
        // Even if Redis refused the write, the response is shareable with this process's waiters.
        Some((entry, _)) => Landing::Stored(entry),
        None => Landing::Failed,
    };
    (answer, landing)
}

/// One origin fetch for a fill; returns the entry and whether Redis took it, when storable.
/// With a `stale` entry that has a validator the fetch is conditional, and a 304 refreshes
/// the stored entry without its body crossing the network again (RFC 9111 §4.3.4).
async fn fetch(
    stages: &Stages,
    request: &Cacheable,
    generation: u64,
    stale: Option<&Arc<Entry>>,
) -> Fetched {
    let rule = request.rule();
    let started = Instant::now();
    let request_ms = now_ms();
    let mut status = request.status(Phase::fill(stale.is_some()));
    let mut outgoing = origin_request(stages, request, Method::GET);
    // Stored bodies are served to every client, so ask for one that every client can read,
    // whole and unconditional: the client's own validators and ranges are answered from the
    // stored entry, not passed on to shape what everyone gets.
    let headers = outgoing.headers_mut();
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    for name in CONDITIONALS {
        headers.remove(name);
    }
    if rule.ttl.is_origin() {
        headers.append(
            freshness::SURROGATE_CAPABILITY.clone(),
            HeaderValue::from_static("cachalot=\"Surrogate/1.0\""),
        );
    }
    let revalidating = stale.filter(|entry| entry.has_validator());
    if let Some(entry) = revalidating {
        for (from, to) in [
            (header::ETAG, header::IF_NONE_MATCH),
            (header::LAST_MODIFIED, header::IF_MODIFIED_SINCE),
        ] {
            if let Some(value) = entry.headers.get(from) {
                headers.insert(to, value.clone());
            }
        }
    }
    let timeout = stages.policy.origin_timeout(Some(&request.route));
    let response = match stages
        .origin
        .send(outgoing, request.metric_route(), timeout)
        .await
    {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(key = %request.key, error = %e, "origin request failed");
            if let Some(answer) = stale_on_error(request, stale, &mut status) {
                return answer;
            }
            status.phase = status.phase.filled(Fill::NotStored(Reason::OriginError));
            return ((error_response(&e), status), None);
        }
    };
    status.fwd_status = Some(response.status().as_u16());
    if response.status().is_server_error()
        && let Some(answer) = stale_on_error(request, stale, &mut status)
    {
        return answer;
    }
    let (mut parts, body) = response.into_parts();
    origin::strip_hop_by_hop(&mut parts.headers);
    let origin_tags = tags::from_response(
        &mut parts.headers,
        stages.policy.invalidation.forward_tag_headers,
    );
    let times = Times {
        request_ms,
        response_ms: now_ms(),
    };

    if let (StatusCode::NOT_MODIFIED, Some(entry)) = (parts.status, revalidating) {
        let headers = updated_headers(&entry.headers, parts.headers);
        let directives = response_directives(rule, &headers);
        // The updated response must still be storable: a 304 can bring `private`, `no-store`,
        // `Set-Cookie` or a line that cannot be read. Then it is served to this client alone
        // and the stored entry is left as it was.
        let explicit = freshness::explicit_lifetime(&headers, &directives, times.response_ms);
        let refusal = storable::not_storable(
            entry.status,
            &headers,
            &directives,
            explicit.is_some(),
            rule,
        );
        let refreshed = build_entry(
            request,
            (entry.status, headers, entry.body.clone()),
            &directives,
            times,
            generation,
        );
        if let Some(reason) = refusal {
            status.phase = status.phase.filled(Fill::NotStored(reason));
            let response = from_entry(&refreshed.entry, request, &mut status);
            return ((response, status), None);
        }
        let tags = request.tags.iter().cloned().chain(origin_tags).collect();
        return store_and_answer(stages, request, refreshed, tags, status).await;
    }

    let directives = response_directives(rule, &parts.headers);
    let explicit = freshness::explicit_lifetime(&parts.headers, &directives, times.response_ms);
    if let Some(reason) = storable::not_storable(
        parts.status,
        &parts.headers,
        &directives,
        explicit.is_some(),
        rule,
    ) {
        let body = if request.head_only() {
            ProxyBody::Empty
        } else {
            ProxyBody::Stream(body)
        };
        status.phase = status.phase.filled(Fill::NotStored(reason));
        return ((Response::from_parts(parts, body), status), None);
    }

    let bytes = match read_body(body, rule.max_object_size, started, timeout).await {
        Ok(BodyRead::Complete(bytes)) => bytes,
        Ok(BodyRead::TooLarge { read, rest }) => {
            let body = if request.head_only() {
                ProxyBody::Empty
            } else {
                ProxyBody::Spilled { read, rest }
            };
            status.phase = status.phase.filled(Fill::NotStored(Reason::TooLarge));
            return ((Response::from_parts(parts, body), status), None);
        }
        Err(e) => {
            tracing::warn!(key = %request.key, error = %e, "origin body failed");
            status.phase = status.phase.filled(Fill::NotStored(Reason::OriginError));
            return ((error_response(&e), status), None);
        }
    };
    let entry = build_entry(
        request,
        (parts.status, parts.headers, bytes),
        &directives,
        times,
        generation,
    );
    let tags = request.tags.iter().cloned().chain(origin_tags).collect();
    store_and_answer(stages, request, entry, tags, status).await
}

/// The response's directives as this route reads them: routes that follow the origin obey
/// the most specific field addressed to the proxy (`Cachalot-Cache-Control`,
/// `Surrogate-Control`, `CDN-Cache-Control`, then `Cache-Control`); fixed-TTL routes read
/// them only for what must never be stored.
fn response_directives(rule: &crate::policy::route::CacheRule, headers: &HeaderMap) -> Directives {
    if rule.ttl.is_origin() {
        Directives::for_proxy(headers)
    } else {
        Directives::for_fixed_ttl(headers)
    }
}

/// When the origin failed and the stale entry's `stale-if-error` window is open: the stale
/// entry, for this client and the flight's waiters.
fn stale_on_error(
    request: &Cacheable,
    stale: Option<&Arc<Entry>>,
    status: &mut Outcome,
) -> Option<Fetched> {
    let entry = stale.filter(|e| e.within_stale_if_error(now_ms()))?;
    let mut served = status.clone();
    served.phase = Phase::Stale(Reason::StaleIfError);
    let response = from_entry(entry, request, &mut served);
    Some(((response, served), Some((Arc::clone(entry), false))))
}

/// Stores a fetched (or revalidated) entry, when it is worth storing, and answers with it.
async fn store_and_answer(
    stages: &Stages,
    request: &Cacheable,
    built: Built,
    tags: Vec<String>,
    mut status: Outcome,
) -> Fetched {
    let Built {
        entry,
        keep,
        fetch_started_ms,
    } = built;
    let Some(keep) = keep else {
        // Neither fresh nor revalidatable: served once, not stored.
        status.phase = status.phase.filled(Fill::NotStored(Reason::NoFreshness));
        let response = from_entry(&entry, request, &mut status);
        return ((response, status), None);
    };
    let entry = Arc::new(entry);
    // A response that varies lives under its variant key, and under the URL's key as the
    // latest (so the next lookup that matches it needs one round trip).
    let mut keys = vec![request.key.clone()];
    if !entry.selecting.is_empty() {
        keys.insert(0, vary::variant_key(&request.key, &entry.selecting));
    }
    let how = Placement {
        keep,
        tags: &tags,
        fetch_started_ms,
        l1_epoch: request.l1_epoch,
        max_variants: request.rule().max_variants,
    };
    let mut stored = true;
    for key in &keys {
        let put = stages.store.put(key, &entry, &how).await;
        match put {
            Ok(Put::Stored) => {}
            // One of its tags was purged while the fetch ran: this response may predate the
            // purge, so it is neither stored nor shared with waiters.
            Ok(Put::Purged) => {
                status.phase = status
                    .phase
                    .filled(Fill::NotStored(Reason::InvalidatedDuringFill));
                let response = from_entry(&entry, request, &mut status);
                return ((response, status), None);
            }
            // The base already has `max_variants` live variants: served, not stored, and
            // not shared with waiters (each asks on its own, as for any unstored response).
            Ok(Put::TooManyVariants) => {
                metrics::counter!("cachalot_variants_refused_total", "route" => request.metric_route())
                    .increment(1);
                status.phase = status
                    .phase
                    .filled(Fill::NotStored(Reason::TooManyVariants));
                let response = from_entry(&entry, request, &mut status);
                return ((response, status), None);
            }
            Err(_) => {
                stored = false;
                break;
            }
        }
    }
    status.phase = status.phase.filled(if stored {
        Fill::Stored(None)
    } else {
        Fill::NotStored(Reason::RedisUnavailable)
    });
    let response = from_entry(&entry, request, &mut status);
    ((response, status), Some((entry, stored)))
}

/// When the fetch was sent and its response head arrived (RFC 9111 §4.2.3's
/// request_time and response_time).
#[derive(Clone, Copy)]
struct Times {
    request_ms: u64,
    response_ms: u64,
}

/// An entry, and how long Redis keeps it: `None` when it is not worth storing.
struct Built {
    entry: Entry,
    keep: Option<Duration>,
    fetch_started_ms: u64,
}

/// The entry for a response, with its freshness from the route (and for `ttl = "origin"`,
/// the response's own headers). Not worth storing: no freshness, no validator to revalidate
/// it with, no stale window to serve it in.
fn build_entry(
    request: &Cacheable,
    (status, headers, body): (StatusCode, HeaderMap, Bytes),
    directives: &Directives,
    times: Times,
    generation: u64,
) -> Built {
    let rule = request.rule();
    let Times {
        request_ms,
        response_ms,
    } = times;
    let mut headers = headers;
    let initial_age = freshness::corrected_initial_age(&headers, request_ms, response_ms);
    // The stored copy's age is recomputed on every use (see `Entry::age`).
    headers.remove(header::AGE);
    let lifetime = rule.ttl.lifetime(&headers, directives, response_ms);
    let fresh_until_ms = match (&rule.ttl, lifetime) {
        // The policy's TTL counts from now, whatever the origin's Age says.
        (Ttl::Fixed { .. }, Some(lifetime)) => response_ms + lifetime.as_millis() as u64,
        (_, Some(lifetime)) if !directives.no_cache => (response_ms + lifetime.as_millis() as u64)
            .saturating_sub(initial_age.as_millis() as u64),
        _ => response_ms,
    };
    let forbids_stale = directives.forbids_stale();
    let window = |route: Duration, directive: Option<u64>| {
        if forbids_stale {
            return 0;
        }
        let directive = Duration::from_secs(directive.unwrap_or(0));
        route.max(directive).as_millis() as u64
    };
    let selecting = vary::names(&headers, &rule.vary)
        .map(|names| {
            vary::selecting(&names, &request.head.headers, |name: &str| {
                reaches_origin(rule, name)
            })
        })
        .unwrap_or_default();
    let entry = Entry {
        status,
        headers,
        body,
        stored_at_ms: response_ms,
        fresh_until_ms,
        initial_age_ms: initial_age.as_millis() as u64,
        generation,
        stale_while_revalidate_ms: window(
            rule.stale_while_revalidate,
            directives.stale_while_revalidate,
        ),
        stale_if_error_ms: window(rule.stale_if_error, directives.stale_if_error),
        forbids_stale,
        fetch_ms: response_ms.saturating_sub(request_ms),
        selecting,
    };
    let fresh_for = Duration::from_millis(fresh_until_ms.saturating_sub(response_ms));
    let stale_windows =
        Duration::from_millis(entry.stale_while_revalidate_ms.max(entry.stale_if_error_ms));
    let after = freshness::keep_after_stale(
        stale_windows,
        lifetime.unwrap_or_default(),
        entry.has_validator(),
    );
    let worth_storing = !(fresh_for.is_zero() && after.is_zero());
    Built {
        entry,
        keep: worth_storing.then_some(fresh_for + after),
        fetch_started_ms: request_ms,
    }
}

/// RFC 9111 §3.2: a 304's header fields replace the stored ones of the same name, except
/// those that describe the stored body itself (the 304 has none): its length, encoding,
/// range, digest and the validator it was selected by.
fn updated_headers(stored: &HeaderMap, fresh: HeaderMap) -> HeaderMap {
    const KEPT: [&str; 5] = [
        "content-length",
        "content-encoding",
        "content-range",
        "content-md5",
        "etag",
    ];
    let mut headers = stored.clone();
    let mut current = None;
    for (name, value) in fresh {
        if let Some(name) = name {
            current = (!KEPT.contains(&name.as_str())).then_some(name);
            if let Some(name) = &current {
                headers.remove(name);
            }
        }
        if let Some(name) = &current {
            headers.append(name.clone(), value);
        }
    }
    headers
}

/// Validators and ranges the fill removes from the client's request (see `fetch`).
const CONDITIONALS: [HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Forwards a cacheable request without the cache (Redis down, or no fill to wait for).
pub(crate) async fn fetch_uncached(stages: &Stages, request: &Cacheable, reason: Reason) -> Answer {
    let phase = if reason == Reason::RedisUnavailable {
        Phase::Bypass(reason)
    } else {
        Phase::Miss(Fill::NotStored(reason))
    };
    let mut status = request.status(phase);
    match stages
        .origin
        .send(
            origin_request(stages, request, request.head.method.clone()),
            status.metric_route(),
            stages.policy.origin_timeout(Some(&request.route)),
        )
        .await
    {
        Ok(response) => {
            status.fwd_status = Some(response.status().as_u16());
            let (mut parts, body) = response.into_parts();
            origin::strip_hop_by_hop(&mut parts.headers);
            tags::from_response(
                &mut parts.headers,
                stages.policy.invalidation.forward_tag_headers,
            );
            (Response::from_parts(parts, ProxyBody::Stream(body)), status)
        }
        Err(e) => {
            tracing::warn!(key = %request.key, error = %e, "origin request failed");
            (error_response(&e), status)
        }
    }
}

/// Headers the proxy itself sets on every origin request (see `origin::request_head`).
const SET_BY_PROXY: [&str; 2] = ["x-forwarded-for", "x-forwarded-proto"];

/// The origin request for a cacheable route: the route's query rule applied, and only the
/// client headers [`reaches_origin`] allows (so nothing the key does not hold can shape
/// what is stored for everyone: no cache poisoning by an unkeyed header).
fn origin_request(stages: &Stages, request: &Cacheable, method: Method) -> Request<OriginBody> {
    let mut builder = origin::request_head(
        &stages.origin,
        &request.head,
        &request.origin_target(),
        request.client.ip(),
    )
    .method(method);
    if let Some(headers) = builder.headers_mut() {
        let rule = request.rule();
        let dropped: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                !(reaches_origin(rule, name.as_str()) || SET_BY_PROXY.contains(&name.as_str()))
            })
            .cloned()
            .collect();
        for name in dropped {
            headers.remove(name);
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

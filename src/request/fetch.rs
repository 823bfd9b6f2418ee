//! One origin fetch for a cache fill, and what follows from it: the origin request a cached
//! route may send (only headers the key holds), a conditional request when a stale entry has
//! a validator, stale-if-error when the origin fails, storing the result under its keys, and
//! forwarding without the cache when no fill is possible. Apart from `fill.rs`, which owns
//! the lock protocol and decides who fetches.
use crate::http::directives::{self, Directives};
use crate::http::freshness;
use crate::http::hop_by_hop;
use crate::http::tags;
use crate::http::vary;
use crate::net::body::ProxyBody;
use crate::origin::{self, OriginBody, OriginError};
use crate::phase::{Fill, Outcome, Phase, Reason};
use crate::request::cacheable::{Cacheable, reaches_origin};
use crate::request::compress::{StoredBody, storage_form};
use crate::request::context::{Answer, Stages};
use crate::request::respond::{error_response, from_entry};
use crate::request::storable;
use crate::store::entry::{Entry, now_ms};
use crate::store::{Placement, Put};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::request::build_entry::{Built, Times, build_entry, updated_headers};

/// A fetch's answer, and the entry it produced with whether Redis took it.
type Fetched = (Answer, Option<(Arc<Entry>, bool)>);

/// One origin fetch for a fill; returns the entry and whether Redis took it, when storable.
/// With a `stale` entry that has a validator the fetch is conditional, and a 304 refreshes
/// the stored entry without its body crossing the network again (RFC 9111 §4.3.4).
pub(crate) async fn fetch(
    stages: &Stages,
    request: &Cacheable,
    generation: u64,
    stale: Option<&Arc<Entry>>,
) -> Fetched {
    let rule = request.rule();
    let started = Instant::now();
    let request_ms = now_ms();
    let mut status = request.status(Phase::fill(stale.is_some()));
    let mut outgoing = fill_request(stages, request);
    let headers = outgoing.headers_mut();
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
    hop_by_hop::strip_hop_by_hop(&mut parts.headers);
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
        let body = StoredBody {
            bytes: entry.body.clone(),
            coding: entry.coding,
            coded_by_origin: entry.coded_by_origin,
        };
        let refreshed = build_entry(
            request,
            (entry.status, headers, body),
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
    let compression = &stages.policy.compression;
    let body = match storage_form(&mut parts.headers, bytes, rule, compression).await {
        Ok(body) => body,
        // The origin's own coding does not decode within the size limit: this client gets
        // the body as it came; nothing is stored.
        Err((reason, bytes)) => {
            let body = if request.head_only() {
                ProxyBody::Empty
            } else {
                ProxyBody::full(bytes)
            };
            status.phase = status.phase.filled(Fill::NotStored(reason));
            return ((Response::from_parts(parts, body), status), None);
        }
    };
    let entry = build_entry(
        request,
        (parts.status, parts.headers, body),
        &directives,
        times,
        generation,
    );
    let tags = request.tags.iter().cloned().chain(origin_tags).collect();
    store_and_answer(stages, request, entry, tags, status).await
}

/// The request a fill sends for this client's request, before any validator of a stale
/// entry is added. Stored bodies are served to every client, so it asks for one that every
/// client can read, whole and unconditional: the client's own validators and ranges are
/// answered from the stored entry, not passed on to shape what everyone gets. Shadow
/// verification (`verify`) sends exactly this, so it sees what a fill would have stored.
pub(crate) fn fill_request(stages: &Stages, request: &Cacheable) -> Request<OriginBody> {
    let mut outgoing = origin_request(stages, request, Method::GET);
    let headers = outgoing.headers_mut();
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    for name in CONDITIONALS {
        headers.remove(name);
    }
    if request.rule().ttl.is_origin() {
        headers.append(
            directives::SURROGATE_CAPABILITY.clone(),
            HeaderValue::from_static("cachalot=\"Surrogate/1.0\""),
        );
    }
    outgoing
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
        route: &request.route.label,
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
            hop_by_hop::strip_hop_by_hop(&mut parts.headers);
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
pub(crate) fn origin_request(
    stages: &Stages,
    request: &Cacheable,
    method: Method,
) -> Request<OriginBody> {
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

pub(crate) enum BodyRead {
    Complete(Bytes),
    /// Over the size limit: what was read so far, and the rest of the stream.
    TooLarge {
        read: VecDeque<Bytes>,
        rest: Incoming,
    },
}

/// Reads a body to store (or to compare, see `verify`), within the origin timeout counted
/// from `started`.
pub(crate) async fn read_body(
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

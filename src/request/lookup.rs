//! The cache's side of a GET or HEAD: read the key (and its variant, when the stored
//! response varies), decide per RFC 9111 §4.2 and §5.2.1 whether the entry may answer
//! (fresh, served stale, or revalidated), and on a miss join or lead the key's flight.
//! Apart from `proxy.rs`, which routes the request here, so that this file reads as the
//! reuse rules alone.

use crate::http::directives::Directives;
use crate::http::vary;
use crate::net::body::ProxyBody;
use crate::phase::{Fill, Outcome, Phase, Reason};
use crate::request::cacheable::Cacheable;
use crate::request::collapse::{self, Join, Landing};
use crate::request::context::{Answer, Stages};
use crate::request::detach::finishing;
use crate::request::fetch;
use crate::request::respond::{from_entry, plain};
use crate::request::verify;
use crate::store::Lookup;
use crate::store::entry::{Entry, now_ms};
use http::header;
use http::{HeaderMap, Response, StatusCode};
use std::sync::Arc;

use crate::request::fill;

/// Looks the key up in Redis: a fresh entry is a hit; a stale one is served while it is
/// refreshed, or revalidated; anything else a miss.
pub(crate) async fn lookup(stages: &Stages, mut request: Cacheable) -> Answer {
    if !stages.store.is_healthy() {
        return Box::pin(fetch::fetch_uncached(
            stages,
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
        return Box::pin(fetch::fetch_uncached(
            stages,
            &request,
            Reason::ClientNoStore,
        ))
        .await;
    }
    let use_l1 = request.rule().l1;
    let lookup = match stages.store.get(&request.key, use_l1).await {
        Ok(lookup) => lookup,
        Err(_) => {
            return Box::pin(fetch::fetch_uncached(
                stages,
                &request,
                Reason::RedisUnavailable,
            ))
            .await;
        }
    };
    let Ok(lookup) = select_variant(stages, &mut request, lookup).await else {
        return Box::pin(fetch::fetch_uncached(
            stages,
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
        let absent = lookup.absent;
        return Box::pin(miss(stages, request, lookup.generation, None, absent)).await;
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
            // The answer is decided: a verification, if this hit is one, runs beside it.
            verify::sample(stages, &request, &entry);
            if refresh {
                fill::refresh(stages, request, lookup.generation, entry);
            }
            (response, status)
        }
        Reuse::Stale(reason) => {
            let mut status = request.status(Phase::Stale(reason));
            let response = from_entry(&entry, &request, &mut status);
            if reason == Reason::StaleWhileRevalidate {
                fill::refresh(stages, request, lookup.generation, entry);
            }
            (response, status)
        }
        Reuse::Revalidate if client.only_if_cached => only_if_cached(&request),
        Reuse::Revalidate => {
            Box::pin(miss(stages, request, lookup.generation, Some(entry), false)).await
        }
    }
}

/// When the URL's entry varies on request headers and does not fit this request, reads
/// the variant this request's values name instead (a second round trip, only then).
async fn select_variant(
    stages: &Stages,
    request: &mut Cacheable,
    lookup: Lookup,
) -> Result<Lookup, crate::store::Unavailable> {
    let Some(entry) = &lookup.entry else {
        return Ok(lookup);
    };
    if vary::matches(&entry.selecting, &request.head.headers, request.forwarded()) {
        return Ok(lookup);
    }
    let selecting = vary::selecting(
        &vary::stored_names(&entry.selecting),
        &request.head.headers,
        request.forwarded(),
    );
    let key = vary::variant_key(&request.key, &selecting);
    let mut variant = stages.store.get(&key, request.rule().l1).await?;
    variant.entry = variant
        .entry
        .filter(|e| vary::matches(&e.selecting, &request.head.headers, request.forwarded()));
    request.variant = Some(key);
    Ok(variant)
}

/// A miss joins the key's flight in this process, or leads one. `stale` is the stored
/// entry that was too old to serve, if any; `absent`, whether the lookup found no value at
/// all under the key.
async fn miss(
    stages: &Stages,
    mut request: Cacheable,
    generation: u64,
    stale: Option<Arc<Entry>>,
    absent: bool,
) -> Answer {
    match stages.flights.join(request.fill_key()) {
        Join::Lead(flight) => {
            // Led in this request's task, so the lock is asked for at once; a client
            // that hangs up hands the fill to a task of its own, since the flight's
            // waiters depend on it.
            let stages = stages.clone();
            let request = Arc::new(request);
            let fill = finishing({
                let request = Arc::clone(&request);
                async move { fill::lead(&stages, flight, &request, generation, stale, absent).await }
            });
            match fill.await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::error!(error = %e, "fill failed");
                    let status = request.status(Phase::Miss(Fill::NotStored(Reason::OriginError)));
                    (plain(StatusCode::BAD_GATEWAY, "fill failed\n"), status)
                }
            }
        }
        Join::Wait(receiver) => {
            metrics::counter!("cachalot_collapse_waiters_total", "scope" => "process").increment(1);
            // The flight's leader answers within the lock wait plus one origin fetch;
            // asking the origin before that would be the stampede collapsing prevents.
            let policy = &stages.policy;
            let wait = policy.collapse.wait + policy.origin_timeout(Some(&request.route));
            match tokio::time::timeout(wait, collapse::landing(receiver)).await {
                Ok(Landing::Stored(entry))
                    if entry.generation >= generation
                        && vary::matches(
                            &entry.selecting,
                            &request.head.headers,
                            request.forwarded(),
                        ) =>
                {
                    let mut status = request.status(Phase::Collapsed);
                    (from_entry(&entry, &request, &mut status), status)
                }
                // The flight started before an invalidation this request already saw:
                // its response is older than what the request may be served. Fly again;
                // the key now holds that older entry, which the lock must not mistake for
                // a fill this request can use.
                Ok(Landing::Stored(entry)) if entry.generation < generation => {
                    Box::pin(miss(stages, request, generation, stale, false)).await
                }
                // The response varies, and not for this request's header values: fly
                // again for this request's variant (once; its own flight is exact).
                Ok(Landing::Stored(entry)) if request.variant.is_none() => {
                    let selecting = vary::selecting(
                        &vary::stored_names(&entry.selecting),
                        &request.head.headers,
                        request.forwarded(),
                    );
                    request.variant = Some(vary::variant_key(&request.key, &selecting));
                    Box::pin(miss(stages, request, generation, stale, absent)).await
                }
                // The response waited for may not be shared (Set-Cookie, an error):
                // each waiter asks the origin for its own.
                Ok(_) => fetch::fetch_uncached(stages, &request, Reason::NotShared).await,
                Err(_) => {
                    metrics::counter!("cachalot_collapse_timeouts_total").increment(1);
                    fetch::fetch_uncached(stages, &request, Reason::CollapseTimeout).await
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

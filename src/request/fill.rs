//! Filling a missing entry: one origin request per key across every instance.
//!
//! The process's flight leader takes the Redis lock (`SET NX PX` with a random token, in a
//! script that refuses it when the entry the lookup missed has been stored since: a lookup
//! just before another leader's store must not lead a second fill just after its release).
//! The winner fetches from the origin, stores the entry, publishes a fill notice and
//! releases the lock by compare-and-delete. A loser waits for the notice (polling with back-off as
//! the fallback), reads the entry and hands it to its own process's waiters. If the winner
//! fails, or `collapse.wait` runs out, the loser asks the origin itself: a client is never
//! left without an answer because another instance died.

use crate::http::vary;
use crate::phase::{Phase, Reason};
use crate::request::cacheable::Cacheable;
use crate::request::collapse::{Flight, Join, Landing};
use crate::request::context::{Answer, Stages};
use crate::request::respond::from_entry;
use crate::store::entry::{Entry, now_ms};
use crate::store::{FillNotice, Locked};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::request::fetch::{fetch, fetch_uncached};

/// First and longest pause between polls while waiting for another instance's fill.
const POLL_START: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_millis(400);

/// Leads the flight for a key: lock, then fetch and store, or wait for the lock holder.
/// `generation` is the key's invalidation generation seen by the lookup that missed;
/// `stale` the stored response it found too old, if any (revalidated, or served if the
/// origin fails and its `stale-if-error` window allows); `absent`, whether the lookup found
/// no value at all under the key (then an entry stored since is read instead of fetched).
pub(crate) async fn lead(
    stages: &Stages,
    flight: Flight,
    request: &Cacheable,
    generation: u64,
    stale: Option<Arc<Entry>>,
    absent: bool,
) -> Answer {
    let token = lock_token();
    let lock_ttl = stages.policy.collapse.lock_ttl;
    match stages
        .store
        .try_lock(request.fill_key(), &token, lock_ttl, absent)
        .await
    {
        Ok(Locked::Ours) => {
            let (answer, landing) =
                fetch_and_store(stages, request, Some(&token), generation, stale.as_ref()).await;
            flight.land(landing);
            answer
        }
        // Another leader's fill, in flight or stored since the lookup: read it (the
        // holder's wait starts with a read).
        Ok(Locked::Held | Locked::Stored) => {
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
            .try_lock(request.fill_key(), &token, lock_ttl, false)
            .await
        {
            Ok(Locked::Ours) => {
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
            && vary::matches(&entry.selecting, &request.head.headers, request.forwarded())
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
            && let Ok(Locked::Ours) = stages
                .store
                .try_lock(
                    request.fill_key(),
                    &token,
                    stages.policy.collapse.lock_ttl,
                    false,
                )
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

/// A random token that only this leader knows, so only it can release its lock.
fn lock_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

//! Redis: entries, collapse locks and fill notices. Every Redis command the proxy sends while
//! serving is in this folder (`connect` only builds the clients and checks a
//! connection), so the rest of the code never sees the client library.
//!
//! Redis is a cache, never a dependency of correctness: every command has a timeout and fails
//! fast while disconnected, and one failure marks Redis as down so that later requests skip it
//! at once instead of each waiting for the timeout. A background probe marks it up again,
//! but only after the invalidations queued while it was down have been applied.
//!
//! Key names are `keyspace`'s: an entry, its variants, its lock and its generation share
//! a Redis Cluster hash tag, so that every multi-key step is single-slot.
//!
//! **Invalidation is a generation bump.** A lookup reads the generation and the entry in one
//! `MGET`; an entry counts only if it was fetched under the current generation. Invalidating
//! a base B (a key without its `?query` variant) increments its generation (and deletes B's entry to free memory), which drops every
//! variant of B at once, and makes a fill that started before the invalidation unable to
//! store a value anyone will see: it carries the old generation.

pub mod batch;
mod command;
pub mod connect;
mod entries;
pub mod entry;
mod invalidation;
pub mod keyspace;
pub mod l1;
mod locks;
pub mod memory;
pub mod message;
mod scan;
mod subscription;

pub use entries::{Lookup, Placement, Put};
pub use invalidation::Applied;
pub use locks::{FillNotice, Locked};

use crate::policy::RedisSettings;
use crate::store::batch::Batcher;
use crate::store::entry::now_ms;
use crate::store::keyspace::Keyspace;
use crate::store::l1::L1;
use crate::store::message::Invalidation;
use command::{Command, Op, Timings, builder, pool_size};
use entries::ADMIT_VARIANT_LUA;
use fred::prelude::*;
use fred::types::scripts::Script;
use locks::{LOCK_LUA, UNLOCK_LUA};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a down Redis is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Invalidations kept while Redis is down; beyond this, every entry stored before Redis
/// came back is distrusted instead (the cache refills on demand).
const MAX_PENDING: usize = 10_000;

/// Redis could not be used for this request; the caller goes to the origin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct Unavailable(pub String);

/// How a command failed: the connection (Redis counts as down), or a reply about one key.
enum Failure {
    Outage(Unavailable),
    Reply(String),
}

impl From<Failure> for Unavailable {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Outage(e) => e,
            Failure::Reply(reason) => Unavailable(reason),
        }
    }
}

/// Error replies that concern the command or its key (WRONGTYPE, `ERR value is not an
/// integer`), as opposed to failures of the connection or of the server as a whole. Those
/// count as an outage: Redis is skipped, and invalidations are queued until it recovers.
fn is_reply_error(error: &Error) -> bool {
    match error.kind() {
        ErrorKind::InvalidArgument
        | ErrorKind::InvalidCommand
        | ErrorKind::Parse
        | ErrorKind::NotFound => true,
        // fred files every reply it has no kind for (`ERR ...`, `OOM ...`) here.
        ErrorKind::Unknown => !SERVER_STATE_ERRORS
            .iter()
            .any(|prefix| error.details().trim_start().starts_with(prefix)),
        _ => false,
    }
}

/// Replies that say the server cannot serve now (loading, read-only replica after a
/// failover, out of memory, busy script), not that this command was wrong.
const SERVER_STATE_ERRORS: [&str; 8] = [
    "LOADING",
    "READONLY",
    "OOM",
    "BUSY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
];

/// The proxy's Redis.
pub struct Store {
    /// Lookups: the hit path's one command per request, pipelined over a few connections.
    pool: Pool,
    /// Sends the lookups, batched when they arrive together (see `batch`).
    lookups: Batcher,
    /// Everything else (locks, fills, notices, invalidations) on its own connection, so a
    /// leader's lock never queues behind a burst of lookups.
    control: Client,
    settings: RedisSettings,
    keys: Keyspace,
    options: Options,
    healthy: AtomicBool,
    lock: Script,
    unlock: Script,
    admit_variant: Script,
    /// Entries stored before this instant (ms) do not count: set when this process may
    /// have missed invalidation messages.
    valid_after_ms: AtomicU64,
    /// How long generation counters live: longer than any entry stored under an older one.
    generation_ttl_ms: AtomicU64,
    /// Invalidations that could not reach Redis yet.
    pending: Mutex<Vec<Invalidation>>,
    /// The in-process tier, when the policy sizes one.
    l1: Option<L1>,
    /// Whether the pub/sub subscription is up (the in-process tier is trusted only then).
    feed_up: AtomicBool,
    /// `cachalot_redis_command_duration_seconds`, one handle per operation.
    timings: Timings,
    /// Bytes of entries stored per route (see `memory`).
    written: memory::Written,
}

impl Store {
    /// Starts connecting. Never fails because Redis is down: the proxy must start and serve
    /// from the origin without it. Fails only on a URL the client cannot use.
    pub async fn connect(
        settings: &RedisSettings,
        l1_bytes: Option<u64>,
    ) -> Result<Arc<Self>, Unavailable> {
        let pool = builder(settings)?
            .build_pool(pool_size())
            .map_err(|e| Unavailable(e.to_string()))?;
        let control = builder(settings)?
            .build()
            .map_err(|e| Unavailable(e.to_string()))?;
        // Subscribed before connecting, so the first failure's reason can be reported.
        let mut errors = control.error_rx();
        pool.connect();
        control.connect();
        let connected = tokio::time::timeout(settings.timeout, async {
            pool.wait_for_connect().await?;
            control.wait_for_connect().await
        })
        .await;
        let options = Options {
            timeout: Some(settings.timeout),
            fail_fast: true,
            max_attempts: Some(1),
            ..Default::default()
        };
        let store = Arc::new(Self {
            lookups: Batcher::new(pool.clone(), options.clone()),
            pool,
            control,
            settings: settings.clone(),
            keys: Keyspace::new(&settings.prefix),
            options,
            healthy: AtomicBool::new(matches!(connected, Ok(Ok(())))),
            lock: Script::from_lua(LOCK_LUA),
            unlock: Script::from_lua(UNLOCK_LUA),
            admit_variant: Script::from_lua(ADMIT_VARIANT_LUA),
            valid_after_ms: AtomicU64::new(0),
            generation_ttl_ms: AtomicU64::new(Duration::from_secs(24 * 3600).as_millis() as u64),
            pending: Mutex::new(Vec::new()),
            l1: l1_bytes.map(L1::new),
            feed_up: AtomicBool::new(false),
            timings: Timings::default(),
            written: memory::Written::default(),
        });
        metrics::gauge!("cachalot_redis_up").set(if store.is_healthy() { 1.0 } else { 0.0 });
        if !store.is_healthy() {
            let target = connect::config(settings).map_or_else(
                |_| crate::policy::redact(&settings.url),
                |c| connect::target(&c),
            );
            let reason = match (connected, errors.try_recv()) {
                (Ok(Err(e)), _) | (_, Ok((e, _))) => connect::explain(&e, &target, settings),
                _ => connect::no_answer(&target, settings),
            };
            tracing::warn!(%reason, "redis is not reachable; serving from the origin until it is");
        }
        tokio::spawn(probe(Arc::downgrade(&store)));
        Ok(store)
    }

    /// The key prefix (`<prefix>:`), for messages and tests.
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// Whether Redis answered recently. When false, requests skip it.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Runs one command if Redis is healthy, recording Redis's health from its result.
    async fn run<T>(&self, op: Op, command: Command<'_, T>) -> Result<T, Failure> {
        if !self.is_healthy() {
            return Err(Failure::Outage(Unavailable(
                "marked down after a failed command".into(),
            )));
        }
        self.exec(op, command).await
    }

    /// Runs one command whatever the health flag says. Only failures of the connection mark
    /// Redis down; an error reply about one key (WRONGTYPE) is that key's problem, not an
    /// outage for every request.
    async fn exec<T>(&self, op: Op, command: Command<'_, T>) -> Result<T, Failure> {
        let started = std::time::Instant::now();
        // The client's own timeout bounds each command it sends, but an operation may be
        // several (EVALSHA, then SCRIPT LOAD and EVALSHA again): bound those here too.
        let result = if op.one_timed_command() {
            Ok(command.await)
        } else {
            tokio::time::timeout(self.settings.timeout, command).await
        };
        self.timings.of(op).record(started.elapsed().as_secs_f64());
        let failure = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) if is_reply_error(&e) => Failure::Reply(e.to_string()),
            Ok(Err(e)) => Failure::Outage(self.mark_down(e.to_string())),
            Err(_) => Failure::Outage(
                self.mark_down(format!("no answer within {:?}", self.settings.timeout)),
            ),
        };
        let kind = match failure {
            Failure::Reply(_) => "reply",
            Failure::Outage(_) => "outage",
        };
        metrics::counter!("cachalot_redis_errors_total", "kind" => kind).increment(1);
        Err(failure)
    }

    fn mark_down(&self, reason: String) -> Unavailable {
        if let Some(l1) = &self.l1 {
            l1.distrust();
        }
        if self.healthy.swap(false, Ordering::Relaxed) {
            metrics::gauge!("cachalot_redis_up").set(0.0);
            tracing::error!(%reason, "redis unavailable; requests go to the origin until it answers again");
        }
        Unavailable(reason)
    }

    /// Asks Redis whether it answers (for `/health/cache`). Marking it up again is the
    /// probe's job, after queued invalidations are applied.
    pub async fn ping(&self) -> Result<(), Unavailable> {
        let client = self.pool.next().with_options(&self.options);
        self.exec(Op::Ping, Box::pin(client.ping::<String>(None)))
            .await
            .map(drop)
            .map_err(Unavailable::from)
    }

    /// Brings a down Redis back into use: when it answers, apply what was queued while it
    /// was down, then mark it up. Until then no request reads an entry it might have dropped.
    async fn recover(&self) {
        if self.ping().await.is_err() {
            return;
        }
        let (queued, overflowed) = {
            let mut pending = self.pending.lock().expect("pending invalidations poisoned");
            let overflowed = pending.len() >= MAX_PENDING;
            (std::mem::take(&mut *pending), overflowed)
        };
        for (i, invalidation) in queued.iter().enumerate() {
            match self.apply(invalidation).await {
                Ok(_) => {}
                Err(Failure::Reply(e)) => {
                    tracing::error!(error = %e, ?invalidation, "a queued invalidation failed")
                }
                Err(Failure::Outage(_)) => {
                    let mut pending = self.pending.lock().expect("pending invalidations poisoned");
                    let rest = queued[i..].iter().cloned();
                    pending.splice(0..0, rest);
                    return;
                }
            }
        }
        if overflowed {
            tracing::warn!(
                "too many invalidations queued while redis was down; distrusting every entry stored before now"
            );
            self.distrust_before(now_ms());
        }
        if !queued.is_empty() {
            tracing::info!(
                count = queued.len(),
                "applied the invalidations queued while redis was down"
            );
        }
        self.mark_up();
    }

    fn mark_up(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            metrics::gauge!("cachalot_redis_up").set(1.0);
            tracing::info!("redis is back; caching resumes");
        }
        self.trust_l1();
    }

    /// Entries stored before `instant_ms` no longer count in this process: it may have
    /// missed invalidations published before then.
    pub fn distrust_before(&self, instant_ms: u64) {
        self.valid_after_ms.fetch_max(instant_ms, Ordering::Relaxed);
    }

    /// Generation counters must outlive any entry stored under an older generation; the
    /// server sets this from the longest entry lifetime in the policy. It only grows:
    /// entries stored under an earlier policy with longer TTLs are still around.
    pub fn set_generation_ttl(&self, ttl: Duration) {
        self.generation_ttl_ms
            .fetch_max(ttl.as_millis() as u64, Ordering::Relaxed);
    }
}

/// A generation counter's value; absent or unreadable counts as 0.
fn parse_generation(raw: Option<&[u8]>) -> u64 {
    raw.and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Probes Redis while it is marked down; stops when the store is dropped.
async fn probe(store: std::sync::Weak<Store>) {
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(store) = store.upgrade() else { return };
        if !store.is_healthy() {
            store.recover().await;
        }
    }
}

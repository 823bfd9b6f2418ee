//! Redis: entries, collapse locks and fill notices. Every Redis command the proxy sends while
//! serving is in this module (`redis_connect` only builds the clients and checks a
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
pub mod connect;
pub mod entry;
pub mod keyspace;
pub mod l1;
pub mod message;

use crate::policy::RedisSettings;
use crate::store::batch::Batcher;
use crate::store::entry::{DecodeError, Entry, now_ms};
use crate::store::keyspace::Keyspace;
use crate::store::l1::L1;
use crate::store::message::{Invalidation, SigningKey, base_key};
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::ExpireOptions;
use fred::types::scripts::Script;
use fred::types::sorted_sets::Ordering as ZOrdering;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Releases a lock only if it still holds our token (a lock that expired and was taken by
/// another leader must not be deleted by us).
const UNLOCK_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Admits a variant of a base key if it is already counted or the base has room: a sorted
/// set per base of variant -> expiry (ms), pruned of expired variants before counting, so it
/// counts what Redis holds now. KEYS[1] the set; ARGV: variant, max, keep ms, now ms.
const ADMIT_VARIANT_LUA: &str = r#"
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if KEYS[2] then
  redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[3])
end
return 1
"#;

/// How often a down Redis is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Keys scanned per SCAN call in a prefix purge.
const SCAN_BATCH: u32 = 500;
/// Invalidations kept while Redis is down; beyond this, every entry stored before Redis
/// came back is distrusted instead (the cache refills on demand).
const MAX_PENDING: usize = 10_000;

/// How [`Store::put`] stores an entry.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    /// How long Redis keeps it.
    pub keep: Duration,
    /// The tags it is recorded under.
    pub tags: &'a [String],
    /// When its origin fetch started (a tag purged since makes it unstorable).
    pub fetch_started_ms: u64,
    /// For routes in the in-process tier: the tier's invalidation count before the lookup.
    pub l1_epoch: Option<u64>,
    /// The route's `max_variants`.
    pub max_variants: u64,
}

/// What became of an entry handed to [`Store::put`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// One of its tags was purged after its fetch started: it may predate the purge.
    Purged,
    /// Its base already holds `max_variants` live variants.
    TooManyVariants,
}

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

/// What a leader tells waiting instances about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FillNotice {
    /// The entry is in Redis: read it.
    Stored(String),
    /// The leader got nothing storable: stop waiting and ask the origin.
    Failed(String),
}

impl FillNotice {
    fn encode(&self) -> String {
        match self {
            FillNotice::Stored(key) => format!("stored {key}"),
            FillNotice::Failed(key) => format!("failed {key}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        match text.split_once(' ')? {
            ("stored", key) => Some(FillNotice::Stored(key.to_string())),
            ("failed", key) => Some(FillNotice::Failed(key.to_string())),
            _ => None,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            FillNotice::Stored(key) | FillNotice::Failed(key) => key,
        }
    }
}

/// What a lookup found: the entry, if one counts, and the generation to fill under.
#[derive(Debug)]
pub struct Lookup {
    pub entry: Option<Arc<Entry>>,
    /// The key's invalidation generation now. A fill stores its entry with this value, so
    /// an invalidation that lands while the fill runs makes the fill's entry not count.
    pub generation: u64,
    /// Whether the entry came from the in-process tier rather than Redis.
    pub from_l1: bool,
    /// The in-process tier's invalidation count before this lookup: a fill passes it back
    /// to [`Store::put`], so that an invalidation during the fill keeps it out of the tier.
    pub l1_epoch: u64,
}

/// What an invalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied; this many bases (keys with all their variants) were invalidated.
    Dropped(usize),
    /// Redis is unreachable: queued, applied before the cache is used again.
    Queued,
}

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
            unlock: Script::from_lua(UNLOCK_LUA),
            admit_variant: Script::from_lua(ADMIT_VARIANT_LUA),
            valid_after_ms: AtomicU64::new(0),
            generation_ttl_ms: AtomicU64::new(Duration::from_secs(24 * 3600).as_millis() as u64),
            pending: Mutex::new(Vec::new()),
            l1: l1_bytes.map(L1::new),
            feed_up: AtomicBool::new(false),
            timings: Timings::default(),
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

    fn fill_channel(&self) -> String {
        format!("{}:fill", self.settings.prefix)
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

    /// The entry for `key` if one counts (fetched under the key's current generation and
    /// stored after any gap in this process's invalidation feed), and the generation. A
    /// value that is not a valid entry is a miss. One round trip.
    pub async fn get(&self, key: &str, use_l1: bool) -> Result<Lookup, Unavailable> {
        let l1 = self.l1.as_ref().filter(|_| use_l1);
        if let Some(entry) = l1.and_then(|l1| l1.get(key)) {
            return Ok(Lookup {
                entry: Some(entry),
                generation: 0,
                from_l1: true,
                // A tier hit reads nothing from Redis that needs guarding, so it skips the
                // epoch's lock. 0 is never above the true count: an insert under it can
                // only be refused, never let through after an invalidation.
                l1_epoch: 0,
            });
        }
        // Read before Redis is: an invalidation that lands after this keeps the entry out.
        let l1_epoch = l1.map_or(0, L1::epoch);
        let keys = vec![self.keys.generation(base_key(key)), self.keys.entry(key)];
        let (generation, raw) = match self.run(Op::Mget, Box::pin(self.lookups.mget(keys))).await {
            Ok(mut values) if values.len() == 2 => {
                let raw = values.pop().flatten();
                let generation = values.pop().flatten();
                (parse_generation(generation.as_deref()), raw)
            }
            Ok(_) => (0, None),
            Err(Failure::Reply(e)) => {
                tracing::warn!(key, error = %e, "ignoring a key that is not an entry");
                (0, None)
            }
            Err(Failure::Outage(e)) => return Err(e),
        };
        let entry = match raw.map(Entry::decode) {
            None => None,
            Some(Ok(entry)) => Some(entry),
            Some(Err(e @ (DecodeError::Version | DecodeError::Corrupt(_)))) => {
                tracing::warn!(key, error = %e, "ignoring an unreadable entry");
                None
            }
        };
        let valid_after = self.valid_after_ms.load(Ordering::Relaxed);
        let entry = entry
            .filter(|e| e.generation == generation && e.stored_at_ms >= valid_after)
            .map(Arc::new);
        if let (Some(l1), Some(entry)) = (l1, &entry) {
            l1.insert(key, Arc::clone(entry), l1_epoch);
        }
        Ok(Lookup {
            entry,
            generation,
            from_l1: false,
            l1_epoch,
        })
    }

    /// Stores an entry that Redis drops by itself after `keep`, and records it under its
    /// tags. The entry carries the generation its fetch started under; a tagged entry whose
    /// fetch started before one of its tags was purged is not stored, since a tag purge
    /// cannot know the keys of fills still running. A key with a variant part (a query, a
    /// user, request header values) is stored only while its base holds fewer than
    /// `max_variants` live variants, or is already one of them: random query strings then
    /// cost one small set per base instead of unbounded entries, and entries already stored
    /// (the hot ones) are never pushed out by them.
    pub async fn put(
        &self,
        key: &str,
        entry: &Arc<Entry>,
        how: &Placement<'_>,
    ) -> Result<Put, Unavailable> {
        let put = self.put_in_redis(key, entry, how).await?;
        if put == Put::Stored
            && let (Some(l1), Some(seen)) = (&self.l1, how.l1_epoch)
        {
            l1.insert(key, Arc::clone(entry), seen);
        }
        Ok(put)
    }

    async fn put_in_redis(
        &self,
        key: &str,
        entry: &Entry,
        how: &Placement<'_>,
    ) -> Result<Put, Unavailable> {
        let Placement {
            keep,
            tags,
            fetch_started_ms,
            max_variants,
            ..
        } = *how;
        let client = self.control.with_options(&self.options);
        let value = Bytes::from(entry.encode());
        let keep_ms = keep.as_millis().max(1) as i64;
        let has_variant = base_key(key).len() < key.len();
        // The common case, one round trip: admitted and stored by one script (the set and
        // the entry share the base's hash tag, so this is single-slot in a cluster too).
        if tags.is_empty() && has_variant {
            return self
                .admit(key, max_variants, keep, Some(value))
                .await
                .map(|admitted| {
                    if admitted {
                        Put::Stored
                    } else {
                        Put::TooManyVariants
                    }
                });
        }
        if has_variant && !self.admit(key, max_variants, keep, None).await? {
            return Ok(Put::TooManyVariants);
        }
        if !tags.is_empty() {
            // One GET per tag, pipelined: in a cluster the marks live in different slots.
            let pipeline = client.pipeline();
            let queued = async {
                for tag in tags {
                    pipeline.get::<(), _>(self.keys.purged(tag)).await?;
                }
                pipeline.all::<Vec<Option<String>>>().await
            };
            let purged = self
                .run(Op::GetPurgeMarks, Box::pin(queued))
                .await
                .map_err(Unavailable::from)?;
            let last_purge = purged
                .iter()
                .flatten()
                .filter_map(|t| t.parse::<u64>().ok())
                .max();
            // Instants from different instances' clocks, assumed synchronised (NTP): a
            // clock running ahead by more than a fill's duration would let a racing fill store.
            if last_purge.is_some_and(|at| at > fetch_started_ms) {
                return Ok(Put::Purged);
            }
        }
        if tags.is_empty() {
            return self
                .run(
                    Op::Set,
                    Box::pin(client.set::<(), _, _>(
                        self.keys.entry(key),
                        value,
                        Some(Expiration::PX(keep_ms)),
                        None,
                        false,
                    )),
                )
                .await
                .map(|()| Put::Stored)
                .map_err(Unavailable::from);
        }
        let base = base_key(key).to_string();
        let now = now_ms() as i64;
        let expires = (now + keep_ms) as f64;
        let pipeline = client.pipeline();
        let queued = async {
            pipeline
                .set::<(), _, _>(
                    self.keys.entry(key),
                    value,
                    Some(Expiration::PX(keep_ms)),
                    None,
                    false,
                )
                .await?;
            for tag in tags {
                let tag_key = self.keys.tag(tag);
                // GT: a base's score only moves later, to its latest entry's expiry.
                pipeline
                    .zadd::<(), _, _>(
                        &tag_key,
                        None,
                        Some(ZOrdering::GreaterThan),
                        false,
                        false,
                        (expires, base.as_str()),
                    )
                    .await?;
                // Entries that expired drop out of their tag sets here, so the sets stay small.
                pipeline
                    .zremrangebyscore::<(), _, _, _>(&tag_key, "-inf", now as f64)
                    .await?;
                pipeline
                    .pexpire::<(), _>(&tag_key, keep_ms, Some(ExpireOptions::NX))
                    .await?;
                pipeline
                    .pexpire::<(), _>(&tag_key, keep_ms, Some(ExpireOptions::GT))
                    .await?;
            }
            pipeline.all::<Vec<Value>>().await
        };
        self.run(Op::Put, Box::pin(queued))
            .await
            .map(|_| Put::Stored)
            .map_err(Unavailable::from)
    }

    /// Counts `key` among its base's live variants if there is room (or it is counted
    /// already), and then stores `value` under it when given; false when there is no room.
    async fn admit(
        &self,
        key: &str,
        max: u64,
        keep: Duration,
        value: Option<Bytes>,
    ) -> Result<bool, Unavailable> {
        let base = base_key(key);
        let mut keys = vec![self.keys.variants(base)];
        let mut args: Vec<Bytes> = vec![
            Bytes::from(key[base.len()..].to_string()),
            Bytes::from(max.to_string()),
            Bytes::from(keep.as_millis().max(1).to_string()),
            Bytes::from(now_ms().to_string()),
        ];
        if let Some(value) = value {
            keys.push(self.keys.entry(key));
            args.push(value);
        }
        let admitted = self
            .run(
                Op::AdmitVariant,
                Box::pin(self.admit_variant.evalsha_with_reload::<i64, _, _>(
                    &self.control,
                    keys,
                    args,
                )),
            )
            .await
            .map_err(Unavailable::from)?;
        Ok(admitted == 1)
    }

    /// `SET <prefix>:lock:<key> <token> NX PX <ttl>`: true when we are the leader.
    pub async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, Unavailable> {
        let client = self.control.with_options(&self.options);
        let expiry = Expiration::PX(ttl.as_millis().max(1) as i64);
        let reply: Option<String> = self
            .run(
                Op::Lock,
                Box::pin(client.set(
                    self.keys.lock(key),
                    token,
                    Some(expiry),
                    Some(SetOptions::NX),
                    false,
                )),
            )
            .await
            .map_err(Unavailable::from)?;
        Ok(reply.is_some())
    }

    /// Releases our lock (compare-and-delete on the token).
    pub async fn unlock(&self, key: &str, token: &str) -> Result<(), Unavailable> {
        let client = &self.control;
        let keys = vec![self.keys.lock(key)];
        self.run(
            Op::Unlock,
            Box::pin(self.unlock.evalsha_with_reload::<i64, _, _>(
                client,
                keys,
                vec![token.to_string()],
            )),
        )
        .await
        .map(drop)
        .map_err(Unavailable::from)
    }

    /// Tells every instance's waiters what happened to `key`.
    pub async fn publish(&self, notice: &FillNotice) -> Result<(), Unavailable> {
        let client = self.control.with_options(&self.options);
        self.run(
            Op::Publish,
            Box::pin(client.publish::<i64, _, _>(self.fill_channel(), notice.encode())),
        )
        .await
        .map(drop)
        .map_err(Unavailable::from)
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

    /// Records whether the pub/sub feed is up; the in-process tier is flushed when it goes
    /// down and trusted again (empty) when it is back.
    fn feed(&self, up: bool) {
        self.feed_up.store(up, Ordering::Release);
        match (&self.l1, up) {
            (Some(l1), false) => l1.distrust(),
            (Some(_), true) => self.trust_l1(),
            (None, _) => {}
        }
    }

    /// Uses the in-process tier again (flushed first) if Redis and the feed are both up.
    fn trust_l1(&self) {
        if let Some(l1) = &self.l1
            && self.is_healthy()
            && self.feed_up.load(Ordering::Acquire)
        {
            l1.trust();
        }
    }

    fn dropped_channel(&self) -> String {
        format!("{}:dropped", self.settings.prefix)
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

    /// Applies an invalidation: every named base gets a new generation (so none of its
    /// variants, and no fill already running, can be served) and its entry is deleted.
    /// Queues it when Redis cannot be reached.
    pub async fn invalidate(&self, invalidation: &Invalidation) -> Applied {
        if self.is_healthy() {
            match self.apply(invalidation).await {
                Ok(dropped) => return Applied::Dropped(dropped),
                Err(Failure::Reply(e)) => {
                    tracing::error!(error = %e, ?invalidation, "invalidation failed");
                    return Applied::Dropped(0);
                }
                Err(Failure::Outage(_)) => {}
            }
        }
        let mut pending = self.pending.lock().expect("pending invalidations poisoned");
        if pending.len() < MAX_PENDING {
            pending.push(invalidation.clone());
        }
        // Beyond MAX_PENDING, recovery distrusts every older entry instead.
        Applied::Queued
    }

    async fn apply(&self, invalidation: &Invalidation) -> Result<usize, Failure> {
        let client = self.control.with_options(&self.options);
        let mut bases: BTreeSet<String> = invalidation
            .keys
            .iter()
            .map(|key| base_key(key).to_string())
            .collect();
        for tag in &invalidation.tags {
            let members: Vec<String> = self
                .exec(
                    Op::Zrangebyscore,
                    Box::pin(client.zrangebyscore(self.keys.tag(tag), "-inf", "+inf", false, None)),
                )
                .await?;
            bases.extend(members);
        }
        if let Some(prefix) = &invalidation.prefix {
            bases.extend(self.scan_bases(prefix).await?);
        }
        if bases.is_empty() && invalidation.tags.is_empty() {
            return Ok(0);
        }
        let generation_ttl = self.generation_ttl_ms.load(Ordering::Relaxed) as i64;
        let pipeline = client.pipeline();
        let queued = async {
            for base in &bases {
                let generation = self.keys.generation(base);
                pipeline.incr::<(), _>(&generation).await?;
                pipeline
                    .pexpire::<(), _>(&generation, generation_ttl, None)
                    .await?;
                pipeline.del::<(), _>(self.keys.entry(base)).await?;
            }
            let now = now_ms().to_string();
            for tag in &invalidation.tags {
                pipeline.del::<(), _>(self.keys.tag(tag)).await?;
                let expiry = Expiration::PX(generation_ttl);
                pipeline
                    .set::<(), _, _>(
                        self.keys.purged(tag),
                        now.as_str(),
                        Some(expiry),
                        None,
                        false,
                    )
                    .await?;
            }
            if !bases.is_empty() {
                let dropped = serde_json::to_string(&bases).expect("strings serialize");
                pipeline
                    .publish::<(), _, _>(self.dropped_channel(), dropped)
                    .await?;
            }
            pipeline.all::<Vec<Value>>().await
        };
        self.exec(Op::Invalidate, Box::pin(queued)).await?;
        // This instance's tier drops them now, before the caller answers anyone; the
        // others hear the published list.
        if let Some(l1) = &self.l1 {
            l1.drop_bases(&bases.iter().cloned().collect::<Vec<_>>());
        }
        Ok(bases.len())
    }

    /// The bases of every entry whose key starts with `prefix`, by SCAN in bounded batches
    /// (never KEYS, which blocks Redis for the whole keyspace). A cluster is scanned on
    /// every primary, since each holds only its own slots.
    async fn scan_bases(&self, prefix: &str) -> Result<BTreeSet<String>, Failure> {
        let pattern = self.keys.entries_starting_with(prefix);
        let nodes = match self.control.cached_cluster_state() {
            Some(state) if self.control.is_clustered() => {
                state.unique_primary_nodes().into_iter().map(Some).collect()
            }
            _ => vec![None],
        };
        let mut bases = BTreeSet::new();
        for node in nodes {
            let options = Options {
                cluster_node: node,
                ..self.options.clone()
            };
            let client = self.control.with_options(&options);
            let mut cursor = "0".to_string();
            loop {
                let (next, keys): (String, Vec<String>) = self
                    .exec(
                        Op::Scan,
                        Box::pin(client.scan_page(
                            cursor.as_str(),
                            pattern.as_str(),
                            Some(SCAN_BATCH),
                            None,
                        )),
                    )
                    .await?;
                bases.extend(keys.iter().filter_map(|key| self.keys.base_of(key)));
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(bases)
    }

    /// Subscribes to fill notices and to other services' invalidation messages, handing each
    /// to its callback. The subscription is restored after reconnects; because messages
    /// published while this process was not subscribed are lost, a reconnect (or a receiver
    /// that lagged) makes this process distrust every entry stored before it. Lost fill
    /// notices only cost waiters a poll.
    pub async fn listen(
        self: &Arc<Self>,
        invalidation_channel: String,
        on_fill: impl Fn(FillNotice) + Send + 'static,
        on_invalidation: impl Fn(Bytes) + Send + 'static,
    ) -> Result<(), Unavailable> {
        let subscriber: SubscriberClient = builder(&self.settings)?
            .with_performance_config(|p| p.broadcast_channel_capacity = SUBSCRIBER_BUFFER)
            .build_subscriber_client()
            .map_err(|e| Unavailable(e.to_string()))?;
        subscriber.connect();
        let _ = tokio::time::timeout(self.settings.timeout, subscriber.wait_for_connect()).await;
        let _resubscribe = subscriber.manage_subscriptions();
        let mut messages = subscriber.message_rx();
        let fill_channel = self.fill_channel();
        let dropped_channel = self.dropped_channel();
        let channels = vec![
            fill_channel.clone(),
            dropped_channel.clone(),
            invalidation_channel.clone(),
        ];
        // Redis may be down now: subscribe in the background, retrying until it answers.
        let sub = subscriber.clone();
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Err(e) = sub.subscribe(channels.clone()).await {
                tracing::debug!(error = %e, "not subscribed yet; waiters poll meanwhile");
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            // Only reconnects and errors after the first subscription are gaps in the feed.
            let mut reconnects = sub.reconnect_rx();
            let mut errors = sub.error_rx();
            if let Some(store) = store.upgrade() {
                store.feed(true);
            }
            loop {
                tokio::select! {
                    reconnected = reconnects.recv() => {
                        if reconnected.is_err() { return }
                        let Some(store) = store.upgrade() else { return };
                        tracing::warn!(
                            "pub/sub reconnected: invalidations may have been missed; distrusting entries stored before now"
                        );
                        store.distrust_before(now_ms());
                        store.feed(true);
                    }
                    error = errors.recv() => {
                        if matches!(error, Err(RecvError::Closed)) { return }
                        let Some(store) = store.upgrade() else { return };
                        // The connection may be gone: until it is back, nothing published
                        // reaches this process.
                        store.feed(false);
                    }
                }
            }
        });
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            let _keep_alive = subscriber;
            loop {
                match messages.recv().await {
                    Ok(message) if message.channel.as_bytes() == dropped_channel.as_bytes() => {
                        let Some(store) = store.upgrade() else { break };
                        let bases: Option<Vec<String>> = message
                            .value
                            .as_bytes()
                            .and_then(|raw| serde_json::from_slice(raw).ok());
                        match (bases, &store.l1) {
                            (Some(bases), Some(l1)) => l1.drop_bases(&bases),
                            (None, Some(_)) => {
                                // Unreadable: which entries it named is unknown.
                                store.feed(false);
                                store.feed(true);
                            }
                            (_, None) => {}
                        }
                    }
                    Ok(message) if message.channel.as_bytes() == fill_channel.as_bytes() => {
                        let notice = message
                            .value
                            .as_str()
                            .and_then(|text| FillNotice::decode(&text));
                        match notice {
                            Some(notice) => on_fill(notice),
                            None => tracing::warn!("ignoring a malformed fill notice"),
                        }
                    }
                    Ok(message) => on_invalidation(
                        message
                            .value
                            .as_bytes()
                            .map(Bytes::copy_from_slice)
                            .unwrap_or_default(),
                    ),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "pub/sub receiver lagged: distrusting entries stored before now"
                        );
                        if let Some(store) = store.upgrade() {
                            store.distrust_before(now_ms());
                            store.feed(false);
                            store.feed(true);
                        }
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        Ok(())
    }

    /// Publishes an invalidation for every instance listening on `channel`; returns how
    /// many subscribers heard it.
    pub async fn publish_invalidation(
        &self,
        channel: &str,
        invalidation: &Invalidation,
        key: Option<&SigningKey>,
    ) -> Result<i64, Unavailable> {
        let client = self.control.with_options(&self.options);
        let message = invalidation.to_message(key);
        self.exec(
            Op::Publish,
            Box::pin(client.publish::<i64, _, _>(channel, message)),
        )
        .await
        .map_err(Unavailable::from)
    }
}

/// The Redis operations whose durations are measured, one
/// `cachalot_redis_command_duration_seconds` series each.
#[derive(Clone, Copy)]
enum Op {
    Mget,
    GetPurgeMarks,
    Set,
    Put,
    AdmitVariant,
    Lock,
    Unlock,
    Publish,
    Ping,
    Zrangebyscore,
    Invalidate,
    Scan,
}

impl Op {
    const COUNT: usize = Op::Scan as usize + 1;

    /// The series' `command` label.
    fn label(self) -> &'static str {
        match self {
            Op::Mget => "mget",
            Op::GetPurgeMarks => "get_purge_marks",
            Op::Set => "set",
            Op::Put => "put",
            Op::AdmitVariant => "admit_variant",
            Op::Lock => "lock",
            Op::Unlock => "unlock",
            Op::Publish => "publish",
            Op::Ping => "ping",
            Op::Zrangebyscore => "zrangebyscore",
            Op::Invalidate => "invalidate",
            Op::Scan => "scan",
        }
    }

    /// One command sent with the store's options, whose timeout then bounds it: the lookup
    /// (its `MGET`, batched or not). A second timer per hit would cost more than it guards.
    fn one_timed_command(self) -> bool {
        matches!(self, Op::Mget)
    }
}

/// Each operation's duration histogram, registered on first use and kept: looking a
/// labelled series up in the registry on every command showed in profiles of the hit path.
#[derive(Default)]
struct Timings([OnceLock<metrics::Histogram>; Op::COUNT]);

impl Timings {
    fn of(&self, op: Op) -> &metrics::Histogram {
        self.0[op as usize].get_or_init(|| {
            metrics::histogram!("cachalot_redis_command_duration_seconds", "command" => op.label())
        })
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

fn builder(settings: &RedisSettings) -> Result<Builder, Unavailable> {
    connect::builder(settings).map_err(Unavailable)
}

/// A Redis command on its way. Boxed because fred's command futures are several KiB, and
/// every async layer they pass through (`run`, `exec`, the timeout, the lookup, the request)
/// would otherwise hold its own copy and move it: for a hit, that was most of a 22 KiB
/// request future copied into place on every request.
type Command<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Messages the subscription buffers for this process. A receiver that falls further behind
/// must distrust the whole cache (an invalidation may be among the lost), so the buffer is
/// sized for bursts of fill notices (every stored miss sends one), not fred's default 32.
const SUBSCRIBER_BUFFER: usize = 16 * 1024;

/// Commands are pipelined on each connection; a few connections spread the parsing work.
fn pool_size() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_notices_round_trip() {
        for notice in [
            FillNotice::Stored("a b:c".into()),
            FillNotice::Failed("x".into()),
        ] {
            assert_eq!(FillNotice::decode(&notice.encode()), Some(notice));
        }
        assert_eq!(FillNotice::decode("garbage"), None);
    }
}

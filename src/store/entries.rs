//! Entries in Redis: the lookup (one `MGET` of entry and generation, or the in-process
//! tier), and storing a fill's entry under its generation, its tags and its base's variant
//! limit.

use super::command::Op;
use super::{Failure, Store, Unavailable, parse_generation};
use crate::policy::key::base_key;
use crate::store::entry::{DecodeError, Entry, now_ms};
use crate::store::l1::L1;
use bytes::Bytes;
use fred::prelude::*;
use fred::types::ExpireOptions;
use fred::types::sorted_sets::Ordering as ZOrdering;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Admits a variant of a base key if it is already counted or the base has room: a sorted
/// set per base of variant -> expiry (ms), pruned of expired variants before counting, so it
/// counts what Redis holds now. KEYS[1] the set; ARGV: variant, max, keep ms, now ms.
pub(super) const ADMIT_VARIANT_LUA: &str = r#"
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
    /// The route's label: stored bytes are counted per route.
    pub route: &'a Arc<str>,
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
    /// Redis held no value at all under the key (not one that does not count): a fill then
    /// asks for the lock only if none has been stored since (see [`Store::try_lock`]).
    pub absent: bool,
}

impl Store {
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
                absent: false,
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
        let absent = raw.is_none();
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
            absent,
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
        let value = Bytes::from(entry.encode());
        let bytes = value.len() as u64;
        let put = self.put_in_redis(key, value, how).await?;
        if put == Put::Stored {
            self.written.add(how.route, bytes);
        }
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
        value: Bytes,
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
}

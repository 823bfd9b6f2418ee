//! Invalidation in Redis: a new generation for every named base (by key, by tag, or by
//! prefix through SCAN), queued while Redis is down, and published for other instances.

use super::command::Op;
use super::{Failure, MAX_PENDING, Store, Unavailable};
use crate::policy::SigningKey;
use crate::policy::key::base_key;
use crate::store::entry::now_ms;
use crate::store::message::Invalidation;
use fred::prelude::*;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

/// Keys scanned per SCAN call in a prefix purge.
const SCAN_BATCH: u32 = 500;
/// What an invalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied; this many bases (keys with all their variants) were invalidated.
    Dropped(usize),
    /// Redis is unreachable: queued, applied before the cache is used again.
    Queued,
}

impl Store {
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

    pub(super) async fn apply(&self, invalidation: &Invalidation) -> Result<usize, Failure> {
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
        let mut bases = BTreeSet::new();
        for node in self.primaries() {
            let mut cursor = "0".to_string();
            loop {
                let page = self.scan_page_on(node.clone(), cursor, pattern.clone(), SCAN_BATCH);
                let (next, keys) = self.exec(Op::Scan, page).await?;
                bases.extend(keys.iter().filter_map(|key| self.keys.base_of(key)));
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(bases)
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
    pub(super) fn dropped_channel(&self) -> String {
        format!("{}:dropped", self.settings.prefix)
    }
}

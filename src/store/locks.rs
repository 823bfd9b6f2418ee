//! Collapsing misses across instances: the `SET NX PX` lock a fill's leader holds, its
//! compare-and-delete release, and the fill notices that tell waiters on every instance
//! what became of the key.

use super::command::Op;
use super::{Store, Unavailable};
use fred::prelude::*;
use std::time::Duration;

/// Releases a lock only if it still holds our token (a lock that expired and was taken by
/// another leader must not be deleted by us).
pub(super) const UNLOCK_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Takes a fill's lock, unless the entry the lookup found missing has been stored since.
/// KEYS[1] the lock, KEYS[2] the entry (one hash tag, so one slot); ARGV: token, ttl ms,
/// "1" when the lookup found no value under the entry's key. Returns 1 locked, 0 held by
/// another leader, 2 stored since the lookup.
///
/// A lookup that read "absent" just before another leader stored, and asks for the lock
/// just after that leader released it, would otherwise lead a second fill: one key, two
/// origin requests. The check is atomic with the lock, and a leader stores before it
/// releases, so an entry stored by any instance is seen. (`PTTL` answers -2 for a missing
/// key; it is asked rather than `EXISTS` because the ACL recipe in docs/invalidation.md
/// already grants it, and deployments that followed it keep working.)
pub(super) const LOCK_LUA: &str = r#"
if ARGV[3] == '1' and redis.call('PTTL', KEYS[2]) ~= -2 then
  return 2
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"#;

/// What asking for a fill's lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    /// The lock is ours: fetch and store.
    Ours,
    /// Another leader holds it: wait for its fill.
    Held,
    /// The entry was stored after the lookup missed it: read it again.
    Stored,
}

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

    pub(super) fn decode(text: &str) -> Option<Self> {
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

impl Store {
    /// `SET <prefix>:lock:<key> <token> NX PX <ttl>`, in a script that first checks, when
    /// `absent` (the lookup found no value under the key), that no entry was stored since.
    pub async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
        absent: bool,
    ) -> Result<Locked, Unavailable> {
        let keys = vec![self.keys.lock(key), self.keys.entry(key)];
        let args = vec![
            token.to_string(),
            ttl.as_millis().max(1).to_string(),
            if absent { "1" } else { "0" }.to_string(),
        ];
        let reply: i64 = self
            .run(
                Op::Lock,
                Box::pin(
                    self.lock
                        .evalsha_with_reload::<i64, _, _>(&self.control, keys, args),
                ),
            )
            .await
            .map_err(Unavailable::from)?;
        Ok(match reply {
            1 => Locked::Ours,
            2 => Locked::Stored,
            _ => Locked::Held,
        })
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

    pub(super) fn fill_channel(&self) -> String {
        format!("{}:fill", self.settings.prefix)
    }
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

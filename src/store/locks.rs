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

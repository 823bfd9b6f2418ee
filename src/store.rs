//! Redis: entries, collapse locks and fill notices. Every Redis command the proxy sends is
//! in this module, so the rest of the code never sees the client library.
//!
//! Redis is a cache, never a dependency of correctness: every command has a timeout and fails
//! fast while disconnected, and one failure marks Redis as down so that later requests skip it
//! at once instead of each waiting for the timeout. A background probe marks it up again.

use crate::entry::{DecodeError, Entry};
use crate::policy::RedisSettings;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// How often a down Redis is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

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

/// Error replies that concern the command or its key (WRONGTYPE, a bad argument), as
/// opposed to failures of the connection or the server.
fn is_reply_error(error: &Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::InvalidArgument
            | ErrorKind::InvalidCommand
            | ErrorKind::Parse
            | ErrorKind::NotFound
    )
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

/// The proxy's Redis.
pub struct Store {
    pool: Pool,
    settings: RedisSettings,
    options: Options,
    healthy: AtomicBool,
    unlock: Script,
}

impl Store {
    /// Starts connecting. Never fails because Redis is down: the proxy must start and serve
    /// from the origin without it. Fails only on a URL the client cannot use.
    pub async fn connect(settings: &RedisSettings) -> Result<Arc<Self>, Unavailable> {
        let pool = builder(settings)?
            .build_pool(pool_size())
            .map_err(|e| Unavailable(e.to_string()))?;
        pool.connect();
        let connected = tokio::time::timeout(settings.timeout, pool.wait_for_connect()).await;
        let store = Arc::new(Self {
            pool,
            settings: settings.clone(),
            options: Options {
                timeout: Some(settings.timeout),
                fail_fast: true,
                max_attempts: Some(1),
                ..Default::default()
            },
            healthy: AtomicBool::new(matches!(connected, Ok(Ok(())))),
            unlock: Script::from_lua(UNLOCK_LUA),
        });
        if !store.is_healthy() {
            tracing::warn!(url = %crate::policy::redact(&settings.url), "redis is not reachable; serving from the origin until it is");
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

    fn entry_key(&self, key: &str) -> String {
        format!("{}:{key}", self.settings.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}:lock:{key}", self.settings.prefix)
    }

    fn fill_channel(&self) -> String {
        format!("{}:fill", self.settings.prefix)
    }

    /// Runs one command, recording Redis's health from its result. Only failures of the
    /// connection mark Redis down; an error reply about one key (WRONGTYPE) is that key's
    /// problem, not an outage for every request.
    async fn run<T>(&self, command: impl Future<Output = Result<T, Error>>) -> Result<T, Failure> {
        if !self.is_healthy() {
            return Err(Failure::Outage(Unavailable(
                "marked down after a failed command".into(),
            )));
        }
        // The client's own timeout does not cover every command (EVALSHA), so bound it here too.
        let result = tokio::time::timeout(self.settings.timeout, command).await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if is_reply_error(&e) => Err(Failure::Reply(e.to_string())),
            Ok(Err(e)) => Err(Failure::Outage(self.mark_down(e.to_string()))),
            Err(_) => Err(Failure::Outage(
                self.mark_down(format!("no answer within {:?}", self.settings.timeout)),
            )),
        }
    }

    fn mark_down(&self, reason: String) -> Unavailable {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::error!(%reason, "redis unavailable; requests go to the origin until it answers again");
        }
        Unavailable(reason)
    }

    /// The stored entry for `key`, if any. A value that is not a valid entry is a miss.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, Unavailable> {
        let client = self.pool.next().with_options(&self.options);
        let raw: Option<Bytes> = match self.run(client.get(self.entry_key(key))).await {
            Ok(raw) => raw,
            Err(Failure::Reply(e)) => {
                tracing::warn!(key, error = %e, "ignoring a key that is not an entry");
                None
            }
            Err(Failure::Outage(e)) => return Err(e),
        };
        match raw.map(Entry::decode) {
            None => Ok(None),
            Some(Ok(entry)) => Ok(Some(entry)),
            Some(Err(e @ (DecodeError::Version | DecodeError::Corrupt(_)))) => {
                tracing::warn!(key, error = %e, "ignoring an unreadable entry");
                Ok(None)
            }
        }
    }

    /// Stores an entry that Redis drops by itself after `keep`.
    pub async fn put(&self, key: &str, entry: &Entry, keep: Duration) -> Result<(), Unavailable> {
        let client = self.pool.next().with_options(&self.options);
        let value = Bytes::from(entry.encode());
        let expiry = Expiration::PX(keep.as_millis().max(1) as i64);
        self.run(client.set::<(), _, _>(self.entry_key(key), value, Some(expiry), None, false))
            .await
            .map_err(Unavailable::from)
    }

    /// `SET <prefix>:lock:<key> <token> NX PX <ttl>`: true when we are the leader.
    pub async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, Unavailable> {
        let client = self.pool.next().with_options(&self.options);
        let expiry = Expiration::PX(ttl.as_millis().max(1) as i64);
        let reply: Option<String> = self
            .run(client.set(
                self.lock_key(key),
                token,
                Some(expiry),
                Some(SetOptions::NX),
                false,
            ))
            .await
            .map_err(Unavailable::from)?;
        Ok(reply.is_some())
    }

    /// Releases our lock (compare-and-delete on the token).
    pub async fn unlock(&self, key: &str, token: &str) -> Result<(), Unavailable> {
        let client = self.pool.next();
        let keys = vec![self.lock_key(key)];
        self.run(self.unlock.evalsha_with_reload::<i64, _, _>(
            client,
            keys,
            vec![token.to_string()],
        ))
        .await
        .map(drop)
        .map_err(Unavailable::from)
    }

    /// Tells every instance's waiters what happened to `key`.
    pub async fn publish(&self, notice: &FillNotice) -> Result<(), Unavailable> {
        let client = self.pool.next().with_options(&self.options);
        self.run(client.publish::<i64, _, _>(self.fill_channel(), notice.encode()))
            .await
            .map(drop)
            .map_err(Unavailable::from)
    }

    /// Asks Redis whether it is there (for `/health/cache`), updating the health flag.
    pub async fn ping(&self) -> Result<(), Unavailable> {
        let client = self.pool.next().with_options(&self.options);
        let result = tokio::time::timeout(self.settings.timeout, client.ping::<String>(None)).await;
        match result {
            Ok(Ok(_)) => {
                self.mark_up();
                Ok(())
            }
            Ok(Err(e)) => Err(self.mark_down(e.to_string())),
            Err(_) => Err(self.mark_down(format!("no answer within {:?}", self.settings.timeout))),
        }
    }

    fn mark_up(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("redis is back; caching resumes");
        }
    }

    /// Subscribes to fill notices and hands each to `deliver`. The subscription is restored
    /// after reconnects. Lost notices (while disconnected, or when the receiver lags) are
    /// covered by the waiters' polling fallback.
    pub async fn listen_for_fills(
        self: &Arc<Self>,
        deliver: impl Fn(FillNotice) + Send + 'static,
    ) -> Result<(), Unavailable> {
        let subscriber: SubscriberClient = builder(&self.settings)?
            .build_subscriber_client()
            .map_err(|e| Unavailable(e.to_string()))?;
        subscriber.connect();
        let _ = tokio::time::timeout(self.settings.timeout, subscriber.wait_for_connect()).await;
        let _resubscribe = subscriber.manage_subscriptions();
        let mut messages = subscriber.message_rx();
        let channel = self.fill_channel();
        // Redis may be down now: subscribe in the background, retrying until it answers
        // (after that, manage_subscriptions restores the subscription on every reconnect).
        let sub = subscriber.clone();
        tokio::spawn(async move {
            while let Err(e) = sub.subscribe(channel.as_str()).await {
                tracing::debug!(error = %e, "not subscribed to fill notices yet; waiters poll meanwhile");
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
        tokio::spawn(async move {
            let _keep_alive = subscriber;
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        let notice = message
                            .value
                            .as_str()
                            .and_then(|text| FillNotice::decode(&text));
                        match notice {
                            Some(notice) => deliver(notice),
                            None => tracing::warn!("ignoring a malformed fill notice"),
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "fill notices lagged; waiters fall back to polling");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        Ok(())
    }
}

/// Probes Redis while it is marked down; stops when the store is dropped.
async fn probe(store: std::sync::Weak<Store>) {
    let mut interval = tokio::time::interval(PROBE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(store) = store.upgrade() else { return };
        if !store.is_healthy() {
            let _ = store.ping().await;
        }
    }
}

fn builder(settings: &RedisSettings) -> Result<Builder, Unavailable> {
    let mut config =
        Config::from_url(&settings.url).map_err(|e| Unavailable(e.details().to_string()))?;
    // Start even when Redis is down; reconnect in the background.
    config.fail_fast = false;
    let mut builder = Builder::from_config(config);
    let timeout = settings.timeout;
    builder
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 1;
            // While disconnected, do not queue commands without bound (fred issue #340).
            c.max_command_buffer_len = 10_000;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
        })
        // Without a policy fred never reconnects: retry forever, 50 ms doubling to 1 s.
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 1_000, 2));
    Ok(builder)
}

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

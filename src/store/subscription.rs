//! The pub/sub subscription: fill notices, other instances' dropped bases and other
//! services' invalidation messages. Because messages published while this process was not
//! subscribed are lost, every gap in the feed makes the process distrust older entries and
//! flush its in-process tier.

use super::command::builder;
use super::{FillNotice, PROBE_INTERVAL, Store, Unavailable};
use crate::store::entry::now_ms;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

/// Messages the subscription buffers for this process. A receiver that falls further behind
/// must distrust the whole cache (an invalidation may be among the lost), so the buffer is
/// sized for bursts of fill notices (every stored miss sends one), not fred's default 32.
const SUBSCRIBER_BUFFER: usize = 16 * 1024;

/// The channels a message is told apart by; any other is an invalidation.
struct Channels {
    fill: String,
    dropped: String,
}

impl Store {
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
        let subscriber = self.subscriber().await?;
        let _resubscribe = subscriber.manage_subscriptions();
        let messages = subscriber.message_rx();
        let fill_channel = self.fill_channel();
        let dropped_channel = self.dropped_channel();
        let channels = vec![
            fill_channel.clone(),
            dropped_channel.clone(),
            invalidation_channel.clone(),
        ];
        // Redis may be down now: subscribe in the background, retrying until it answers.
        tokio::spawn(watch_feed(
            Arc::downgrade(self),
            subscriber.clone(),
            channels,
        ));
        let channels = Channels {
            fill: fill_channel,
            dropped: dropped_channel,
        };
        tokio::spawn(deliver(
            Arc::downgrade(self),
            subscriber,
            messages,
            channels,
            on_fill,
            on_invalidation,
        ));
        Ok(())
    }

    /// A subscriber client with room for bursts, connected (or still trying: Redis may be
    /// down, and the subscription is retried in the background).
    async fn subscriber(&self) -> Result<SubscriberClient, Unavailable> {
        let subscriber: SubscriberClient = builder(&self.settings)?
            .with_performance_config(|p| p.broadcast_channel_capacity = SUBSCRIBER_BUFFER)
            .build_subscriber_client()
            .map_err(|e| Unavailable(e.to_string()))?;
        subscriber.connect();
        let _ = tokio::time::timeout(self.settings.timeout, subscriber.wait_for_connect()).await;
        Ok(subscriber)
    }

    /// Another instance's invalidation dropped these bases: the in-process tier drops them
    /// too. An unreadable list flushes the tier, since which entries it named is unknown.
    fn drop_from_l1(&self, message: &Message) {
        let bases: Option<Vec<String>> = message
            .value
            .as_bytes()
            .and_then(|raw| serde_json::from_slice(raw).ok());
        match (bases, &self.l1) {
            (Some(bases), Some(l1)) => l1.drop_bases(&bases),
            (None, Some(_)) => {
                // Unreadable: which entries it named is unknown.
                self.feed(false);
                self.feed(true);
            }
            (_, None) => {}
        }
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
    pub(super) fn trust_l1(&self) {
        if let Some(l1) = &self.l1
            && self.is_healthy()
            && self.feed_up.load(Ordering::Acquire)
        {
            l1.trust();
        }
    }
}

/// Subscribes (retrying while Redis is down), then watches the subscription: a reconnect
/// means messages may have been missed, an error that the feed may be down.
async fn watch_feed(store: Weak<Store>, sub: SubscriberClient, channels: Vec<String>) {
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
}

/// Hands every message to its receiver, until the store is dropped or the channel closes.
async fn deliver(
    store: Weak<Store>,
    subscriber: SubscriberClient,
    mut messages: Receiver<Message>,
    channels: Channels,
    on_fill: impl Fn(FillNotice) + Send + 'static,
    on_invalidation: impl Fn(Bytes) + Send + 'static,
) {
    let _keep_alive = subscriber;
    loop {
        match messages.recv().await {
            Ok(message) if message.channel.as_bytes() == channels.dropped.as_bytes() => {
                let Some(store) = store.upgrade() else { break };
                store.drop_from_l1(&message);
            }
            Ok(message) if message.channel.as_bytes() == channels.fill.as_bytes() => {
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
}

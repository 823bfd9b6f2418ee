//! Request collapsing: concurrent misses for one key make one origin request.
//!
//! Two layers. In a process, the first miss for a key starts a *flight* and later misses
//! wait on it without touching Redis. Across processes, each flight's leader takes the
//! `SET NX PX` lock in Redis; a flight that loses waits for the winner's fill notice (one
//! pub/sub subscription per process, fanned out here to the flight waiting for that key).

use crate::store::FillNotice;
use crate::store::entry::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// What a flight ended with, as its waiters see it.
#[derive(Debug, Clone)]
pub enum Landing {
    /// Still fetching.
    Pending,
    /// The entry to serve.
    Stored(Arc<Entry>),
    /// Nothing any waiter may use: each asks the origin itself.
    Failed,
}

/// The flights in this process and the keys waiting for other processes' fills.
#[derive(Default)]
pub struct Flights {
    inflight: Mutex<HashMap<String, watch::Receiver<Landing>>>,
    remote: Mutex<HashMap<String, mpsc::Sender<FillNotice>>>,
}

/// The result of joining a key's flight.
pub enum Join {
    /// No flight was running: the caller leads one and must land it.
    Lead(Flight),
    /// A flight is running: wait for its landing.
    Wait(watch::Receiver<Landing>),
}

/// A leader's handle on its flight. Dropping it without landing releases the waiters with
/// [`Landing::Failed`], so a panicking leader never strands them.
pub struct Flight {
    flights: Arc<Flights>,
    key: String,
    sender: watch::Sender<Landing>,
    /// Whether the flight has left the map already.
    left: bool,
}

impl Flights {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Joins the flight for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut inflight = self.inflight.lock().expect("flight map poisoned");
        if let Some(receiver) = inflight.get(key) {
            return Join::Wait(receiver.clone());
        }
        let (sender, receiver) = watch::channel(Landing::Pending);
        inflight.insert(key.to_string(), receiver);
        Join::Lead(Flight {
            flights: Arc::clone(self),
            key: key.to_string(),
            sender,
            left: false,
        })
    }

    /// Number of flights in progress (for tests and status).
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().expect("flight map poisoned").len()
    }

    /// Registers interest in another process's fill of `key`; notices arrive on the receiver
    /// until it is dropped.
    pub fn await_remote(self: &Arc<Self>, key: &str) -> RemoteWait {
        let (sender, receiver) = mpsc::channel(4);
        self.remote
            .lock()
            .expect("remote map poisoned")
            .insert(key.to_string(), sender);
        RemoteWait {
            flights: Arc::clone(self),
            key: key.to_string(),
            receiver,
        }
    }

    /// Delivers a fill notice from Redis pub/sub to the flight waiting for its key, if any.
    pub fn deliver(&self, notice: FillNotice) {
        let remote = self.remote.lock().expect("remote map poisoned");
        if let Some(sender) = remote.get(notice.key()) {
            let _ = sender.try_send(notice);
        }
    }
}

impl Flight {
    /// Ends the flight: the next miss starts a new flight, and waiters see `landing`. The
    /// flight leaves the map first, so a waiter that decides to fly again never rejoins it.
    pub fn land(mut self, landing: Landing) {
        self.leave();
        self.sender.send_replace(landing);
    }

    /// Removes this flight (and only this one) from the map.
    fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        let mut inflight = self.flights.inflight.lock().expect("flight map poisoned");
        if inflight
            .get(&self.key)
            .is_some_and(|receiver| receiver.same_channel(&self.sender.subscribe()))
        {
            inflight.remove(&self.key);
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.leave();
        if matches!(*self.sender.borrow(), Landing::Pending) {
            self.sender.send_replace(Landing::Failed);
        }
    }
}

/// Interest in another process's fill of one key.
pub struct RemoteWait {
    flights: Arc<Flights>,
    key: String,
    receiver: mpsc::Receiver<FillNotice>,
}

impl RemoteWait {
    /// The next notice for the key; `None` only if the registry went away.
    pub async fn next(&mut self) -> Option<FillNotice> {
        self.receiver.recv().await
    }
}

impl Drop for RemoteWait {
    fn drop(&mut self) {
        self.flights
            .remote
            .lock()
            .expect("remote map poisoned")
            .remove(&self.key);
    }
}

/// Waits until a flight lands and returns its landing.
pub async fn landing(mut receiver: watch::Receiver<Landing>) -> Landing {
    match receiver.wait_for(|l| !matches!(l, Landing::Pending)).await {
        Ok(landing) => landing.clone(),
        Err(_) => Landing::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_join_waits_and_sees_the_landing() {
        let flights = Flights::new();
        let Join::Lead(flight) = flights.join("k") else {
            panic!("first join leads")
        };
        let Join::Wait(receiver) = flights.join("k") else {
            panic!("second join waits")
        };
        let waiter = tokio::spawn(landing(receiver));
        flight.land(Landing::Failed);
        assert!(matches!(waiter.await.unwrap(), Landing::Failed));
        assert_eq!(flights.in_flight(), 0);
        assert!(matches!(flights.join("k"), Join::Lead(_)));
    }

    #[tokio::test]
    async fn dropped_leader_releases_waiters() {
        let flights = Flights::new();
        let Join::Lead(flight) = flights.join("k") else {
            panic!()
        };
        let Join::Wait(receiver) = flights.join("k") else {
            panic!()
        };
        drop(flight);
        assert!(matches!(landing(receiver).await, Landing::Failed));
    }

    #[tokio::test]
    async fn remote_notices_reach_only_their_key() {
        let flights = Flights::new();
        let mut wait = flights.await_remote("a");
        flights.deliver(FillNotice::Stored("b".into()));
        flights.deliver(FillNotice::Stored("a".into()));
        assert_eq!(wait.next().await, Some(FillNotice::Stored("a".into())));
        drop(wait);
        flights.deliver(FillNotice::Stored("a".into()));
    }
}

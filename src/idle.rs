//! Closing connections that go quiet, and every connection on shutdown, without a timer or
//! a clock read per request.
//!
//! Each connection's stream counts the reads and writes that moved bytes (a plain store into
//! a counter only its own task writes). One watcher task per listener looks at every open
//! connection a few times per `idle_timeout`: a connection whose count has not moved for
//! `idle_timeout` is told to close, which it does after the response in progress, if any
//! (an idle HTTP/1 connection closes at once, HTTP/2 gets GOAWAY). Shutdown tells all of
//! them the same way. Telling is a flag and a wakeup; the connection's task looks at the
//! flag when it next runs.
//!
//! The first version armed a sleep per connection and read the clock on every read and
//! write: that cost about 5 % of a cached hit's CPU. A close now comes between
//! `idle_timeout` and a quarter of it later.

use atomic_waker::AtomicWaker;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The longest and shortest pause between two looks at the open connections.
const MOST_BETWEEN_LOOKS: Duration = Duration::from_secs(1);
const LEAST_BETWEEN_LOOKS: Duration = Duration::from_millis(10);

/// The open connections of one listener.
#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// What a connection's task and the watcher share.
#[derive(Default)]
pub struct Activity {
    /// Reads and writes that moved bytes, so far.
    moved: AtomicU64,
    /// Set when the connection should close once its response in progress is done.
    close: AtomicBool,
    /// The connection's task, woken to see `close`.
    task: AtomicWaker,
}

impl Activity {
    /// Whether the connection was told to close. Registers the task first, so that a
    /// `close` set after this look still wakes it.
    pub fn told_to_close(&self, cx: &Context<'_>) -> bool {
        self.task.register(cx.waker());
        self.close.load(Ordering::Acquire)
    }

    fn tell_to_close(&self) {
        self.close.store(true, Ordering::Release);
        self.task.wake();
    }

    fn moved(&self) {
        // Only the connection's own task writes this: no read-modify-write needed.
        let moved = self.moved.load(Ordering::Relaxed);
        self.moved.store(moved.wrapping_add(1), Ordering::Relaxed);
    }

    /// Counts a write that moved bytes, and passes its result on.
    fn count_written(&self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        result
    }
}

/// A connection's place among the open ones; leaves them when dropped.
pub struct Registration {
    connections: Arc<Connections>,
    id: u64,
    pub activity: Arc<Activity>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections
            .open
            .lock()
            .expect("connections poisoned")
            .remove(&self.id);
    }
}

impl Connections {
    /// Adds a connection.
    pub fn register(self: &Arc<Self>) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::default());
        self.open
            .lock()
            .expect("connections poisoned")
            .insert(id, Arc::clone(&activity));
        Registration {
            connections: Arc::clone(self),
            id,
            activity,
        }
    }

    /// Tells every open connection to close after its response in progress.
    pub fn close_all(&self) {
        for activity in self.open.lock().expect("connections poisoned").values() {
            activity.tell_to_close();
        }
    }

    /// Tells connections that moved nothing for `idle` to close; runs until dropped.
    pub async fn close_idle(self: Arc<Self>, idle: Duration) {
        let between = (idle / 4).clamp(LEAST_BETWEEN_LOOKS, MOST_BETWEEN_LOOKS);
        // Per connection: its count when last looked at, and since when it has been that.
        let mut seen: HashMap<u64, (u64, Instant)> = HashMap::new();
        loop {
            tokio::time::sleep(between).await;
            let open: Vec<(u64, Arc<Activity>)> = self
                .open
                .lock()
                .expect("connections poisoned")
                .iter()
                .map(|(id, activity)| (*id, Arc::clone(activity)))
                .collect();
            let now = Instant::now();
            let mut next = HashMap::with_capacity(open.len());
            for (id, activity) in open {
                let moved = activity.moved.load(Ordering::Relaxed);
                let since = match seen.get(&id) {
                    Some(&(before, since)) if before == moved => since,
                    _ => now,
                };
                if now.duration_since(since) >= idle {
                    tracing::debug!("closing an idle connection");
                    activity.tell_to_close();
                }
                next.insert(id, (moved, since));
            }
            seen = next;
        }
    }
}

/// A stream that counts the reads and writes that moved bytes.
pub struct Tracked<S> {
    pub inner: S,
    pub activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.moved();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.activity.count_written(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.activity.count_written(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(activity: &Activity) -> bool {
        activity.close.load(Ordering::Acquire)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_moves_nothing_for_the_idle_time_is_told_to_close() {
        let connections = Arc::new(Connections::default());
        let quiet = connections.register();
        let busy = connections.register();
        let watcher = tokio::spawn(Arc::clone(&connections).close_idle(Duration::from_secs(4)));
        for _ in 0..7 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            busy.activity.moved();
        }
        assert!(!told(&quiet.activity), "3.5 s is not yet idle");
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            busy.activity.moved();
        }
        assert!(told(&quiet.activity), "idle for over 4 s");
        assert!(!told(&busy.activity), "moving all along");
        watcher.abort();
    }

    #[tokio::test]
    async fn close_all_tells_every_open_connection_and_a_dropped_one_leaves() {
        let connections = Arc::new(Connections::default());
        let one = connections.register();
        let two = connections.register();
        drop(two);
        assert_eq!(connections.open.lock().unwrap().len(), 1);
        connections.close_all();
        assert!(told(&one.activity));
    }
}

//! Closing connections that go quiet or stop reading, and every connection on shutdown,
//! without a timer or a clock read per request.
//!
//! Each connection's stream counts the reads and writes that moved bytes (a plain store into
//! a counter only its own task writes), and notes whether its last write was refused for
//! want of room (the client stopped reading). One watcher task per listener looks at every
//! open connection a few times per `idle_timeout` (or `send_timeout`, if shorter):
//!
//! - a connection whose count has not moved for `idle_timeout` is told to close, which it
//!   does after the response in progress, if any (an idle HTTP/1 connection closes at once,
//!   HTTP/2 gets GOAWAY);
//! - a connection whose writes are blocked and have moved nothing for `send_timeout` is
//!   dropped at once, with the response it was sending (its memory, and a streamed pass's
//!   origin connection, go with it): the response in progress would never finish;
//! - an HTTP/2 connection (known by its preface) counts its streams' progress, not bytes
//!   (PINGs and window updates alone do not keep it open; see `send_timeout`), and one told
//!   to close that then makes no progress for `send_timeout` is dropped.
//!
//! Shutdown tells all of them the same way. Telling is a flag and a wakeup; the connection's
//! task looks at the flags when it next runs.
//!
//! The first version armed a sleep per connection and read the clock on every read and
//! write: that cost about 5 % of a cached hit's CPU. A close now comes between the timeout
//! and a quarter of it later.

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
    /// Progress so far: reads and writes that moved bytes, or on HTTP/2, stream events.
    moved: AtomicU64,
    /// Writes that moved bytes, so far.
    written: AtomicU64,
    /// Whether the last write found no room (the client is not reading).
    write_blocked: AtomicBool,
    /// An HTTP/2 connection: `moved` counts its streams' progress, not bytes.
    by_streams: AtomicBool,
    /// Set when the connection should close once its response in progress is done.
    close: AtomicBool,
    /// Set when the connection must end now, response in progress or not.
    kill: AtomicBool,
    /// The connection's task, woken to see `close` and `kill`.
    task: AtomicWaker,
}

impl Activity {
    /// Whether the connection was told to close. Registers the task first, so that a
    /// `close` set after this look still wakes it.
    pub fn told_to_close(&self, cx: &Context<'_>) -> bool {
        self.task.register(cx.waker());
        self.close.load(Ordering::Acquire)
    }

    /// Whether the connection must end now (a send timeout). Call after `told_to_close`,
    /// which registers the task.
    pub fn told_to_end_now(&self) -> bool {
        self.kill.load(Ordering::Acquire)
    }

    /// Asks the connection to close after its response in progress (HTTP/2: GOAWAY).
    pub fn tell_to_close(&self) {
        self.close.store(true, Ordering::Release);
        self.task.wake();
    }

    fn tell_to_end_now(&self) {
        self.kill.store(true, Ordering::Release);
        self.task.wake();
    }

    /// From now on the connection's progress is its streams' (HTTP/2), not its bytes.
    pub fn count_streams(&self) {
        self.by_streams.store(true, Ordering::Relaxed);
    }

    /// A stream of an HTTP/2 connection made progress (started, or moved its response on).
    /// Stream tasks call this from any thread, hence the read-modify-write.
    pub fn stream_moved(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    fn bytes_moved(&self) {
        if self.by_streams.load(Ordering::Relaxed) {
            return;
        }
        // Only the connection's own task writes this for byte counts: no read-modify-write.
        let moved = self.moved.load(Ordering::Relaxed);
        self.moved.store(moved.wrapping_add(1), Ordering::Relaxed);
    }

    /// Counts a write that moved bytes, notes one that found no room, and passes its
    /// result on.
    fn count_written(&self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.bytes_moved();
                let written = self.written.load(Ordering::Relaxed);
                self.written
                    .store(written.wrapping_add(1), Ordering::Relaxed);
                self.write_blocked.store(false, Ordering::Relaxed);
            }
            Poll::Pending => self.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(_) => self.write_blocked.store(false, Ordering::Relaxed),
        }
        result
    }
}

/// What the watcher remembers of a connection between two looks.
struct Seen {
    moved: u64,
    /// Since when `moved` has had this value.
    moved_since: Instant,
    written: u64,
    /// Since when `written` has had this value.
    written_since: Instant,
    /// When the watcher first saw the connection told to close.
    closing_since: Option<Instant>,
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

    /// Tells connections that moved nothing for `idle` to close, and ends those that could
    /// not send for `send` (see the module docs); runs until dropped.
    pub async fn watch(self: Arc<Self>, idle: Duration, send: Duration) {
        let between = (idle.min(send) / 4).clamp(LEAST_BETWEEN_LOOKS, MOST_BETWEEN_LOOKS);
        let mut seen: HashMap<u64, Seen> = HashMap::new();
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
                let written = activity.written.load(Ordering::Relaxed);
                let before = seen.get(&id);
                let moved_since = match before {
                    Some(b) if b.moved == moved => b.moved_since,
                    _ => now,
                };
                let written_since = match before {
                    Some(b) if b.written == written => b.written_since,
                    _ => now,
                };
                let closing = activity.close.load(Ordering::Acquire);
                let closing_since =
                    closing.then(|| before.and_then(|b| b.closing_since).unwrap_or(now));
                if now.duration_since(moved_since) >= idle && !closing {
                    tracing::debug!("closing an idle connection");
                    activity.tell_to_close();
                }
                let blocked = activity.write_blocked.load(Ordering::Relaxed)
                    && now.duration_since(written_since) >= send;
                // An HTTP/2 connection told to close whose streams then stand still.
                let stuck = activity.by_streams.load(Ordering::Relaxed)
                    && closing_since
                        .is_some_and(|at| now.duration_since(at.max(moved_since)) >= send);
                if (blocked || stuck) && !activity.kill.load(Ordering::Relaxed) {
                    tracing::debug!(
                        blocked,
                        "ending a connection that could not send for send_timeout"
                    );
                    metrics::counter!("cachalot_send_timeouts_total", "scope" => "connection")
                        .increment(1);
                    activity.tell_to_end_now();
                }
                next.insert(
                    id,
                    Seen {
                        moved,
                        moved_since,
                        written,
                        written_since,
                        closing_since,
                    },
                );
            }
            seen = next;
        }
    }
}

/// The start of the HTTP/2 client preface (RFC 9113 §3.4); no HTTP/1 request starts so.
const H2_PREFACE_START: &[u8; 4] = b"PRI ";

/// A stream that counts the reads and writes that moved bytes.
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// How many of the first bytes read matched [`H2_PREFACE_START`]; past its length once
    /// the protocol is known. An HTTP/2 connection counts its streams' progress from its
    /// first bytes on, so one that only sends PINGs (and opens no stream) goes idle too.
    sniffed: usize,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            sniffed: 0,
        }
    }

    fn sniff(&mut self, read: &[u8]) {
        for &byte in read {
            if self.sniffed >= H2_PREFACE_START.len() {
                break;
            }
            if byte != H2_PREFACE_START[self.sniffed] {
                self.sniffed = usize::MAX;
                return;
            }
            self.sniffed += 1;
        }
        if self.sniffed == H2_PREFACE_START.len() {
            self.activity.count_streams();
            self.sniffed = usize::MAX;
        }
    }
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
            this.activity.bytes_moved();
            if this.sniffed <= H2_PREFACE_START.len() {
                this.sniff(&buf.filled()[before..]);
            }
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
        let watcher = tokio::spawn(
            Arc::clone(&connections).watch(Duration::from_secs(4), Duration::from_secs(60)),
        );
        for _ in 0..7 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            busy.activity.bytes_moved();
        }
        assert!(!told(&quiet.activity), "3.5 s is not yet idle");
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            busy.activity.bytes_moved();
        }
        assert!(told(&quiet.activity), "idle for over 4 s");
        assert!(!told(&busy.activity), "moving all along");
        watcher.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_whose_writes_stay_blocked_for_the_send_time_is_ended() {
        let connections = Arc::new(Connections::default());
        let stuck = connections.register();
        let slow = connections.register();
        let watcher = tokio::spawn(
            Arc::clone(&connections).watch(Duration::from_secs(120), Duration::from_secs(4)),
        );
        let _ = stuck.activity.count_written(Poll::Pending);
        for _ in 0..7 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // A slow reader: blocked again and again, but each time something moved.
            let _ = slow.activity.count_written(Poll::Ready(Ok(1)));
            let _ = slow.activity.count_written(Poll::Pending);
        }
        assert!(
            !stuck.activity.kill.load(Ordering::Acquire),
            "3.5 s is not yet"
        );
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = slow.activity.count_written(Poll::Ready(Ok(1)));
            let _ = slow.activity.count_written(Poll::Pending);
        }
        assert!(
            stuck.activity.kill.load(Ordering::Acquire),
            "blocked for over 4 s"
        );
        assert!(
            !slow.activity.kill.load(Ordering::Acquire),
            "writing all along"
        );
        assert!(
            !told(&stuck.activity),
            "not idle: ended, not asked to close"
        );
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

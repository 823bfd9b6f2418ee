//! HTTP/2 streams that stop moving, and clients that reset streams the proxy already took.
//!
//! On HTTP/2 a client that stops reading does not block the socket: it just opens no
//! flow-control window, and hyper keeps the response (for a hit, the whole entry) waiting
//! for room that never comes, while PINGs keep the connection busy. So each stream runs as a
//! task of its own, watched:
//!
//! - hyper spawns every stream through [`StreamExecutor`], which finds its connection
//!   (a task-local set around the connection) and wraps the stream in [`Watched`];
//! - the response body is wrapped in [`Paced`], which hands hyper at most [`CHUNK`] bytes at
//!   a time (so hyper comes back for more only once the client made room) and notes when a
//!   chunk was handed over and not yet taken;
//! - a stream whose chunk has waited `send_timeout` is dropped, which resets it (h2 sends
//!   `RST_STREAM`) and frees its body; its connection is sent GOAWAY, and is ended if its
//!   streams then stand still for `send_timeout` more (see `idle`).
//!
//! The same task-locals count streams the client resets after the proxy accepted them (the
//! request may already be at the origin): past `h2_max_resets` of them the connection gets
//! GOAWAY. hyper's own `max_pending_accept_reset_streams` only counts resets before accept.

use crate::net::body::ProxyBody;
use crate::net::connections::Activity;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The most of a body handed to hyper at once on HTTP/2, so that hyper comes back for the
/// next piece only once h2 took this one (which it does only with room in the client's
/// window, see `PipeToSendStream` in hyper).
pub const CHUNK: usize = 64 * 1024;

/// The most data h2 queues per stream ahead of the client's window (hyper's default is
/// 400 KiB). h2 takes a piece only while less than this is queued, so at most this plus one
/// [`CHUNK`] is queued at any time.
pub const SEND_BUFFER: usize = 256 * 1024;

/// The end of a large body that is handed over as copies, not slices: what h2 may still
/// hold once the stream's task is done then pins only itself, never the whole entry.
const COPIED_TAIL: usize = SEND_BUFFER + CHUNK;

tokio::task_local! {
    /// The connection whose task is running (set around every connection).
    static CONNECTION: Arc<ConnectionWatch>;
    /// The HTTP/2 stream whose task is running.
    static STREAM: Arc<StreamClock>;
}

/// What a connection's streams share: its activity, and its budget of late resets.
pub struct ConnectionWatch {
    activity: Arc<Activity>,
    send_timeout: Duration,
    /// Streams the client reset after they were accepted.
    late_resets: AtomicUsize,
    max_late_resets: usize,
}

impl ConnectionWatch {
    pub fn new(
        activity: Arc<Activity>,
        send_timeout: Duration,
        max_late_resets: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            activity,
            send_timeout,
            late_resets: AtomicUsize::new(0),
            max_late_resets,
        })
    }

    /// Runs `connection` with this watch visible to the streams it spawns.
    pub fn scope<F: Future>(self: Arc<Self>, connection: F) -> impl Future<Output = F::Output> {
        CONNECTION.scope(self, connection)
    }
}

/// A stream's send progress (when a chunk was handed to hyper and not yet taken), and its
/// connection.
struct StreamClock {
    waiting_since: Mutex<Option<Instant>>,
    connection: Arc<ConnectionWatch>,
}

impl StreamClock {
    fn new(connection: Arc<ConnectionWatch>) -> Self {
        Self {
            waiting_since: Mutex::new(None),
            connection,
        }
    }

    fn set(&self, since: Option<Instant>) {
        if since.is_none() {
            self.connection.activity.stream_moved();
        }
        *self.waiting_since.lock().expect("stream clock poisoned") = since;
    }

    fn waiting_since(&self) -> Option<Instant> {
        *self.waiting_since.lock().expect("stream clock poisoned")
    }
}

/// Spawns hyper's HTTP/2 stream tasks, each watched for send progress (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let Ok(connection) = CONNECTION.try_with(Arc::clone) else {
            tokio::spawn(stream);
            return;
        };
        connection.activity.count_streams();
        connection.activity.stream_moved();
        let clock = Arc::new(StreamClock::new(connection));
        tokio::spawn(Watched {
            stream: Box::pin(STREAM.scope(Arc::clone(&clock), stream)),
            clock,
            timer: None,
        });
    }
}

/// A stream task, dropped (and so reset) once its response stops moving for `send_timeout`.
struct Watched<F> {
    stream: Pin<Box<F>>,
    clock: Arc<StreamClock>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.stream.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let Some(since) = this.clock.waiting_since() else {
            // Not waiting on the client (the answer or the origin's next bytes are on their
            // way). The timer is kept for the next wait: at worst it wakes this task once.
            return Poll::Pending;
        };
        let connection = &this.clock.connection;
        let deadline = since + connection.send_timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        tracing::debug!("resetting an HTTP/2 stream whose client took nothing for send_timeout");
        metrics::counter!("cachalot_send_timeouts_total", "scope" => "stream").increment(1);
        connection.activity.tell_to_close();
        // Returning drops the stream: h2 resets it and frees what it held.
        Poll::Ready(())
    }
}

/// Notes, for a request on an HTTP/2 stream, whether its handler ran to the end: dropped
/// before that, the client reset the stream after the proxy accepted it.
pub struct Accepted {
    /// The request's stream (HTTP/2 only), until the handler answers.
    stream: Option<Arc<StreamClock>>,
}

impl Accepted {
    /// For the request whose handler is starting on this task.
    pub fn start() -> Self {
        Self {
            stream: STREAM.try_with(Arc::clone).ok(),
        }
    }

    /// The handler answered: wraps the body to be watched on HTTP/2.
    pub fn answered(mut self, response: http::Response<ProxyBody>) -> http::Response<Paced> {
        let clock = self.stream.take();
        response.map(|body| Paced {
            body,
            clock,
            rest: None,
        })
    }
}

impl Drop for Accepted {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let connection = &stream.connection;
        let resets = connection.late_resets.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!("cachalot_h2_late_resets_total").increment(1);
        if resets == connection.max_late_resets + 1 {
            tracing::debug!(
                resets,
                "a client reset too many accepted streams; sending GOAWAY"
            );
            connection.activity.tell_to_close();
        }
    }
}

/// A response body that, on HTTP/2, is handed over in chunks of at most [`CHUNK`] and tells
/// its stream's clock when one waits for the client. On HTTP/1 it passes frames through.
pub struct Paced {
    body: ProxyBody,
    clock: Option<Arc<StreamClock>>,
    /// What is left of a large data frame.
    rest: Option<Bytes>,
}

impl Paced {
    /// The next piece of a data frame: the frame itself when small, else [`CHUNK`] of it
    /// (copied within its last [`COPIED_TAIL`] bytes), keeping the rest.
    fn piece(&mut self, data: Bytes) -> Bytes {
        if data.len() <= CHUNK {
            return data;
        }
        self.rest = Some(data);
        self.next_of_rest().expect("a rest was just kept")
    }

    fn next_of_rest(&mut self) -> Option<Bytes> {
        let rest = self.rest.as_mut()?;
        // Whether this piece reaches into the last COPIED_TAIL bytes.
        let in_tail = rest.len() < COPIED_TAIL + CHUNK;
        let piece = rest.split_to(rest.len().min(CHUNK));
        if rest.is_empty() {
            self.rest = None;
        }
        Some(if in_tail {
            Bytes::copy_from_slice(&piece)
        } else {
            piece
        })
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(clock) = this.clock.clone() else {
            return Pin::new(&mut this.body).poll_frame(cx);
        };
        // hyper is back for more: the client took what was handed over.
        clock.set(None);
        let frame = match this.next_of_rest() {
            Some(piece) => Some(Ok(Frame::data(piece))),
            None => match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => Some(Ok(match frame.into_data() {
                    Ok(data) => Frame::data(this.piece(data)),
                    Err(frame) => frame,
                })),
                other => other,
            },
        };
        if frame.is_some() {
            clock.set(Some(Instant::now()));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.as_ref().map_or(0, |r| r.len() as u64);
        let inner = self.body.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn an_http2_body_is_handed_over_in_chunks_and_whole_with_its_tail_copied() {
        let len = COPIED_TAIL + CHUNK * 2 + 10;
        let data: Bytes = (0..len).map(|i| (i % 251) as u8).collect();
        let mut paced = Paced {
            body: ProxyBody::full(data.clone()),
            clock: Some(Arc::new(StreamClock::new(ConnectionWatch::new(
                Arc::default(),
                Duration::from_secs(60),
                20,
            )))),
            rest: None,
        };
        let within = data.as_ptr_range();
        let (mut sizes, mut copied, mut joined) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(frame) = paced.frame().await {
            let piece = frame.unwrap().into_data().unwrap();
            sizes.push(piece.len());
            copied.push(!within.contains(&piece.as_ptr()));
            joined.extend_from_slice(&piece);
        }
        assert_eq!(sizes.len(), len.div_ceil(CHUNK));
        assert!(sizes.iter().all(|&n| n <= CHUNK), "{sizes:?}");
        assert_eq!(joined, data);
        // Slices of the body until its last COPIED_TAIL bytes, copies from there.
        let slices = copied.iter().take_while(|c| !**c).count();
        assert!(copied[slices..].iter().all(|c| *c), "{copied:?}");
        let tail = len - slices * CHUNK;
        assert!((COPIED_TAIL..COPIED_TAIL + CHUNK).contains(&tail), "{tail}");
        assert!(paced.is_end_stream());
    }
}

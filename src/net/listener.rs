//! Accepting connections: the hyper server, its limits, and graceful shutdown.
//!
//! Limits that cost a client nothing to trip are enforced here, before any request reaches
//! the proxy (all from the policy's `[limits]`): a head over `max_head_size` or with more
//! than `max_headers` lines gets 431; one that takes longer than `header_timeout` to arrive
//! is dropped (slowloris); a connection silent both ways for `idle_timeout` is closed; one
//! whose client stops reading is ended after `send_timeout` (HTTP/2: per stream, see
//! `send_timeout`); past `max_connections`, new connections get a 503 and are closed; HTTP/2
//! connections are held to `h2_max_streams` concurrent streams, `h2_max_resets` early resets
//! (rapid reset) and as many resets of streams already accepted.
//!
//! The connection limit is a semaphore that every connection holds a permit of, which also
//! makes draining on shutdown simple: when all permits are back, every connection is done.

use crate::net::body::ProxyBody;
use crate::net::connections::{Connections, Tracked};
use crate::net::limits::Limits;
use crate::net::send_timeout::{Accepted, ConnectionWatch, StreamExecutor};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// How long in-flight requests may take to finish once shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections being refused at once (each is answered and closed within a second or two);
/// beyond this, extra connections over the limit are closed without an answer.
const REFUSING_AT_ONCE: usize = 64;

/// What a connection over `max_connections` is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
content-length: 36\r\n\
retry-after: 1\r\n\
connection: close\r\n\
\r\n\
cachalot: too many open connections\n";

/// Serves `handler` on `listener` until `shutdown` turns true, then drains open connections.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(StreamExecutor);
    builder
        .http1()
        // Without a timer the header read timeout is silently off.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head_size)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_pending_accept_reset_streams(limits.h2_max_resets)
        // Stated, not left to hyper's default: with `h2_max_streams` it bounds what one
        // connection's queued (window-blocked) data can hold.
        .max_send_buf_size(crate::net::send_timeout::SEND_BUFFER)
        .max_header_list_size(limits.max_head_size as u32);

    // Registered at zero, so the family exists (and rate() works) before the first refusal.
    metrics::counter!("cachalot_connections_refused_total").increment(0);
    for scope in ["connection", "stream"] {
        metrics::counter!("cachalot_send_timeouts_total", "scope" => scope).increment(0);
    }
    metrics::counter!("cachalot_h2_late_resets_total").increment(0);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let connections = Arc::new(Connections::default());
    let idle =
        tokio::spawn(Arc::clone(&connections).watch(limits.idle_timeout, limits.send_timeout));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            metrics::counter!("cachalot_connections_refused_total").increment(1);
            if let Ok(slot) = Arc::clone(&refusing).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(slot);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let response = handler(request, peer);
            async move {
                let accepted = Accepted::start();
                Ok::<_, Infallible>(accepted.answered(response.await))
            }
        });
        let registration = connections.register();
        let watch = ConnectionWatch::new(
            Arc::clone(&registration.activity),
            limits.send_timeout,
            limits.h2_max_resets,
        );
        let io = TokioIo::new(Tracked::new(stream, Arc::clone(&registration.activity)));
        let connection = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        tokio::spawn(watch.scope(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            let mut closing = false;
            let result = std::future::poll_fn(|cx| {
                // Idle, or shutting down: ends the connection once the response in progress
                // (if any) is done. An idle HTTP/1 connection closes at once, HTTP/2 gets GOAWAY.
                if !closing && registration.activity.told_to_close(cx) {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                // The client stopped taking what it asked for: the connection, with its
                // response in progress, is dropped now.
                if registration.activity.told_to_end_now() {
                    return Poll::Ready(Ok(()));
                }
                connection.as_mut().poll(cx)
            })
            .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        }));
    }
    idle.abort();
    connections.close_all();
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// Answers a connection over the limit with 503 and closes it. The request is read (up to
/// a bound) after the answer, so the client sees the 503 rather than a reset.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

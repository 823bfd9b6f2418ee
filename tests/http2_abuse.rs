//! HTTP/2 clients that cost the proxy or the origin without taking anything, with the `h2`
//! crate as a raw client:
//!
//! - a client that opens no flow-control window for cached entries it asked for, and keeps
//!   the connection busy with PINGs: each stream is reset after `send_timeout`, and the
//!   connection does not outlive it;
//! - a client that resets streams whose requests are already at the origin: each origin
//!   connection is let go of at once, and past `h2_max_resets` such resets the connection
//!   gets GOAWAY. The origin counts requests and open connections exactly.

mod support;

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::prometheus::counter;
use support::{Origin, RedisServer, Reply, Stack, get, pattern, start_proxy_with};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A GET for the one host the test proxies serve.
fn h2_get(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://{}{path}", support::HOST))
        .body(())
        .unwrap()
}

const STREAMS: usize = 8;

#[tokio::test]
async fn a_client_that_opens_no_window_is_reset_and_cannot_keep_the_connection_with_pings() {
    let origin = Origin::start(|_, _| Reply::ok(pattern(1024 * 1024))).await;
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(
        r#"
[limits]
send_timeout = "1s"
idle_timeout = "60s"

[[route]]
name = "big"
match = "/api/big/{id}"
ttl = "1m"
"#,
    )
    .origin(origin)
    .start()
    .await;
    assert!(get(proxy.addr(), "/api/big/1", &[]).await.stored());
    // A client that reads gets the entry whole, handed over in pieces.
    let (whole, reader) = h2::client::handshake(TcpStream::connect(proxy.addr()).await.unwrap())
        .await
        .expect("h2 handshake");
    let reader = tokio::spawn(reader);
    let (response, _) = whole
        .ready()
        .await
        .unwrap()
        .send_request(h2_get("/api/big/1"), true)
        .unwrap();
    let mut body = response.await.unwrap().into_body();
    let mut received = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        received.extend_from_slice(&chunk);
    }
    assert!(
        received == pattern(1024 * 1024),
        "the entry arrived changed"
    );
    reader.abort();

    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (client, mut connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(stream)
        .await
        .expect("h2 handshake");
    let mut pings = connection.ping_pong().expect("ping_pong");
    let connection = tokio::spawn(connection);
    // PINGs all along: the connection stays busy, but takes nothing.
    let pinging = tokio::spawn(async move {
        while pings.ping(h2::Ping::opaque()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let started = Instant::now();
    let mut client = client.ready().await.unwrap();
    let mut responses = Vec::new();
    for _ in 0..STREAMS {
        let (response, _) = client.send_request(h2_get("/api/big/1"), true).unwrap();
        responses.push(response);
        client = client.ready().await.unwrap();
    }
    for response in responses {
        let response = response
            .await
            .expect("a response head (not flow-controlled)");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        match tokio::time::timeout(Duration::from_secs(10), body.data()).await {
            Ok(Some(Err(e))) => assert_eq!(e.reason(), Some(h2::Reason::CANCEL), "{e}"),
            other => panic!("the stream was not reset: {other:?}"),
        }
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The connection ends although PINGs keep coming.
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the connection outlived send_timeout")
        .unwrap()
        .ok();
    pinging.abort();
    assert_eq!(
        counter(
            proxy.admin_addr(),
            "cachalot_send_timeouts_total{scope=\"stream\"}"
        )
        .await,
        STREAMS as u64
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_only_sends_pings_goes_idle() {
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::start("[limits]\nidle_timeout = \"1s\"\n").await;
    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (_client, mut connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    let mut pings = connection.ping_pong().expect("ping_pong");
    let started = Instant::now();
    let connection = tokio::spawn(connection);
    let pinging = tokio::spawn(async move {
        let mut answered = 0;
        while pings.ping(h2::Ping::opaque()).await.is_ok() {
            answered += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        answered
    });
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("PINGs kept the connection open past idle_timeout")
        .unwrap()
        .ok();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        pinging.await.unwrap() > 0,
        "the proxy answered PINGs meanwhile"
    );
    proxy.shutdown().await;
}

/// An origin that never answers, counting requests, connections accepted and still open
/// (one is let go of when the proxy closes it).
struct SilentOrigin {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    changed: Arc<Notify>,
}

impl SilentOrigin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Self {
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            accepted: Arc::default(),
            open: Arc::default(),
            changed: Arc::new(Notify::new()),
        };
        let (requests, accepted, open, changed) = (
            Arc::clone(&origin.requests),
            Arc::clone(&origin.accepted),
            Arc::clone(&origin.open),
            Arc::clone(&origin.changed),
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                open.fetch_add(1, Ordering::SeqCst);
                let (requests, open, changed) = (
                    Arc::clone(&requests),
                    Arc::clone(&open),
                    Arc::clone(&changed),
                );
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            requests.fetch_add(1, Ordering::SeqCst);
                            changed.notify_waiters();
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                    changed.notify_waiters();
                });
            }
        });
        origin
    }

    /// Waits until `done` holds (checked on every change), at most 10 s.
    async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return;
            }
            tokio::time::timeout_at(deadline, changed)
                .await
                .unwrap_or_else(|_| panic!("{what}"));
        }
    }
}

#[tokio::test]
async fn resets_of_streams_already_at_the_origin_free_it_and_are_budgeted() {
    let redis = RedisServer::start();
    let origin = SilentOrigin::start().await;
    let proxy = start_proxy_with(origin.addr, &redis.url(), "[limits]\nh2_max_resets = 5\n").await;

    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let (response, stream) = client
            .send_request(h2_get(&format!("/slow/{i}")), true)
            .unwrap();
        streams.push((response, stream));
        client = client.ready().await.unwrap();
    }
    origin
        .until("the requests did not reach the origin", |o| {
            o.requests.load(Ordering::SeqCst) == STREAMS
        })
        .await;
    for (_, stream) in &mut streams {
        stream.send_reset(h2::Reason::CANCEL);
    }
    // Each request's origin connection is let go of: nobody is waiting for its answer.
    origin
        .until("origin connections are still held", |o| {
            o.open.load(Ordering::SeqCst) == 0
        })
        .await;
    // Past h2_max_resets resets of accepted streams, the connection gets GOAWAY and ends.
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("no GOAWAY after more than h2_max_resets resets")
        .unwrap()
        .ok();
    assert!(client.ready().await.is_err(), "new streams after GOAWAY");
    assert_eq!(origin.requests.load(Ordering::SeqCst), STREAMS);
    assert_eq!(origin.accepted.load(Ordering::SeqCst), STREAMS);
    assert_eq!(
        counter(proxy.admin_addr(), "cachalot_h2_late_resets_total").await,
        STREAMS as u64
    );
    proxy.shutdown().await;
}

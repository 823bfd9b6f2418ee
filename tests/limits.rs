//! The `[limits]` section: each limit trips with its own status, over real sockets, and the
//! requests it stops never reach the origin.
//!
//! - `max_body`: 413 when `Content-Length` declares more (origin never asked); a chunked
//!   body that goes over is cut off, answered 413 and the connection closed; a body within
//!   the limit streams through whole;
//! - `max_head_size` and `max_headers`: 431;
//! - `header_timeout`: a head that never completes is dropped (slowloris);
//! - `idle_timeout`: a keep-alive connection that goes quiet is closed;
//! - `max_connections`: one more connection gets 503 and is closed; a freed slot is reused;
//! - HTTP/2: the advertised `h2_max_streams`, and a flood of streams reset at once (rapid
//!   reset) ends in GOAWAY while other clients are still served.
//!
//! Bounds on time are generous (seconds where the limit is 1 s): they check that the limit
//! acts, not how fast.

mod support;

use bytes::Bytes;
use http::Method;
use std::time::{Duration, Instant};
use support::{Stack, get, pattern, raw, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROUTES: &str = r#"
[[route]]
name = "item"
match = "/api/items/{id}"
ttl = "1m"
"#;

fn with_limits(limits: &str) -> String {
    format!("[limits]\n{limits}\n{ROUTES}")
}

/// Reads from `stream` until it is closed or `wait` passes; returns what came and whether
/// the proxy closed the connection.
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&reply).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&reply).into_owned(), true),
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_declared_body_over_max_body_gets_413_without_asking_the_origin() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(&with_limits(r#"max_body = "1KiB""#)).await;
    let over = send(
        proxy.addr(),
        Method::POST,
        "/api/items/1",
        &[],
        pattern(1025),
    )
    .await;
    assert_eq!(over.status, 413);
    assert!(over.text().contains("max_body"), "{}", over.text());
    assert!(over.cache_status().contains("body-too-large"));
    assert_eq!(origin.count(), 0);

    let within = send(
        proxy.addr(),
        Method::POST,
        "/api/items/1",
        &[],
        pattern(1024),
    )
    .await;
    assert_eq!(within.status, 200);
    assert_eq!(origin.seen()[0].body, pattern(1024));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_streamed_body_over_max_body_is_cut_off_with_413_and_the_connection_closed() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(&with_limits(r#"max_body = "1KiB""#)).await;
    let chunk = "a".repeat(512);
    let mut request = String::from(
        "POST /api/items/1 HTTP/1.1\r\nHost: cachalot.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..4 {
        request.push_str(&format!("200\r\n{chunk}\r\n"));
    }
    request.push_str("0\r\n\r\n");
    // No `Connection: close`: if the proxy answers and then closes, it closed on purpose.
    let reply = raw(proxy.addr(), request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    // The origin never received a complete 2 KiB body.
    for seen in origin.seen() {
        assert!(
            seen.body.len() <= 1024,
            "{} bytes reached the origin",
            seen.body.len()
        );
    }

    // Chunked within the limit streams through whole.
    let small =
        "POST /api/items/1 HTTP/1.1\r\nHost: cachalot.test\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n200\r\n"
            .to_string()
            + &chunk
            + "\r\n0\r\n\r\n";
    let reply = raw(proxy.addr(), small.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(origin.seen().iter().any(|s| s.body.len() == 512));
    proxy.shutdown().await;
}

/// A request head with `count` extra headers of `size` bytes each.
fn head(count: usize, size: usize) -> String {
    let mut text =
        String::from("GET /api/items/1 HTTP/1.1\r\nHost: cachalot.test\r\nConnection: close\r\n");
    for i in 0..count {
        text.push_str(&format!("x-h{i}: {}\r\n", "v".repeat(size)));
    }
    text + "\r\n"
}

#[tokio::test]
async fn a_head_over_max_head_size_gets_431() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(&with_limits(r#"max_head_size = "8KiB""#)).await;
    let over = raw(proxy.addr(), head(5, 2048).as_bytes()).await;
    assert!(over.starts_with("HTTP/1.1 431"), "{over}");
    let within = raw(proxy.addr(), head(5, 1024).as_bytes()).await;
    assert!(within.starts_with("HTTP/1.1 200"), "{within}");
    assert_eq!(origin.count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn more_headers_than_max_headers_gets_431() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(&with_limits("max_headers = 20")).await;
    let over = raw(proxy.addr(), head(25, 4).as_bytes()).await;
    assert!(over.starts_with("HTTP/1.1 431"), "{over}");
    let within = raw(proxy.addr(), head(10, 4).as_bytes()).await;
    assert!(within.starts_with("HTTP/1.1 200"), "{within}");
    assert_eq!(origin.count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_head_that_never_completes_is_dropped_after_header_timeout() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(&with_limits(r#"header_timeout = "1s""#)).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let started = Instant::now();
    // Slowloris: a head that starts, then trickles a header line now and then.
    stream
        .write_all(b"GET /api/items/1 HTTP/1.1\r\nHost: cachalot.test\r\n")
        .await
        .unwrap();
    let trickle = async {
        for i in 0..30 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if stream
                .write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(12), trickle).await;
    let (reply, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        closed,
        "the connection is still open after {:?}",
        started.elapsed()
    );
    assert!(!reply.contains("200 OK"), "{reply}");
    println!(
        "slowloris connection closed after about {:?}",
        started.elapsed()
    );
    assert_eq!(origin.count(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::start(&with_limits(
        "idle_timeout = \"1s\"\nheader_timeout = \"60s\"",
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(b"GET /api/items/1 HTTP/1.1\r\nHost: cachalot.test\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // The response comes, then nothing: well before the 60 s header timeout, the idle
    // timeout closes the connection.
    let (reply, closed) = read_until_closed(&mut stream, Duration::from_secs(20)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(closed, "still open after {:?}", started.elapsed());
    println!("idle connection closed after about {:?}", started.elapsed());
    proxy.shutdown().await;
}

#[tokio::test]
async fn connections_over_max_connections_get_503_and_a_freed_slot_is_reused() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(&with_limits("max_connections = 2")).await;
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let _second = TcpStream::connect(proxy.addr()).await.unwrap();
    // Both are accepted (a request on the first is answered) ...
    first
        .write_all(b"GET /api/items/1 HTTP/1.1\r\nHost: cachalot.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // ... and a third is refused.
    let third = raw(
        proxy.addr(),
        b"GET /api/items/2 HTTP/1.1\r\nHost: cachalot.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    assert!(third.contains("too many open connections"), "{third}");
    assert_eq!(origin.count_of("/api/items/2"), 0);

    // Once one closes, its slot serves the next connection.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let next = raw(
            proxy.addr(),
            b"GET /api/items/3 HTTP/1.1\r\nHost: cachalot.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        if next.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed: {next}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.shutdown().await;
}

/// An HTTP/2 (prior knowledge) client connection to the proxy.
async fn h2_client(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    (client, tokio::spawn(connection))
}

fn h2_get(_addr: std::net::SocketAddr, path: &str) -> http::Request<()> {
    http::Request::get(format!("http://{}{path}", support::HOST))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn http2_advertises_max_concurrent_streams() {
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::start(&with_limits("h2_max_streams = 7")).await;
    let (client, _connection) = h2_client(proxy.addr()).await;
    let mut client = client.ready().await.unwrap();
    let (response, _) = client
        .send_request(h2_get(proxy.addr(), "/api/items/1"), true)
        .unwrap();
    let response = response.await.expect("an h2 response");
    assert_eq!(response.status(), 200);
    // The server's SETTINGS have arrived by the time it answered.
    assert_eq!(client.current_max_send_streams(), 7);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_http2_rapid_reset_flood_ends_in_goaway_and_others_are_still_served() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(&with_limits("h2_max_resets = 10")).await;
    let (client, connection) = h2_client(proxy.addr()).await;
    let mut client = client.ready().await.unwrap();
    let mut opened = 0;
    // Open and reset at once, as fast as the client allows.
    for i in 0..5000 {
        let Ok(mut ready) = client.clone().ready().await else {
            break;
        };
        match ready.send_request(h2_get(proxy.addr(), &format!("/flood/{i}")), false) {
            Ok((_, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                opened += 1;
            }
            Err(_) => break,
        }
        client = ready;
    }
    // The server ends the connection instead of serving it.
    let ended = tokio::time::timeout(Duration::from_secs(15), connection).await;
    let ended = ended.expect("the flooding connection was not closed");
    println!(
        "flood: {opened} streams opened and reset; origin saw {} of them; connection ended with {ended:?}",
        origin.count()
    );
    // GOAWAY with ENHANCE_YOUR_CALM, or a broken pipe when the client was still writing
    // after the server closed: either way the server ended it.
    assert!(matches!(&ended, Ok(Err(_))), "{ended:?}");
    assert!(
        origin.count() < opened / 2,
        "most reset streams reached the origin"
    );
    // Another client is still served.
    let got = get(proxy.addr(), "/api/items/1", &[]).await;
    assert_eq!(got.status, 200);
    proxy.shutdown().await;
}

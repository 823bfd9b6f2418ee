//! Clients that ask for a large response and stop reading (HTTP/1.1): after `send_timeout`
//! with no write progress the connection is ended, its slot and memory go back, and a
//! streamed pass lets go of its origin connection.
//!
//! The slow readers are real sockets with a small receive buffer that never read. Each test
//! sets `max_connections` to the number of slow readers, so "new clients are served again"
//! proves the slots came back; the exact count of send timeouts comes from `/metrics`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{Origin, RedisServer, Reply, get, pattern, raw, start_proxy, start_proxy_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

const SEND_TIMEOUT: Duration = Duration::from_secs(1);
const BIG: usize = 12 * 1024 * 1024;

fn policy(max_connections: usize) -> String {
    format!(
        r#"
[limits]
send_timeout = "1s"
idle_timeout = "60s"
max_connections = {max_connections}

[[route]]
name = "big"
match = "/api/big/{{id}}"
ttl = "1m"
max_object_size = "32MiB"
"#
    )
}

/// A connection whose receive buffer is small, that sends `GET target` and never reads.
async fn slow_reader(proxy: SocketAddr, target: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    stream
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: cachalot.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream
}

/// Reads what the proxy sent until it closed the connection; panics if it stays open.
async fn drain_until_closed(stream: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Err(_) => panic!("the connection is still open after {total} bytes"),
            Ok(Ok(0)) | Ok(Err(_)) => return total,
            Ok(Ok(n)) => total += n,
        }
    }
}

/// The value of a counter line in `/metrics` (0 when absent).
async fn counter(admin: SocketAddr, line_start: &str) -> u64 {
    let metrics = get(admin, "/metrics", &[]).await.text();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(line_start))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Asks for `target` until the proxy answers 200 (a slot came back), at most 10 s.
async fn served_again(proxy: SocketAddr, target: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: cachalot.test\r\nConnection: close\r\n\r\n");
    loop {
        if raw(proxy, request.as_bytes())
            .await
            .starts_with("HTTP/1.1 200")
        {
            return;
        }
        assert!(Instant::now() < deadline, "no connection slot came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readers_that_stop_taking_a_large_hit_are_cut_off_after_send_timeout() {
    let redis = RedisServer::start();
    // Bytes that are not text: stored and sent as they are (a compressed entry would be
    // decoded per identity hit, which is not what this test is about).
    let origin = Origin::start(|_, _| Reply {
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        ..Reply::ok(pattern(BIG))
    })
    .await;
    let proxy = start_proxy(&origin, &redis, &policy(2)).await;
    let warm = get(proxy.addr(), "/api/big/1", &[]).await;
    assert_eq!(warm.body.len(), BIG);
    assert!(warm.stored());

    let started = Instant::now();
    let mut readers = vec![
        slow_reader(proxy.addr(), "/api/big/1").await,
        slow_reader(proxy.addr(), "/api/big/1").await,
    ];
    // Both slots are held by readers that take nothing.
    let refused = raw(
        proxy.addr(),
        b"GET /api/big/1 HTTP/1.1\r\nHost: cachalot.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");

    served_again(proxy.addr(), "/api/big/1").await;
    assert!(
        started.elapsed() >= SEND_TIMEOUT,
        "cut off before send_timeout: {:?}",
        started.elapsed()
    );
    for reader in &mut readers {
        let got = drain_until_closed(reader).await;
        assert!(got < BIG, "the whole body arrived ({got} bytes)");
    }
    let timeouts = counter(
        proxy.admin_addr(),
        "cachalot_send_timeouts_total{scope=\"connection\"}",
    )
    .await;
    assert_eq!(timeouts, 2);
    assert_eq!(origin.count(), 1, "every later request was a hit");
    proxy.shutdown().await;
}

/// An origin that streams an endless body (a `Content-Length` it never reaches) on every
/// connection, and counts connections still open: a connection counts as let go once the
/// proxy closed it (a read sees the end, or a write fails).
struct StreamingOrigin {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    closed: Arc<Notify>,
}

async fn streaming_origin() -> StreamingOrigin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(Notify::new());
    let (o, a, c) = (
        Arc::clone(&open),
        Arc::clone(&accepted),
        Arc::clone(&closed),
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            o.fetch_add(1, Ordering::SeqCst);
            a.fetch_add(1, Ordering::SeqCst);
            let (o, c) = (Arc::clone(&o), Arc::clone(&c));
            tokio::spawn(async move {
                let (mut reader, mut writer) = stream.into_split();
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let write = async {
                    writer
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
                        .await?;
                    let chunk = vec![b'x'; 64 * 1024];
                    loop {
                        writer.write_all(&chunk).await?;
                    }
                    #[allow(unreachable_code)]
                    Ok::<_, std::io::Error>(())
                };
                let read_end = async {
                    while let Ok(n) = reader.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                tokio::select! {
                    _ = write => {}
                    () = read_end => {}
                }
                o.fetch_sub(1, Ordering::SeqCst);
                c.notify_one();
            });
        }
    });
    StreamingOrigin {
        addr,
        open,
        accepted,
        closed,
    }
}

#[tokio::test]
async fn a_reader_that_stops_taking_a_streamed_pass_lets_go_of_its_origin_connection() {
    let redis = RedisServer::start();
    let origin = streaming_origin().await;
    let proxy = start_proxy_with(origin.addr, &redis.url(), &policy(1)).await;

    let started = Instant::now();
    let mut reader = slow_reader(proxy.addr(), "/download/large").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.open.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the pass never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The origin connection is let go of once the reader is cut off.
    tokio::time::timeout(Duration::from_secs(10), async {
        while origin.open.load(Ordering::SeqCst) > 0 {
            origin.closed.notified().await;
        }
    })
    .await
    .expect("the origin connection is still held");
    assert!(started.elapsed() >= SEND_TIMEOUT, "{:?}", started.elapsed());
    let got = drain_until_closed(&mut reader).await;
    assert!(got < 1 << 30);
    assert_eq!(origin.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(
        counter(
            proxy.admin_addr(),
            "cachalot_send_timeouts_total{scope=\"connection\"}"
        )
        .await,
        1
    );
    proxy.shutdown().await;
}

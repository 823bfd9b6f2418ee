//! Only WebSocket is tunnelled. An `h2c` upgrade (or any other) is dropped as the hop-by-hop
//! header it is and the request goes on as plain HTTP/1.1, so the client connection never
//! becomes a raw tunnel past the proxy's checks; and a 101 the proxy did not ask for is a
//! 502, never spliced. The origins here are raw sockets that log every byte they receive.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An origin that switches to whatever a request's `Upgrade` asks for (`always`: to `h2c`,
/// asked or not), and otherwise answers 200; it logs every byte it receives, on any
/// connection, before and after a switch.
async fn switching_origin(always: bool) -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let log = Arc::clone(&received);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                let mut switched = false;
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                    if switched {
                        continue;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                        pending.drain(..end + 4);
                        let asked = head
                            .lines()
                            .find_map(|l| l.strip_prefix("upgrade:"))
                            .map(|p| p.trim().to_string());
                        let protocol = if always {
                            Some("h2c".to_string())
                        } else {
                            asked
                        };
                        if let Some(protocol) = protocol {
                            let reply = format!(
                                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
                            );
                            stream.write_all(reply.as_bytes()).await.unwrap();
                            switched = true;
                            break;
                        }
                        stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
                            .await
                            .unwrap();
                    }
                }
            });
        }
    });
    (addr, log)
}

/// Reads one response head and its `Content-Length` body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert_eq!(n, 1, "closed mid-head: {}", String::from_utf8_lossy(&data));
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    data.extend_from_slice(&body);
    String::from_utf8_lossy(&data).into_owned()
}

#[tokio::test]
async fn h2c_is_never_tunnelled_and_refused_requests_stay_refused() {
    let redis = RedisServer::start();
    let (origin, log) = switching_origin(false).await;
    let proxy = support::start_proxy_with(origin, &redis.url(), "").await;

    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(
            b"GET /page HTTP/1.1\r\nHost: cachalot.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
              Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        .await
        .unwrap();
    let first = read_response(&mut client).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.ends_with("plain"), "{first}");

    // Still HTTP to the proxy: a path it refuses is refused, and never reaches the origin.
    client
        .write_all(b"GET /a%2Fsecret HTTP/1.1\r\nHost: cachalot.test\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut client).await;
    assert!(second.starts_with("HTTP/1.1 400"), "{second}");

    let seen = String::from_utf8_lossy(&log.lock().unwrap()).to_ascii_lowercase();
    assert!(!seen.contains("upgrade"), "{seen}");
    assert!(!seen.contains("http2-settings"), "{seen}");
    assert!(!seen.contains("%2f"), "{seen}");
    assert_eq!(seen.matches("get /page http/1.1").count(), 1, "{seen}");
}

#[tokio::test]
async fn a_101_the_proxy_did_not_ask_for_is_a_bad_gateway() {
    let redis = RedisServer::start();
    let (origin, log) = switching_origin(true).await;
    let proxy = support::start_proxy_with(origin, &redis.url(), "").await;

    // Asked for WebSocket, switched to h2c; and not asked at all.
    for request in [
        &b"GET /ws HTTP/1.1\r\nHost: cachalot.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        b"GET /plain HTTP/1.1\r\nHost: cachalot.test\r\n\r\n",
    ] {
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        client.write_all(request).await.unwrap();
        let reply = read_response(&mut client).await;
        assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
        // Nothing written after it reaches the origin.
        let _ = client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    }
    let reply = support::raw(
        proxy.addr(),
        b"GET /after HTTP/1.1\r\nHost: cachalot.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    let seen = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(!seen.contains("PRI * HTTP/2.0"), "{seen}");
}

#[tokio::test]
async fn a_route_with_no_upgrades_tunnels_not_even_websocket() {
    let redis = RedisServer::start();
    let (origin, log) = switching_origin(false).await;
    let routes = r#"
[[route]]
match = "/feed/{*rest}"
cache = false
upgrades = []
"#;
    let proxy = support::start_proxy_with(origin, &redis.url(), routes).await;

    let ask =
        b"GET /feed/live HTTP/1.1\r\nHost: cachalot.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(ask).await.unwrap();
    let reply = read_response(&mut client).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // Elsewhere WebSocket is tunnelled as before.
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: cachalot.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let reply = read_response(&mut client).await;
    assert!(reply.starts_with("HTTP/1.1 101"), "{reply}");
    let seen = String::from_utf8_lossy(&log.lock().unwrap()).to_ascii_lowercase();
    assert_eq!(seen.matches("upgrade: websocket").count(), 1, "{seen}");
}

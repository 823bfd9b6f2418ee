//! Protocol upgrades pass through untouched: the handshake reaches the origin with its
//! `Connection: upgrade` and `Upgrade` headers, and after the origin's 101 the proxy splices
//! the two connections, so bytes flow both ways.

mod support;

use support::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads up to the end of an HTTP head.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.expect("read head"),
            1,
            "connection closed mid-head"
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("ASCII head")
}

/// An origin that accepts one WebSocket-style upgrade and then echoes what it reads.
async fn upgrading_origin() -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await;
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await.unwrap();
        stream.write_all(&buf[..n]).await.unwrap();
        head
    });
    (addr, task)
}

#[tokio::test]
async fn websocket_upgrade_is_spliced_through() {
    let redis = RedisServer::start();
    let (origin, origin_task) = upgrading_origin().await;
    let proxy = support::start_proxy_with(origin, &redis.url(), "").await;

    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: cachalot.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );

    client.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    client.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");

    let seen = origin_task.await.unwrap().to_ascii_lowercase();
    assert!(seen.contains("upgrade: websocket"), "{seen}");
    assert!(seen.contains("connection: upgrade"), "{seen}");
    assert!(seen.contains("host: cachalot.test"), "{seen}");
}

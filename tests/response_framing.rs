//! What the proxy sends is framed truthfully, whatever the origin or Redis says.
//!
//! - An origin response with both `Content-Length` and `Transfer-Encoding` (a second response
//!   hidden in the gap, or a length larger than the chunked body) is answered 502, never
//!   stored, and the client's keep-alive connection carries exactly the responses it asked
//!   for: nothing injected.
//! - A hit's `Content-Length` is the stored body's length: an envelope forged in Redis with a
//!   lying `content-length` and a `transfer-encoding` cannot split the client's connection.
//!
//! The origin here writes hand-written bytes (no server library would send these), and the
//! client reads raw bytes from a keep-alive socket, parsing each response by its own
//! `Content-Length`, so a second response hidden in a body shows as one too many.

mod support;

use bytes::Bytes;
use cachalot::store::entry::Entry;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{RedisServer, start_proxy_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUTES: &str = r#"
[[route]]
name = "item"
match = "/api/items/{id}"
ttl = "1m"
"#;

/// What a smuggling origin hides in a body: a whole response of its own.
const INJECTED: &str =
    "HTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 22\r\n\r\n<script>evil()</script>";

/// A chunked body of one chunk holding `data`.
fn chunked(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len())
}

/// The origin's reply to a request for `target`, byte for byte.
fn origin_reply(target: &str) -> String {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n";
    match target {
        // Length 5 for "hello", then the chunked body carries a second response.
        "/api/items/both" | "/other/both" => format!(
            "{head}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunked(&format!("hello{INJECTED}"))
        ),
        // A length larger than the chunked body: a reader by length waits for bytes that
        // belong to the next response.
        "/api/items/longer" => format!(
            "{head}Transfer-Encoding: chunked\r\nContent-Length: 1000\r\n\r\n{}",
            chunked("short")
        ),
        _ => format!("{head}Content-Length: 13\r\n\r\nplain answer\n"),
    }
}

/// A keep-alive origin that answers each request with [`origin_reply`] and logs the targets.
async fn raw_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let target = head.split(' ').nth(1).unwrap_or("").to_string();
                    log.lock().unwrap().push(target.clone());
                    if stream
                        .write_all(origin_reply(&target).as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// One response read off a raw socket, framed by its own `Content-Length`.
#[derive(Debug)]
struct Framed {
    head: String,
    body: Vec<u8>,
}

impl Framed {
    fn status(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Splits everything a connection sent into responses, each framed by its one
/// `Content-Length` (a response without one, or with a `Transfer-Encoding`, fails the test).
fn split_responses(mut bytes: &[u8]) -> Vec<Framed> {
    let mut responses = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("an incomplete head: {:?}", String::from_utf8_lossy(bytes)))
            + 4;
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let lengths: Vec<&str> = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim())
            .collect();
        assert_eq!(lengths.len(), 1, "one Content-Length in {head:?}");
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding"),
            "{head:?}"
        );
        let len: usize = lengths[0].parse().unwrap();
        assert!(bytes.len() >= end + len, "a body shorter than its length");
        responses.push(Framed {
            head,
            body: bytes[end..end + len].to_vec(),
        });
        bytes = &bytes[end + len..];
    }
    responses
}

/// Sends `targets` as keep-alive GETs on one connection (the last one says `close`) and
/// returns every response the proxy sent until it closed.
async fn keep_alive(proxy: SocketAddr, targets: &[&str]) -> Vec<Framed> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let mut requests = String::new();
    for (i, target) in targets.iter().enumerate() {
        let close = if i + 1 == targets.len() {
            "Connection: close\r\n"
        } else {
            ""
        };
        requests.push_str(&format!(
            "GET {target} HTTP/1.1\r\nHost: cachalot.test\r\n{close}\r\n"
        ));
    }
    stream.write_all(requests.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("the proxy closes after the last response")
        .unwrap();
    split_responses(&reply)
}

#[tokio::test]
async fn a_response_with_both_lengths_is_refused_never_stored_and_injects_nothing() {
    let redis = RedisServer::start();
    let (origin, seen) = raw_origin().await;
    let proxy = start_proxy_with(origin, &redis.url(), ROUTES).await;

    let responses = keep_alive(
        proxy.addr(),
        &[
            "/api/items/both",
            "/api/items/longer",
            "/other/both",
            "/api/items/fine",
        ],
    )
    .await;
    let statuses: Vec<&str> = responses.iter().map(Framed::status).collect();
    // Cached route (both ways round), uncached route, then a well-framed response.
    assert_eq!(statuses, ["502", "502", "502", "200"], "{responses:#?}");
    assert_eq!(responses[3].body, b"plain answer\n");
    for response in &responses {
        assert!(response.header("x-injected").is_none(), "{response:?}");
    }
    assert_eq!(
        redis.entries().len(),
        1,
        "only the well-framed response is stored"
    );
    assert!(redis.entries()[0].contains("fine"), "{:?}", redis.entries());

    // Nothing was stored, so the next request asks the origin again and is refused again.
    let again = keep_alive(proxy.addr(), &["/api/items/both"]).await;
    assert_eq!(again[0].status(), "502");
    let asked = seen.lock().unwrap().clone();
    assert_eq!(
        asked.iter().filter(|t| *t == "/api/items/both").count(),
        2,
        "{asked:?}"
    );
    proxy.shutdown().await;
}

/// A binary-safe Redis command over RESP, for the envelope (the harness's is text-only).
async fn redis_call(redis: &RedisServer, args: &[&[u8]]) -> Vec<u8> {
    let mut stream = TcpStream::connect(redis.addr()).await.unwrap();
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).await.unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        reply.extend_from_slice(&chunk[..n]);
        // A bulk string: `$<len>\r\n<bytes>\r\n`; anything else is one line.
        if let Some(line) = reply.windows(2).position(|w| w == b"\r\n") {
            if reply[0] != b'$' {
                return reply;
            }
            let len: usize = std::str::from_utf8(&reply[1..line])
                .unwrap()
                .parse()
                .unwrap();
            if reply.len() >= line + 2 + len + 2 {
                return reply[line + 2..line + 2 + len].to_vec();
            }
        }
        assert!(n > 0, "redis closed early");
    }
}

#[tokio::test]
async fn a_forged_entry_in_redis_cannot_split_the_clients_connection() {
    let redis = RedisServer::start();
    let (origin, seen) = raw_origin().await;
    let filler = start_proxy_with(origin, &redis.url(), ROUTES).await;
    let stored = keep_alive(filler.addr(), &["/api/items/7"]).await;
    assert_eq!(stored[0].status(), "200");
    filler.shutdown().await;

    // Rewrite the stored envelope with framing headers that lie about the body.
    let key = redis.entries().pop().expect("one entry");
    let raw = redis_call(&redis, &[b"GET", key.as_bytes()]).await;
    let mut entry = Entry::decode(Bytes::from(raw)).expect("a cachalot envelope");
    let headers = &mut entry.headers;
    headers.insert("content-length", HeaderValue::from_static("5"));
    headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    headers.insert("connection", HeaderValue::from_static("keep-alive"));
    let forged = entry.encode();
    let ok = redis_call(&redis, &[b"SET", key.as_bytes(), &forged, b"KEEPTTL"]).await;
    assert_eq!(ok, b"+OK\r\n");

    // A fresh instance reads the forged envelope from Redis.
    let proxy = start_proxy_with(origin, &redis.url(), ROUTES).await;
    let responses = keep_alive(proxy.addr(), &["/api/items/7", "/api/items/7"]).await;
    assert_eq!(responses.len(), 2, "{responses:#?}");
    for response in &responses {
        assert_eq!(response.status(), "200");
        assert_eq!(response.header("content-length"), Some("13"));
        assert_eq!(response.body, b"plain answer\n");
        assert!(
            response
                .header("cache-status")
                .is_some_and(|s| s.starts_with("cachalot; hit")),
            "{response:?}"
        );
        // The forged `connection: keep-alive` is not passed on (the last says close, as asked).
        assert_ne!(
            response.header("connection"),
            Some("keep-alive"),
            "{response:?}"
        );
    }
    // A HEAD's length is the stored body's too.
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        .write_all(
            b"HEAD /api/items/7 HTTP/1.1\r\nHost: cachalot.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.contains("content-length: 13\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\n"), "{reply}");
    assert_eq!(seen.lock().unwrap().len(), 1, "served from Redis");
    proxy.shutdown().await;
}

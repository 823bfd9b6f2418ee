//! Proxy hygiene: what a well-behaved reverse proxy owes both sides, cached or not.
//!
//! The promises checked here:
//! - hop-by-hop request headers (`Connection` and the headers it names, `Keep-Alive`, `TE`,
//!   `Proxy-Authorization`) never reach the origin; hop-by-hop response headers never reach
//!   the client, on a pass, a miss or a hit;
//! - `Host` reaches the origin as the client sent it (lowercased, without `:80`); `X-Forwarded-For` gets the
//!   client's address appended, `X-Forwarded-Proto` says `http`;
//! - large bodies stream through intact both ways (5 MiB up, 5 MiB down);
//! - an origin that cannot be reached gives 502, one that is too slow 504, each with a short
//!   plain-text body saying which, on routed and unrouted paths alike;
//! - a request head over the limit (100 KiB of headers) gets 431;
//! - every response the proxy answers carries `Cache-Status` (hit, miss, pass, bypass, error).

mod support;

use bytes::Bytes;
use http::Method;
use std::net::SocketAddr;
use std::time::Duration;
use support::{Got, Origin, RedisServer, Reply, Stack, get, pattern, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = concat!(
    support::routes::credential!(),
    r#"
[[route]]
name = "profile"
match = "/api/profiles/{id}"
ttl = "5m"
"#
);

/// Fails instead of hanging when the proxy never answers (a generous bound, not a latency
/// check: "never a hang" is the promise).
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s"))
}

#[tokio::test]
async fn hop_by_hop_request_headers_never_reach_the_origin() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(ROUTES).await;
    let hop_headers = [
        ("connection", "x-custom"),
        ("x-custom", "per-connection"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
        ("x-end-to-end", "kept"),
    ];
    // A miss on a cached route (the fill), a write on a cached route, and an unrouted path.
    for (method, path) in [
        (Method::GET, "/api/credentials/abc"),
        (Method::POST, "/api/profiles/7"),
        (Method::GET, "/unrouted"),
    ] {
        let got = send(proxy.addr(), method, path, &hop_headers, Bytes::new()).await;
        assert_eq!(got.status, 200, "{path}");
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        let headers = &request.headers;
        for name in ["x-custom", "keep-alive", "te", "proxy-authorization"] {
            assert!(
                headers.get(name).is_none(),
                "{} reached the origin with {name}: {:?}",
                request.target,
                headers.get(name)
            );
        }
        for connection in headers.get_all("connection") {
            assert!(
                !connection
                    .to_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase()
                    .contains("x-custom"),
                "{}: Connection {connection:?}",
                request.target
            );
        }
        // End-to-end headers pass on writes and unrouted paths; a fill passes only what
        // cannot shape a shared response (see unkeyed_headers.rs).
        let fill = request.target == "/api/credentials/abc";
        assert_eq!(
            headers.get("x-end-to-end").is_some(),
            !fill,
            "{}",
            request.target
        );
    }
    proxy.shutdown().await;
}

/// Asserts a response carries none of the origin's hop-by-hop headers.
fn assert_no_hop_headers(got: &Got, what: &str) {
    assert!(got.headers.get("x-hop").is_none(), "{what}: x-hop leaked");
    assert!(
        got.headers.get("keep-alive").is_none(),
        "{what}: keep-alive leaked"
    );
    assert!(
        got.headers.get("proxy-connection").is_none(),
        "{what}: proxy-connection leaked"
    );
    for connection in got.headers.get_all("connection") {
        assert!(
            !connection
                .to_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .contains("x-hop"),
            "{what}: Connection {connection:?}"
        );
    }
    assert_eq!(got.header("x-end-to-end"), "kept", "{what}");
}

#[tokio::test]
async fn hop_by_hop_response_headers_never_reach_the_client() {
    let origin = Origin::start(|_, n| {
        Reply::ok(format!("{{\"n\":{n}}}"))
            .header("connection", "x-hop")
            .header("x-hop", "per-connection")
            .header("keep-alive", "timeout=5, max=100")
            .header("proxy-connection", "keep-alive")
            .header("x-end-to-end", "kept")
    })
    .await;
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;

    let miss = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(miss.cache_status().contains("fwd=uri-miss"));
    assert_no_hop_headers(&miss, "miss");
    let hit = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(hit.hit(), "{}", hit.cache_status());
    assert_no_hop_headers(&hit, "hit");
    let head_hit = send(
        proxy.addr(),
        Method::HEAD,
        "/api/credentials/abc",
        &[],
        Bytes::new(),
    )
    .await;
    assert_no_hop_headers(&head_hit, "HEAD hit");
    let pass = get(proxy.addr(), "/unrouted", &[]).await;
    assert!(pass.cache_status().ends_with("no-route"));
    assert_no_hop_headers(&pass, "pass");
    let write = send(
        proxy.addr(),
        Method::PUT,
        "/api/profiles/7",
        &[],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert!(write.cache_status().contains("fwd=method"));
    assert_no_hop_headers(&write, "write");
    proxy.shutdown().await;
}

#[tokio::test]
async fn host_reaches_the_origin_as_the_client_sent_it() {
    // Any host (no `[listen] hosts`): the client's own reaches the origin.
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).listen("").start().await;
    let host = [("host", "api.example.com:8443")];
    get(proxy.addr(), "/api/credentials/abc", &host).await;
    get(proxy.addr(), "/unrouted", &host).await;
    send(
        proxy.addr(),
        Method::DELETE,
        "/api/profiles/7",
        &host,
        Bytes::new(),
    )
    .await;
    // A client that names the proxy by its address: the origin must see that, not its own.
    let by_address = proxy.addr().to_string();
    get(
        proxy.addr(),
        "/api/credentials/def",
        &[("host", &by_address)],
    )
    .await;

    let hosts: Vec<String> = origin
        .seen()
        .iter()
        .map(|s| {
            let all: Vec<_> = s.headers.get_all("host").iter().collect();
            assert_eq!(all.len(), 1, "{}: one Host header", s.target);
            all[0].to_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        hosts,
        [
            "api.example.com:8443".to_string(),
            "api.example.com:8443".to_string(),
            "api.example.com:8443".to_string(),
            proxy.addr().to_string(),
        ]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_for_and_proto_are_added() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(ROUTES).await;
    let chain = [("x-forwarded-for", "203.0.113.7")];
    get(proxy.addr(), "/api/credentials/abc", &chain).await;
    get(proxy.addr(), "/unrouted", &chain).await;
    get(proxy.addr(), "/api/credentials/def", &[]).await;
    get(proxy.addr(), "/unrouted/fresh", &[]).await;

    let seen = origin.seen();
    let xff: Vec<&str> = seen
        .iter()
        .map(|s| s.headers["x-forwarded-for"].to_str().unwrap())
        .collect();
    assert_eq!(
        xff,
        [
            "203.0.113.7, 127.0.0.1",
            "203.0.113.7, 127.0.0.1",
            "127.0.0.1",
            "127.0.0.1"
        ]
    );
    for s in &seen {
        assert_eq!(s.headers["x-forwarded-proto"], "http", "{}", s.target);
    }
    proxy.shutdown().await;
}

/// RFC 9110 §5.3: several `X-Forwarded-For` field lines are one list. Appending the client
/// must keep every hop the earlier proxies recorded, not only the first line's.
#[tokio::test]
async fn x_forwarded_for_keeps_every_earlier_hop() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(ROUTES).await;
    let two_lines = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-for", "198.51.100.2"),
    ];
    get(proxy.addr(), "/unrouted", &two_lines).await;
    get(proxy.addr(), "/api/credentials/abc", &two_lines).await;
    for s in origin.seen() {
        let joined: Vec<&str> = s
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            joined.join(", "),
            "203.0.113.7, 198.51.100.2, 127.0.0.1",
            "{}",
            s.target
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn large_bodies_stream_through_intact_both_ways() {
    const SIZE: usize = 5 * 1024 * 1024;
    let origin = Origin::start(|seen, _| {
        if seen.target == "/download" {
            Reply::ok(pattern(SIZE))
        } else {
            Reply::ok(format!("got {}", seen.body.len()))
        }
    })
    .await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;

    // Up: an unrouted POST, and a write on a cached route.
    for (method, path) in [(Method::POST, "/upload"), (Method::PUT, "/api/profiles/7")] {
        let got = within(path, send(proxy.addr(), method, path, &[], pattern(SIZE))).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.text(), format!("got {SIZE}"), "{path}");
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.body.len(), SIZE, "{}", request.target);
        assert!(
            request.body == pattern(SIZE),
            "{}: bytes differ",
            request.target
        );
    }

    // Down: an unrouted GET.
    let got = within("/download", get(proxy.addr(), "/download", &[])).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), SIZE);
    assert!(got.body == pattern(SIZE), "downloaded bytes differ");
    assert!(got.cache_status().ends_with("no-route"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_origin_gives_502_with_a_plain_reason() {
    let redis = RedisServer::start();
    // Nothing listens there.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], support::redis::free_port()));
    let proxy = support::start_proxy_with(nowhere, &redis.url(), ROUTES).await;
    for path in ["/api/credentials/abc", "/unrouted"] {
        let got = within(path, get(proxy.addr(), path, &[])).await;
        assert_eq!(got.status, 502, "{path}");
        assert!(
            got.header("content-type").starts_with("text/plain"),
            "{path}: {}",
            got.header("content-type")
        );
        assert!(
            got.text().contains("cannot be reached"),
            "{path}: {}",
            got.text()
        );
        assert!(
            got.cache_status().starts_with("cachalot; "),
            "{path}: {:?}",
            got.cache_status()
        );
    }
    // A HEAD gets the status too.
    let head = within(
        "HEAD",
        send(
            proxy.addr(),
            Method::HEAD,
            "/api/credentials/abc",
            &[],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(head.status, 502);
    assert!(redis.entries().is_empty(), "errors are not stored");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_slow_origin_gives_504_with_a_plain_reason() {
    // The harness policy gives the origin 2 s; it takes 3.
    let origin = Origin::start(|_, _| Reply::ok("late").delay(Duration::from_secs(3))).await;
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    let (routed, unrouted) = tokio::join!(
        within("routed", get(proxy.addr(), "/api/credentials/abc", &[])),
        within("unrouted", get(proxy.addr(), "/unrouted", &[])),
    );
    for (path, got) in [("routed", routed), ("unrouted", unrouted)] {
        assert_eq!(got.status, 504, "{path}");
        assert!(
            got.header("content-type").starts_with("text/plain"),
            "{path}: {}",
            got.header("content-type")
        );
        assert!(
            got.text().contains("did not answer in time"),
            "{path}: {}",
            got.text()
        );
        assert!(
            got.cache_status().starts_with("cachalot; "),
            "{path}: {:?}",
            got.cache_status()
        );
    }
    assert!(redis.entries().is_empty(), "errors are not stored");
    proxy.shutdown().await;
}

#[tokio::test]
async fn oversized_request_headers_get_431() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(ROUTES).await;

    let stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let mut head = String::from("GET /api/credentials/abc HTTP/1.1\r\nHost: cachalot.test\r\n");
    // 100 KiB of headers in ten 10 KiB lines: few enough headers that only their size
    // can be what is refused.
    for i in 0..10 {
        head.push_str(&format!("x-filler-{i}: {}\r\n", "a".repeat(10 * 1024)));
    }
    head.push_str("\r\n");
    // Write in the background: the proxy may answer (and close) before reading it all.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
    });
    let mut response = Vec::new();
    let read = within("431", async {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    if response.windows(2).any(|w| w == b"\r\n") {
                        break;
                    }
                }
            }
        }
    });
    read.await;
    let status_line = String::from_utf8_lossy(&response);
    let status_line = status_line.lines().next().unwrap_or_default();
    assert!(
        status_line.starts_with("HTTP/1.1 431"),
        "status line: {status_line:?}"
    );
    assert_eq!(origin.count(), 0, "the request never reached the origin");
    writing.abort();
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_response_carries_cache_status() {
    let origin = Origin::start(|seen, _| {
        if seen.target.ends_with("/missing") {
            Reply::ok("{}").status(404)
        } else {
            Reply::ok("{}")
        }
    })
    .await;
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(&format!(
        "{ROUTES}
[[route]]
name = \"auth\"
match = \"/api/auth/{{*rest}}\"
cache = false
"
    ))
    .origin(origin)
    .start()
    .await;
    let a = proxy.addr();
    let cases: Vec<(&str, Got)> = vec![
        ("miss", get(a, "/api/credentials/abc", &[]).await),
        ("hit", get(a, "/api/credentials/abc", &[]).await),
        (
            "head hit",
            send(a, Method::HEAD, "/api/credentials/abc", &[], Bytes::new()).await,
        ),
        ("not stored", get(a, "/api/credentials/missing", &[]).await),
        (
            "authorization",
            get(a, "/api/credentials/abc", &[("authorization", "Bearer x")]).await,
        ),
        (
            "cookie",
            get(a, "/api/credentials/abc", &[("cookie", "s=1")]).await,
        ),
        ("no route", get(a, "/unrouted", &[]).await),
        ("route pass", get(a, "/api/auth/login", &[]).await),
        (
            "method",
            send(a, Method::POST, "/api/profiles/1", &[], Bytes::new()).await,
        ),
    ];
    for (what, got) in &cases {
        let values: Vec<_> = got.headers.get_all("cache-status").iter().collect();
        assert_eq!(values.len(), 1, "{what}: exactly one Cache-Status");
        assert!(
            got.cache_status().starts_with("cachalot; "),
            "{what}: {:?}",
            got.cache_status()
        );
    }
    let expect = [
        ("miss", "cachalot; fwd=uri-miss"),
        ("hit", "cachalot; hit"),
        ("head hit", "cachalot; hit"),
        ("not stored", "cachalot; fwd=uri-miss"),
        ("authorization", "cachalot; fwd=bypass"),
        ("cookie", "cachalot; fwd=bypass"),
        ("no route", "cachalot; fwd=bypass"),
        ("route pass", "cachalot; fwd=bypass"),
        ("method", "cachalot; fwd=method"),
    ];
    for ((what, got), (expected_what, prefix)) in cases.iter().zip(expect) {
        assert_eq!(*what, expected_what);
        assert!(
            got.cache_status().starts_with(prefix),
            "{what}: {:?}",
            got.cache_status()
        );
    }
    proxy.shutdown().await;

    // Errors too (the origin is gone).
    let nowhere = SocketAddr::from(([127, 0, 0, 1], support::redis::free_port()));
    let proxy = support::start_proxy_with(nowhere, &redis.url(), ROUTES).await;
    for path in ["/api/credentials/other", "/unrouted"] {
        let got = get(proxy.addr(), path, &[]).await;
        assert_eq!(got.status, 502);
        assert!(
            got.cache_status().starts_with("cachalot; "),
            "{path}: {:?}",
            got.cache_status()
        );
    }
    proxy.shutdown().await;
}

/// Cache poisoning through unkeyed inputs: headers an origin may reflect (X-Forwarded-Host,
/// X-Original-URL, X-HTTP-Method-Override, Forwarded…) but the key does not hold never reach
/// the origin on a cacheable route, so a stored response cannot depend on them. Routes the
/// cache does not handle forward them untouched.
#[tokio::test]
async fn unkeyed_headers_never_reach_the_origin_on_cacheable_routes() {
    let origin = Origin::start(|seen, _| {
        let host = seen
            .headers
            .get("x-forwarded-host")
            .map_or("app.example", |v| v.to_str().unwrap_or("?"));
        Reply::ok(format!("{{\"link\":\"https://{host}/next\"}}"))
    })
    .await;
    let routes = "[[route]]\nname = \"page\"\nmatch = \"GET /pages/{id}\"\nttl = \"1m\"\n";
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(routes).origin(origin).start().await;
    let attack = [
        ("x-forwarded-host", "evil.example"),
        ("x-original-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("forwarded", "host=evil.example"),
    ];
    let planted = get(proxy.addr(), "/pages/1", &attack).await;
    assert!(planted.text().contains("app.example"), "{}", planted.text());
    let victim = get(proxy.addr(), "/pages/1", &[]).await;
    assert!(
        victim.cache_status().contains("hit"),
        "{}",
        victim.cache_status()
    );
    assert!(!victim.text().contains("evil"), "{}", victim.text());
    let seen = origin.seen();
    for (name, _) in attack {
        assert!(
            !seen[0].headers.contains_key(name),
            "{name} reached the origin"
        );
    }

    // An unrouted request is forwarded untouched, headers and all.
    get(proxy.addr(), "/elsewhere", &attack).await;
    let forwarded = origin.seen().pop().unwrap();
    assert_eq!(
        forwarded.headers.get("x-forwarded-host").unwrap(),
        "evil.example"
    );
    proxy.shutdown().await;
}

//! Interim (1xx) responses from the origin: `103 Early Hints` and `102 Processing` before the
//! final response. The final response is stored and reused as usual; nothing of the interim
//! one is stored, replayed on a hit, or merged into the final response (its `Link` and other
//! headers belong to that one exchange). The proxy does not relay interim responses to the
//! client at all: hyper's server cannot send them (see the README's conformance section).
//!
//! A raw origin writes the interim response before the final one; a raw client reads every
//! byte the proxy sends, so an interim response relayed or replayed would show.

mod raw_origin;
mod support;

use raw_origin::{RawOrigin, ok};
use std::net::SocketAddr;
use support::{RedisServer, raw, start_proxy_with};

const ROUTES: &str = r#"
[[route]]
name = "page"
match = "GET /page/{id}"
ttl = "origin"
"#;

async fn origin() -> RawOrigin {
    RawOrigin::start(|target| {
        let mut out = if target.ends_with("/processing") {
            b"HTTP/1.1 102 Processing\r\n\r\n".to_vec()
        } else {
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\nX-My-Header: test\r\n\r\n"
                .to_vec()
        };
        out.extend(ok(&[b"Cache-Control: max-age=100000"], "final"));
        out
    })
    .await
}

/// Everything the proxy sends back for one GET on its own connection.
async fn fetch(proxy: SocketAddr, path: &str) -> String {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        support::HOST
    );
    raw(proxy, request.as_bytes()).await
}

#[tokio::test]
async fn interim_responses_are_never_stored_replayed_or_merged_into_the_final_one() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let proxy = start_proxy_with(origin.addr(), &redis.url(), ROUTES).await;

    for path in ["/page/hints", "/page/processing"] {
        for round in 0..2 {
            let reply = fetch(proxy.addr(), path).await;
            let lower = reply.to_ascii_lowercase();
            assert!(
                reply.starts_with("HTTP/1.1 200 OK\r\n"),
                "{path} round {round}: one final response and nothing before it: {reply}"
            );
            assert_eq!(lower.matches("http/1.1 ").count(), 1, "{path}: {reply}");
            assert!(
                !lower.contains("x-my-header") && !lower.contains("\r\nlink:"),
                "{path} round {round}: no header of the interim response: {reply}"
            );
            assert!(reply.ends_with("\r\n\r\nfinal"), "{path}: {reply}");
            let hit = lower.contains("cache-status: cachalot; hit");
            assert_eq!(hit, round == 1, "{path} round {round}: {reply}");
        }
        assert_eq!(
            origin.count_of(path),
            1,
            "{path}: the final response was reused"
        );
    }
    assert_eq!(redis.entries().len(), 2, "{:?}", redis.entries());
    proxy.shutdown().await;
}

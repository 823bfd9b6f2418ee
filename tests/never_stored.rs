//! What a shared cache must never store and serve to someone else.
//!
//! The promises checked here:
//! - a request with `Authorization` is forwarded, never answered from the cache (even when an
//!   entry exists), and its response is not stored;
//! - a request with `Cookie` bypasses the cache, unless the route says `ignore_cookies = true`:
//!   then the origin never sees the `Cookie` header and the response is shared;
//! - responses with `Set-Cookie`, `Cache-Control: private` or `no-store` are never stored;
//! - statuses other than 200/203 are not stored unless the route lists them (`statuses`);
//! - a body over `max_object_size` reaches the client whole, byte for byte, and is not
//!   stored (with a `Content-Length`, and streamed chunked without one), while a body within
//!   the limit is stored;
//! - a response that varies on a request header other than `Accept-Encoding` is not stored;
//!   `Vary: Accept-Encoding` on an unencoded body is.
//!
//! "Not stored" is checked three ways: `Cache-Status` says why, the next request goes to the
//! origin again, and Redis holds no key.

mod support;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use support::routes::CREDENTIAL;
use support::{Origin, RedisServer, Reply, Stack, get, pattern, start_proxy};

#[tokio::test]
async fn authorization_is_never_answered_from_the_cache_nor_stored() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;

    let public = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(public.stored());

    // An entry exists, but a request with credentials goes to the origin.
    let authorized = get(
        proxy.addr(),
        "/api/credentials/abc",
        &[("authorization", "Bearer secret")],
    )
    .await;
    assert_eq!(authorized.status, 200);
    assert_eq!(
        authorized.text(),
        r#"{"target":"/api/credentials/abc","n":2}"#
    );
    let status = authorized.cache_status();
    assert!(status.starts_with("cachalot; fwd=bypass"), "{status}");
    assert!(status.ends_with("authorization"), "{status}");
    assert_eq!(origin.seen()[1].headers["authorization"], "Bearer secret");

    // Its response did not replace the entry.
    let again = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(again.hit());
    assert_eq!(again.body, public.body);

    // And on a cold key, an authorized response is not stored for the next client.
    let cold = get(
        proxy.addr(),
        "/api/credentials/xyz",
        &[("authorization", "Bearer secret")],
    )
    .await;
    assert!(cold.cache_status().ends_with("authorization"));
    assert_eq!(redis.entries(), ["cachalot:{credential:abc}"]);
    let next = get(proxy.addr(), "/api/credentials/xyz", &[]).await;
    assert!(
        next.cache_status().contains("fwd=uri-miss"),
        "{}",
        next.cache_status()
    );
    assert_eq!(next.text(), r#"{"target":"/api/credentials/xyz","n":4}"#);
    assert_eq!(origin.count(), 4);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_cookie_bypasses_the_cache_by_default() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;

    let public = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(public.stored());

    for n in [2, 3] {
        let with_cookie = get(
            proxy.addr(),
            "/api/credentials/abc",
            &[("cookie", "session=alice")],
        )
        .await;
        let status = with_cookie.cache_status();
        assert!(status.starts_with("cachalot; fwd=bypass"), "{status}");
        assert!(status.ends_with("cookie"), "{status}");
        assert_eq!(
            with_cookie.text(),
            format!(r#"{{"target":"/api/credentials/abc","n":{n}}}"#)
        );
    }
    assert_eq!(origin.seen()[1].headers["cookie"], "session=alice");

    let cold = get(
        proxy.addr(),
        "/api/credentials/xyz",
        &[("cookie", "session=alice")],
    )
    .await;
    assert!(cold.cache_status().ends_with("cookie"));
    assert_eq!(redis.entries(), ["cachalot:{credential:abc}"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn ignore_cookies_strips_the_cookie_and_shares_the_response() {
    // The origin says which cookie it saw: a personalised body would show it.
    let origin = Origin::start(|seen, n| {
        let cookie = seen
            .headers
            .get("cookie")
            .map_or("none", |v| v.to_str().unwrap_or("?"));
        Reply::ok(format!("cookie={cookie} n={n}"))
    })
    .await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(
        r#"
[[route]]
name = "stats"
match = "GET /api/stats"
ttl = "1m"
ignore_cookies = true
"#,
    )
    .origin(origin)
    .start()
    .await;
    let alice = get(proxy.addr(), "/api/stats", &[("cookie", "session=alice")]).await;
    assert_eq!(alice.text(), "cookie=none n=1");
    assert!(alice.stored(), "{}", alice.cache_status());
    let bob = get(proxy.addr(), "/api/stats", &[("cookie", "session=bob")]).await;
    assert!(bob.hit(), "{}", bob.cache_status());
    assert_eq!(bob.text(), "cookie=none n=1");
    assert_eq!(origin.count(), 1);
    assert!(origin.seen()[0].headers.get("cookie").is_none());
    assert_eq!(redis.entries(), ["cachalot:{stats}"]);
    proxy.shutdown().await;
}

/// Two GETs for one path; asserts both went to the origin, both say `reason`, Redis is empty,
/// and the client got the origin's status, headers and body.
async fn assert_never_stored(reply: Reply, reason: &str) {
    let redis = RedisServer::start();
    let sent = reply.clone();
    let origin = Origin::start(move |_, _| sent.clone()).await;
    let proxy = start_proxy(&origin, &redis, CREDENTIAL).await;
    for round in 1..=2 {
        let got = get(proxy.addr(), "/api/credentials/abc", &[]).await;
        assert_eq!(got.status, reply.status, "round {round}");
        assert_eq!(got.body, reply.body, "round {round}");
        for (name, value) in &reply.headers {
            assert_eq!(got.header(name), value, "round {round}: {name}");
        }
        let status = got.cache_status();
        assert!(status.contains("fwd=uri-miss"), "round {round}: {status}");
        assert!(!got.stored(), "round {round}: {status}");
        assert!(
            status.ends_with(&format!("detail=credential/{reason}")),
            "round {round}: {status}"
        );
    }
    assert_eq!(
        origin.count(),
        2,
        "{reason}: both requests reached the origin"
    );
    assert!(redis.entries().is_empty(), "{reason}: nothing in Redis");
    proxy.shutdown().await;
}

#[tokio::test]
async fn set_cookie_is_never_stored() {
    assert_never_stored(
        Reply::ok("{}").header("set-cookie", "session=abc; HttpOnly"),
        "set-cookie",
    )
    .await;
}

#[tokio::test]
async fn cache_control_private_is_never_stored() {
    assert_never_stored(
        Reply::ok("{}").header("cache-control", "max-age=60, private"),
        "private",
    )
    .await;
}

#[tokio::test]
async fn cache_control_no_store_is_never_stored() {
    assert_never_stored(
        Reply::ok("{}").header("cache-control", "public, No-Store"),
        "no-store",
    )
    .await;
}

#[tokio::test]
async fn not_found_is_not_stored_by_default() {
    assert_never_stored(
        Reply::ok("{\"error\":\"not found\"}").status(404),
        "status-not-stored",
    )
    .await;
}

#[tokio::test]
async fn server_error_is_not_stored() {
    assert_never_stored(
        Reply::ok("{\"error\":\"boom\"}").status(500),
        "status-not-stored",
    )
    .await;
}

#[tokio::test]
async fn not_found_is_stored_when_the_route_lists_it() {
    let origin = Origin::start(|_, n| Reply::ok(format!("missing {n}")).status(404)).await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(concat!(
        support::routes::credential!(),
        "statuses = [200, 404]\n"
    ))
    .origin(origin)
    .start()
    .await;
    let first = get(proxy.addr(), "/api/credentials/nope", &[]).await;
    assert_eq!(first.status, 404);
    assert!(first.stored(), "{}", first.cache_status());
    let second = get(proxy.addr(), "/api/credentials/nope", &[]).await;
    assert_eq!(second.status, 404);
    assert!(second.hit(), "{}", second.cache_status());
    assert_eq!(second.text(), "missing 1");
    assert_eq!(origin.count(), 1);
    assert_eq!(redis.entries(), ["cachalot:{credential:nope}"]);
    proxy.shutdown().await;
}

const BLOBS: &str = r#"
[[route]]
name = "blob"
match = "GET /blobs/{size}"
ttl = "1m"
max_object_size = "1KiB"
"#;

#[tokio::test]
async fn a_body_over_max_object_size_is_streamed_whole_and_not_stored() {
    // `/blobs/<n>` answers n patterned bytes, with a Content-Length.
    let origin = Origin::start(|seen, _| {
        let size: usize = seen.target.rsplit('/').next().unwrap().parse().unwrap();
        Reply::ok(pattern(size))
    })
    .await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(BLOBS).origin(origin).start().await;

    for size in [1025usize, 4096, 200_000] {
        let path = format!("/blobs/{size}");
        for round in 1..=2 {
            let got = get(proxy.addr(), &path, &[]).await;
            assert_eq!(got.status, 200);
            assert_eq!(got.body.len(), size, "{path} round {round}");
            assert!(
                got.body == pattern(size),
                "{path} round {round}: bytes differ"
            );
            assert_eq!(got.header("content-length"), size.to_string());
            let status = got.cache_status();
            assert!(status.ends_with("blob/too-large"), "{path}: {status}");
        }
        assert_eq!(origin.count_of(&path), 2, "{path} was not stored");
    }
    assert!(redis.entries().is_empty());

    // Within the limit (up to and including it) is stored.
    for size in [512usize, 1024] {
        let path = format!("/blobs/{size}");
        let first = get(proxy.addr(), &path, &[]).await;
        assert!(first.stored(), "{path}: {}", first.cache_status());
        let second = get(proxy.addr(), &path, &[]).await;
        assert!(second.hit());
        assert!(second.body == pattern(size));
        assert_eq!(origin.count_of(&path), 1);
    }
    assert_eq!(
        redis.entries(),
        ["cachalot:{blob:1024}", "cachalot:{blob:512}"]
    );
    proxy.shutdown().await;
}

/// A body sent in fixed chunks with no declared length (so HTTP/1.1 chunked encoding).
struct Chunked(VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// An origin that answers `/blobs/<n>` with n patterned bytes in 300-byte chunks, without a
/// `Content-Length`; returns its address and a request counter.
async fn chunked_origin() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn({
        let count = Arc::clone(&count);
        async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        let size: usize = request
                            .uri()
                            .path()
                            .rsplit('/')
                            .next()
                            .unwrap()
                            .parse()
                            .unwrap();
                        let body = pattern(size);
                        let chunks = (0..size)
                            .step_by(300)
                            .map(|start| body.slice(start..(start + 300).min(size)))
                            .collect();
                        async move { Ok::<_, Infallible>(Response::new(Chunked(chunks))) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    });
    (addr, count, task)
}

#[tokio::test]
async fn a_chunked_body_over_max_object_size_is_streamed_whole_and_not_stored() {
    let redis = RedisServer::start();
    let (origin, count, task) = chunked_origin().await;
    let proxy = support::start_proxy_with(origin, &redis.url(), BLOBS).await;

    for round in 1..=2 {
        let got = get(proxy.addr(), "/blobs/3000", &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body.len(), 3000, "round {round}");
        assert!(got.body == pattern(3000), "round {round}: bytes differ");
        let status = got.cache_status();
        assert!(
            status.ends_with("blob/too-large"),
            "round {round}: {status}"
        );
    }
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(redis.entries().is_empty());

    // A chunked body within the limit is read whole and stored.
    let small = get(proxy.addr(), "/blobs/900", &[]).await;
    assert!(small.body == pattern(900));
    assert!(small.stored(), "{}", small.cache_status());
    let hit = get(proxy.addr(), "/blobs/900", &[]).await;
    assert!(hit.hit());
    assert!(hit.body == pattern(900));
    assert_eq!(count.load(Ordering::SeqCst), 3);
    assert_eq!(redis.entries(), ["cachalot:{blob:900}"]);
    proxy.shutdown().await;
    task.abort();
}

#[tokio::test]
async fn vary_star_is_never_stored() {
    assert_never_stored(Reply::ok("{}").header("vary", "*"), "vary").await;
}

/// A coding the proxy cannot remove: which clients may get it is unknowable. (gzip, br and
/// zstd are decoded for clients that do not accept them: see tests/compression.rs.)
#[tokio::test]
async fn vary_on_accept_encoding_with_a_body_in_an_unknown_coding_is_never_stored() {
    assert_never_stored(
        Reply::ok(&b"\x1f\x9d compressed the old way"[..])
            .header("vary", "Accept-Encoding")
            .header("content-encoding", "compress"),
        "vary",
    )
    .await;
}

#[tokio::test]
async fn a_body_that_says_gzip_and_is_not_is_never_stored() {
    assert_never_stored(
        Reply::ok(&b"\x1f\x8b not really gzip"[..])
            .header("vary", "Accept-Encoding")
            .header("content-encoding", "gzip"),
        "origin-error",
    )
    .await;
}

#[tokio::test]
async fn vary_on_accept_encoding_with_an_unencoded_body_is_stored() {
    let redis = RedisServer::start();
    let origin =
        Origin::start(|_, n| Reply::ok(format!("plain {n}")).header("vary", "Accept-Encoding"))
            .await;
    let proxy = start_proxy(&origin, &redis, CREDENTIAL).await;
    let first = get(
        proxy.addr(),
        "/api/credentials/abc",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert!(first.stored(), "{}", first.cache_status());
    assert_eq!(
        origin.seen()[0].headers["accept-encoding"],
        "identity",
        "a fill asks for a body every client can read"
    );
    let second = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(second.hit());
    assert_eq!(second.text(), "plain 1");
    assert_eq!(second.header("vary"), "Accept-Encoding");
    assert_eq!(origin.count(), 1);
    assert_eq!(redis.entries(), ["cachalot:{credential:abc}"]);
    proxy.shutdown().await;
}

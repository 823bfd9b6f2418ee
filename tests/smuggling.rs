//! Request smuggling and desync: a request whose framing two parsers could read differently
//! is refused with 400 and never forwarded; the origin's request count proves it.
//!
//! Each case is written byte for byte over a raw TCP socket (no client library would send
//! them): conflicting or malformed `Content-Length`s, `Transfer-Encoding` values other than
//! one `chunked`, obsolete line folding, bare CR and NUL are refused. `Content-Length` with
//! `Transfer-Encoding` is framed by the chunked coding alone and the connection closed
//! (RFC 9112 §6.1; see `framing`): the origin gets one request with the chunked body. A well-formed request on the same kind of socket is answered, so
//! the 400s are about framing and not about the harness.

mod support;

use support::{Stack, raw};

const ROUTES: &str = r#"
[[route]]
name = "item"
match = "/api/items/{id}"
ttl = "1m"
"#;

/// A head for `POST /api/items/1` with `headers` (each a full line without CRLF), then `body`.
fn post(headers: &[&str], body: &str) -> Vec<u8> {
    let mut text = String::from("POST /api/items/1 HTTP/1.1\r\nHost: cachalot.test\r\n");
    for line in headers {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

/// The smuggled second request most cases carry: if the proxy read the framing one way and
/// the origin another, the origin would see a GET for `/admin/secret`.
const SMUGGLED: &str = "GET /admin/secret HTTP/1.1\r\nHost: cachalot.test\r\n\r\n";

async fn assert_refused(cases: &[(&str, Vec<u8>)]) {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(ROUTES).await;
    for (what, bytes) in cases {
        let reply = raw(proxy.addr(), bytes).await;
        assert!(
            reply.starts_with("HTTP/1.1 400"),
            "{what}: expected 400, got {:?}",
            reply.lines().next()
        );
        // One response, then the connection is closed: nothing after the 400 was served.
        assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{what}: {reply}");
    }
    assert_eq!(
        origin.count(),
        0,
        "forwarded: {:?}",
        origin.seen().iter().map(|s| &s.target).collect::<Vec<_>>()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_well_formed_raw_request_is_answered() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(ROUTES).await;
    let reply = raw(
        proxy.addr(),
        &post(&["Content-Length: 5", "Connection: close"], "hello"),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let chunked = raw(
        proxy.addr(),
        &post(
            &["Transfer-Encoding: chunked", "Connection: close"],
            "5\r\nhello\r\n0\r\n\r\n",
        ),
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    for request in seen {
        assert_eq!(&request.body[..], b"hello");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    let body = format!("hello{SMUGGLED}");
    assert_refused(&[
        (
            "two Content-Length headers",
            post(&["Content-Length: 5", "Content-Length: 48"], &body),
        ),
        ("a list of lengths", post(&["Content-Length: 5, 48"], &body)),
        ("a signed length", post(&["Content-Length: +5"], &body)),
        ("a hex length", post(&["Content-Length: 0x5"], &body)),
        ("a negative length", post(&["Content-Length: -1"], &body)),
        (
            "an overflowing length",
            post(&["Content-Length: 99999999999999999999999"], &body),
        ),
    ])
    .await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_framed_by_chunked_alone_then_closed() {
    // RFC 9112 §6.1: Transfer-Encoding wins, Content-Length is discarded, and the
    // connection is closed after the response. hyper does exactly that before the proxy sees
    // the request, so the proxy frames the origin's copy itself: one request, its chunked
    // body, and the bytes after it are never read as a second request.
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(ROUTES).await;
    let chunked = format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
    for headers in [
        ["Content-Length: 6", "Transfer-Encoding: chunked"],
        ["Transfer-Encoding: chunked", "Content-Length: 6"],
        ["Content-Length: 0", "Transfer-Encoding: chunked"],
    ] {
        let reply = raw(proxy.addr(), &post(&headers, &chunked)).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{headers:?}: {reply}");
        assert_eq!(
            reply.matches("HTTP/1.1 ").count(),
            1,
            "{headers:?}: {reply}"
        );
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 3);
    for request in seen {
        assert_eq!(request.target, "/api/items/1");
        assert_eq!(&request.body[..], b"hello");
        assert!(
            request
                .headers
                .get("transfer-encoding")
                .is_none_or(|te| te == "chunked")
        );
        assert!(
            request
                .headers
                .get("content-length")
                .is_none_or(|cl| cl == "5")
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_broken_chunked_body_never_becomes_a_second_request() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(ROUTES).await;
    let body = format!("zz\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
    let reply = raw(proxy.addr(), &post(&["Transfer-Encoding: chunked"], &body)).await;
    // The head was valid and the body streams, so the origin may have seen the request
    // start; it never gets a complete body, and nothing after it is read as a request.
    assert!(!reply.starts_with("HTTP/1.1 2"), "{reply}");
    assert!(reply.matches("HTTP/1.1 ").count() <= 1, "{reply}");
    for request in origin.seen() {
        assert_ne!(request.target, "/admin/secret");
        assert!(request.body.is_empty(), "{:?}", request.body);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn transfer_encoding_tricks_are_refused() {
    let chunked = format!("5\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
    assert_refused(&[
        (
            "unknown coding",
            post(&["Transfer-Encoding: xchunked"], &chunked),
        ),
        (
            "chunked not last",
            post(&["Transfer-Encoding: chunked, identity"], &chunked),
        ),
        (
            "chunked twice",
            post(&["Transfer-Encoding: chunked, chunked"], &chunked),
        ),
        (
            "split over two headers, chunked not last",
            post(
                &["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
                &chunked,
            ),
        ),
        (
            "space before the colon",
            post(&["Transfer-Encoding : chunked"], &chunked),
        ),
        (
            "gzip then chunked",
            post(&["Transfer-Encoding: gzip, chunked"], &chunked),
        ),
        (
            "chunked on two header lines",
            post(
                &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
                &chunked,
            ),
        ),
    ])
    .await;
}

#[tokio::test]
async fn obsolete_line_folding_and_bare_cr_are_refused() {
    let body = format!("hello{SMUGGLED}");
    assert_refused(&[
        (
            "obs-fold continuing Content-Length",
            post(&["Content-Length: 5", " 48"], &body),
        ),
        (
            "obs-fold on Transfer-Encoding",
            post(&["X-Padding: a", "Transfer-Encoding:", " chunked"], &body),
        ),
        (
            "bare CR inside a header",
            post(
                &["X-Foo: a\rContent-Length: 48", "Content-Length: 5"],
                &body,
            ),
        ),
        (
            "bare CR in the request line",
            b"POST /api/items/1\rGET /x HTTP/1.1\r\nHost: cachalot.test\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        (
            "a NUL in a header value",
            post(&["X-Foo: a\0b", "Content-Length: 5"], &body),
        ),
    ])
    .await;
}

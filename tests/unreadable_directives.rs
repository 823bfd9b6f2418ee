//! Directives that cannot be read are not "no directives": a response whose `Cache-Control`,
//! `Pragma` or `Surrogate-Control` line cannot be parsed (a byte outside visible ASCII, a
//! quoted string that never closes) is served but never stored, since the unreadable part
//! may be the `private` meant to keep it out of a shared cache.
//!
//! A raw origin sends the bytes as written (an HTTP library would refuse or re-encode them),
//! and a wsgiref origin sends what a Python WSGI app would (Latin-1 header values);
//! the real proxy and a real Redis decide; the origin's request count says what was stored.

mod raw_origin;
mod support;

use raw_origin::{RawOrigin, ok};
use support::{RedisServer, get, start_proxy_with};

const ROUTES: &str = r#"
[[route]]
name = "fixed"
match = "GET /fixed/{id}"
ttl = "60s"

[[route]]
name = "origin"
match = "GET /origin/{id}"
ttl = "origin"
"#;

/// The header line each path's response carries, besides `Cache-Control: max-age=60` for
/// `ttl = "origin"` routes to have freshness.
fn line_for(id: &str) -> &'static [u8] {
    match id {
        "non-ascii" => b"Cache-Control: private, ext=\"caf\xc3\xa9\"",
        "latin1" => b"Cache-Control: ext=\"caf\xe9\", private",
        "unclosed" => b"Cache-Control: x=\"a, private",
        "pragma" => b"Pragma: x=\"a",
        "surrogate" => b"Surrogate-Control: max-age=60, x=\"y",
        // Controls: the same shapes, readable.
        "quoted" => b"Cache-Control: ext=\"cafe\", x=\"a, b\"",
        _ => b"X-Plain: yes",
    }
}

async fn origin() -> RawOrigin {
    RawOrigin::start(|target| {
        let id = target.rsplit('/').next().unwrap_or_default();
        ok(
            &[line_for(id), b"Cache-Control: max-age=60"],
            &format!("body of {target}"),
        )
    })
    .await
}

#[tokio::test]
async fn an_unreadable_directive_line_keeps_the_response_out_of_the_cache() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let proxy = start_proxy_with(origin.addr(), &redis.url(), ROUTES).await;

    for route in ["fixed", "origin"] {
        for id in ["non-ascii", "latin1", "unclosed", "pragma", "surrogate"] {
            let path = format!("/{route}/{id}");
            for round in 0..2 {
                let got = get(proxy.addr(), &path, &[]).await;
                assert_eq!(got.status, 200, "{path}");
                assert_eq!(
                    got.text(),
                    format!("body of {path}"),
                    "{path}: served whole"
                );
                assert!(
                    got.cache_status()
                        .ends_with(&format!("detail={route}/unreadable-directives")),
                    "{path} round {round}: {}",
                    got.cache_status()
                );
            }
            assert_eq!(
                origin.count_of(&path),
                2,
                "{path}: never answered from the cache"
            );
        }
    }
    assert!(redis.entries().is_empty(), "{:?}", redis.entries());
    proxy.shutdown().await;
}

#[tokio::test]
async fn readable_quoted_values_and_plain_lines_are_stored() {
    let redis = RedisServer::start();
    let origin = origin().await;
    let proxy = start_proxy_with(origin.addr(), &redis.url(), ROUTES).await;

    for path in ["/fixed/quoted", "/origin/quoted", "/origin/plain"] {
        assert!(get(proxy.addr(), path, &[]).await.stored(), "{path}");
        let hit = get(proxy.addr(), path, &[]).await;
        assert!(hit.hit(), "{path}: {}", hit.cache_status());
        assert_eq!(origin.count_of(path), 1, "{path}");
    }
    proxy.shutdown().await;
}

/// A wsgiref origin (Python's standard library, as a WSGI app behind any WSGI server would
/// answer): it encodes header values as Latin-1, so `café` arrives as the byte 0xE9. Each
/// response's body counts the requests for its path.
struct Wsgiref {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Wsgiref {
    fn start() -> Self {
        use std::io::BufRead;
        const APP: &str = r#"
import sys
from wsgiref.simple_server import make_server, WSGIRequestHandler

LINES = {
    "non-ascii": 'private, ext="café"',
    "unclosed": 'x="a, private',
    "quoted": 'ext="cafe", x="a, b"',
}
counts = {}

def app(environ, start_response):
    path = environ["PATH_INFO"]
    counts[path] = counts.get(path, 0) + 1
    body = ("n=%d" % counts[path]).encode()
    start_response("200 OK", [
        ("Cache-Control", LINES[path.rsplit("/", 1)[1]]),
        ("Cache-Control", "max-age=60"),
        ("Content-Length", str(len(body))),
    ])
    return [body]

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", APP])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (CI installs it)");
        let mut port = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .expect("the wsgiref origin prints its port");
        let port: u16 = port.trim().parse().expect("a port");
        Self {
            child,
            addr: ([127, 0, 0, 1], port).into(),
        }
    }
}

impl Drop for Wsgiref {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_wsgi_origins_latin1_directive_is_unreadable_too() {
    let redis = RedisServer::start();
    let origin = Wsgiref::start();
    let proxy = start_proxy_with(origin.addr, &redis.url(), ROUTES).await;
    for route in ["fixed", "origin"] {
        for (id, stored) in [("non-ascii", false), ("unclosed", false), ("quoted", true)] {
            let path = format!("/{route}/{id}");
            let first = get(proxy.addr(), &path, &[]).await;
            let second = get(proxy.addr(), &path, &[]).await;
            assert_eq!(first.text(), "n=1", "{path}");
            let expected = if stored { "n=1" } else { "n=2" };
            assert_eq!(second.text(), expected, "{path}: {}", second.cache_status());
            assert_eq!(second.hit(), stored, "{path}: {}", second.cache_status());
        }
    }
    proxy.shutdown().await;
}

//! Real parts for integration tests: a `redis-server` of the test's own on a free loopback
//! port (no persistence, killed on drop), an HTTP origin that counts what it serves, and the
//! real proxy started from a policy text ([`Stack`] starts all three), with the fixtures
//! test files share ([`routes`], [`wait`], [`files`], [`prometheus`]).

// Each test file uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod binary;
pub mod cluster;
pub mod files;
pub mod load;
pub mod logging_origin;
pub mod origin;
pub mod prometheus;
pub mod python;
pub mod redis;
pub mod routes;
pub mod stack;
pub mod tls;
pub mod wait;

use bytes::Bytes;
use cachalot::{Policy, Server};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;

pub use origin::{Origin, Reply};
pub use redis::RedisServer;
pub use stack::Stack;

/// Starts a proxy with `routes` (TOML `[[route]]` tables and any extra sections) in front of
/// `origin`, caching in `redis`. Both listeners take free ports.
pub async fn start_proxy(origin: &Origin, redis: &RedisServer, routes: &str) -> Server {
    start_proxy_with(origin.addr(), &redis.url(), routes).await
}

/// As [`start_proxy`], with any origin address and Redis URL.
pub async fn start_proxy_with(origin: SocketAddr, redis_url: &str, routes: &str) -> Server {
    let policy = policy_text(origin, redis_url, routes);
    let policy = Policy::parse(&policy, "test.toml")
        .unwrap_or_else(|e| panic!("test policy is invalid: {e}"));
    Server::start(policy).await.expect("proxy starts")
}

/// As [`start_proxy_with`], with extra `[redis]` settings (`password_file = "..."`).
pub async fn start_proxy_redis(
    origin: SocketAddr,
    redis_url: &str,
    redis_extra: &str,
    routes: &str,
) -> Server {
    let policy = policy_text_with(origin, redis_url, redis_extra, routes);
    let policy = Policy::parse(&policy, "test.toml")
        .unwrap_or_else(|e| panic!("test policy is invalid: {e}"));
    Server::start(policy).await.expect("proxy starts")
}

/// A complete policy text around `routes`.
pub fn policy_text(origin: SocketAddr, redis_url: &str, routes: &str) -> String {
    policy_text_with(origin, redis_url, "", routes)
}

/// The one host the test proxies serve (`[listen] hosts`), as a deployment behind a load
/// balancer serves one name: every instance sees the same authority, and keys stay
/// `credential:abc` (a single served host is not part of the key). [`send`] uses it as
/// `Host` unless a test gives its own; raw requests name it themselves.
pub const HOST: &str = "cachalot.test";

/// A complete policy text around `routes`, with extra `[redis]` settings.
pub fn policy_text_with(
    origin: SocketAddr,
    redis_url: &str,
    redis_extra: &str,
    routes: &str,
) -> String {
    policy_text_listen(
        origin,
        redis_url,
        &format!("hosts = [\"{HOST}\"]"),
        redis_extra,
        routes,
    )
}

/// As [`start_proxy`], with `listen` as the `[listen]` settings besides the addresses
/// (`""`: any host, each keyed apart, the default).
pub async fn start_proxy_listen(
    origin: &Origin,
    redis: &RedisServer,
    listen: &str,
    routes: &str,
) -> Server {
    let policy = policy_text_listen(origin.addr(), &redis.url(), listen, "", routes);
    let policy = Policy::parse(&policy, "test.toml")
        .unwrap_or_else(|e| panic!("test policy is invalid: {e}"));
    Server::start(policy).await.expect("proxy starts")
}

/// A complete policy text with these `[listen]` and `[redis]` extras.
pub fn policy_text_listen(
    origin: SocketAddr,
    redis_url: &str,
    listen: &str,
    redis_extra: &str,
    routes: &str,
) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
admin = "127.0.0.1:0"
{listen}

[origin]
url = "http://{origin}"
timeout = "2s"

[redis]
url = "{redis_url}"
prefix = "cachalot"
timeout = "300ms"
{redis_extra}

[collapse]
lock_ttl = "5s"
wait = "3s"

{routes}
"#
    )
}

/// A body of `len` bytes that is not one repeated byte, so a shifted or truncated copy shows.
pub fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }

    pub fn cache_status(&self) -> &str {
        self.header("cache-status")
    }

    /// Whether `Cache-Status` says the response was stored (the `stored` parameter, not a
    /// `detail` such as `status-not-stored`).
    pub fn stored(&self) -> bool {
        self.cache_status().split("; ").any(|part| part == "stored")
    }

    /// Whether `Cache-Status` says the response was a hit (from Redis or the in-process tier).
    pub fn hit(&self) -> bool {
        self.cache_status().starts_with("cachalot; hit")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain HTTP/1.1 client (its own connection pool per call site is fine for tests).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// `GET http://{addr}{path}` with extra headers.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    send(addr, Method::GET, path, headers, Bytes::new()).await
}

/// Any request through a fresh client.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Got {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", HOST);
    }
    let request = request.body(Full::new(body)).expect("valid test request");
    let response = client()
        .request(request)
        .await
        .expect("request reaches the proxy");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Writes `bytes` to the proxy on a fresh connection and reads what comes back until the
/// proxy closes the connection (or 10 s pass): for requests no well-behaved client would
/// send (smuggling, malformed heads). Well-formed requests should say `Connection: close`.
/// Writing runs beside reading, since the proxy may answer and close before reading it all.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let (mut reader, mut writer) = stream.into_split();
    let bytes = bytes.to_vec();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        // Keep the write half open until reading is done: dropping it would half-close.
        writer
    });
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    writing.abort();
    String::from_utf8_lossy(&reply).into_owned()
}

/// `cachalot check --connect` (the real binary) on a policy with `redis_url` (none: the
/// default, for the environment to replace) and extra `[redis]` settings, with exactly the
/// Redis variables in `env` (the caller's own are removed).
pub fn check_connect(
    redis_url: Option<&str>,
    redis_extra: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    use std::io::Write;
    let url = redis_url.map_or(String::new(), |u| format!("url = \"{u}\"\n"));
    let text = format!(
        "[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[redis]\n{url}timeout = \"1s\"\n{redis_extra}\n"
    );
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("policy written");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cachalot"));
    command
        .args(["check", "--connect", "--config"])
        .arg(file.path());
    for name in [
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_SSL",
        "REDIS_PASSWORD",
        "REDIS_ACCESS_KEY",
        "CACHALOT_CONFIG",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("cachalot runs")
}

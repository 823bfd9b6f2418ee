//! Graceful shutdown of the real binary: on SIGTERM `cachalot run` stops accepting, finishes
//! every request already in flight (cached-route misses and plain passes alike, each with
//! its whole body), and exits 0; with nothing in flight it exits at once. While it drains,
//! the admin listener answers `/readyz` with 503.

mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::RedisServer;
use support::redis::free_port;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long the origin takes at least for each response.
const ORIGIN_DELAY: Duration = Duration::from_millis(500);

/// The body the origin sends for `target`: big enough to take more than one write, and
/// different for every target, so a truncated or mixed-up body shows.
fn body_for(target: &str) -> String {
    let line = format!("{target} is served whole\n");
    line.repeat(64 * 1024 / line.len() + 1)
}

/// An origin that counts the requests it received and answers each after `ORIGIN_DELAY`
/// and once the test opens the gate: a request cannot finish before the test says so.
struct SlowOrigin {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowOrigin {
    async fn start(gate_open: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let received = Arc::new(AtomicUsize::new(0));
        let (gate, opened) = watch::channel(gate_open);
        let task = tokio::spawn({
            let received = Arc::clone(&received);
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let received = Arc::clone(&received);
                    let opened = opened.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            let received = Arc::clone(&received);
                            let mut opened = opened.clone();
                            async move {
                                received.fetch_add(1, Ordering::SeqCst);
                                let target = request
                                    .uri()
                                    .path_and_query()
                                    .map_or("/".to_string(), |p| p.to_string());
                                tokio::time::sleep(ORIGIN_DELAY).await;
                                let _ = opened.wait_for(|open| *open).await;
                                let mut response =
                                    Response::new(Full::new(Bytes::from(body_for(&target))));
                                response.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("text/plain"),
                                );
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Self {
            addr,
            received,
            gate,
            task,
        }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    fn open(&self) {
        let _ = self.gate.send(true);
    }
}

impl Drop for SlowOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `cachalot run` as a child process, its stderr kept in a file for failure messages.
struct Running {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: tempfile::NamedTempFile,
    _policy: tempfile::NamedTempFile,
}

impl Running {
    /// Starts the binary in front of `origin` with one cached route (`/items/{id}`);
    /// everything else passes. Returns once both listeners accept connections.
    async fn start(origin: SocketAddr, redis: &RedisServer) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let text = format!(
            r#"
[listen]
addr = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin_port}"

[origin]
url = "http://{origin}"
timeout = "30s"

[redis]
url = "redis://127.0.0.1:1"
timeout = "1s"

[[route]]
name = "item"
match = "GET /items/{{id}}"
ttl = "1m"
key = "item:{{id}}"
"#
        );
        let mut policy = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("temp policy");
        policy.write_all(text.as_bytes()).expect("write policy");
        let log = tempfile::NamedTempFile::new().expect("temp log");
        let child = Command::new(env!("CARGO_BIN_EXE_cachalot"))
            .args(["run", "--config", policy.path().to_str().unwrap()])
            // REDIS_URL wins over the (unreachable) URL in the file.
            .env("REDIS_URL", redis.url())
            .env_remove("CACHALOT_CONFIG")
            .env_remove("CACHALOT_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("cachalot starts");
        let mut running = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            log,
            _policy: policy,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in [running.addr, running.admin] {
            while TcpStream::connect(addr).await.is_err() {
                if let Some(status) = running.child.try_wait().expect("try_wait") {
                    panic!("cachalot exited at start ({status}):\n{}", running.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "cachalot did not listen on {addr}:\n{}",
                    running.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        running
    }

    fn log(&self) -> String {
        let mut text = String::new();
        let _ = self
            .log
            .reopen()
            .and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the process to exit, at most `limit`.
    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cachalot did not exit within {limit:?} of SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls new connections to `addr` until one is refused. A connect that neither
    /// succeeds nor fails within a second (a full accept backlog) is not a refusal.
    async fn until_refused(&self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let attempt =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await;
            if let Ok(Err(_)) = attempt {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} still accepts new connections after SIGTERM ({}):\n{}",
                if attempt.is_ok() {
                    "connected"
                } else {
                    "connect hangs"
                },
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test must not leave its proxy running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One GET on its own connection; any failure is returned, not panicked, so that every
/// request's fate can be reported.
async fn fetch(addr: SocketAddr, path: &str) -> Result<(StatusCode, String, Bytes), String> {
    let request = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let response = support::client()
        .request(request)
        .await
        .map_err(|e| format!("{path}: request failed: {e:?}"))?;
    let (parts, body) = response.into_parts();
    let cache_status = parts
        .headers
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{path}: body cut short: {e:?}"))?
        .to_bytes();
    Ok((parts.status, cache_status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_every_in_flight_request_then_exits_zero() {
    let redis = RedisServer::start();
    let origin = SlowOrigin::start(false).await;
    let mut proxy = Running::start(origin.addr, &redis).await;

    // 30 requests in flight: misses on the cached route (distinct keys, so each reaches
    // the origin) and passes that no route takes.
    let paths: Vec<String> = (0..30)
        .map(|i| {
            if i % 2 == 0 {
                format!("/items/{i}")
            } else {
                format!("/other/{i}?q={i}")
            }
        })
        .collect();
    let requests: Vec<_> = paths
        .iter()
        .map(|path| {
            let (addr, path) = (proxy.addr, path.clone());
            tokio::spawn(async move { fetch(addr, &path).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.received() < paths.len() {
        assert!(
            Instant::now() < deadline,
            "the origin received {} of {} requests:\n{}",
            origin.received(),
            paths.len(),
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (ready, _, _) = fetch(proxy.admin, "/readyz").await.expect("readyz");
    assert_eq!(ready, StatusCode::OK, "ready before SIGTERM");
    proxy.terminate();
    // The public listener closes at once; the process stays to finish what is in flight
    // (the origin cannot answer before the gate opens, so none of it can have finished).
    // Meanwhile the admin listener says "not ready", for Kubernetes to stop routing here.
    proxy.until_refused(proxy.addr).await;
    let (ready, _, body) = fetch(proxy.admin, "/readyz")
        .await
        .expect("readyz while draining");
    assert_eq!(
        (ready, &body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, &b"shutting down\n"[..]),
        "readyz while requests are in flight"
    );
    assert_eq!(
        proxy.exited(),
        None,
        "cachalot exited with requests in flight:\n{}",
        proxy.log()
    );
    origin.open();

    let mut failures = Vec::new();
    for (path, request) in paths.iter().zip(requests) {
        match request.await.expect("request task") {
            Ok((status, cache_status, body)) => {
                let expected = if path.starts_with("/items/") {
                    "fwd=uri-miss"
                } else {
                    "detail=no-route"
                };
                if status != StatusCode::OK {
                    failures.push(format!("{path}: status {status}"));
                } else if body != body_for(path).as_bytes() {
                    failures.push(format!(
                        "{path}: body of {} bytes, not the origin's {}",
                        body.len(),
                        body_for(path).len()
                    ));
                } else if !cache_status.contains(expected) {
                    failures.push(format!("{path}: Cache-Status {cache_status}"));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "in-flight requests lost or damaged by SIGTERM:\n{}\n---\n{}",
        failures.join("\n"),
        proxy.log()
    );

    let status = proxy.exit_within(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        proxy.log()
    );
    assert_eq!(
        origin.received(),
        paths.len(),
        "every request reached the origin once"
    );
    // New connections are refused now that the process is gone, as they were while it
    // drained.
    assert!(TcpStream::connect(proxy.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_no_traffic_exits_zero_promptly() {
    let redis = RedisServer::start();
    let origin = SlowOrigin::start(true).await;
    let mut proxy = Running::start(origin.addr, &redis).await;
    proxy.terminate();
    // The drain limit is 30 s; with nothing in flight there is nothing to wait for.
    let status = proxy.exit_within(Duration::from_secs(5)).await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        proxy.log()
    );
    assert!(TcpStream::connect(proxy.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_hold_up_the_exit() {
    let redis = RedisServer::start();
    let origin = SlowOrigin::start(true).await;
    let mut proxy = Running::start(origin.addr, &redis).await;

    // A keep-alive connection that has served a request and now idles, on each listener,
    // and a connection that never sent a byte.
    let mut kept = Vec::new();
    for (addr, path) in [(proxy.addr, "/items/idle"), (proxy.admin, "/healthz")] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: cachalot.test\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .expect("send request");
        // Read the whole response (its length is known), so the connection is idle.
        let mut response = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                .await
                .expect("read response");
            assert!(n > 0, "{addr} closed before answering in full");
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())
                            .flatten()
                    })
                    .unwrap_or_else(|| panic!("no content-length: {head}"));
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                if body.len() >= length {
                    break;
                }
            }
        }
        kept.push(stream);
    }
    kept.push(TcpStream::connect(proxy.addr).await.expect("connect"));

    proxy.terminate();
    let status = proxy.exit_within(Duration::from_secs(5)).await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        proxy.log()
    );
    drop(kept);
}

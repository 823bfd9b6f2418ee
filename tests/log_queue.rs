//! The log's queue, from the real binary with its stderr on a pipe the test reads only when
//! it chooses: access lines still queued when SIGTERM arrives are written before the process
//! exits (none lost while the queue had room), and once the queue is full further lines
//! are dropped, each counted in `cachalot_log_lines_dropped_total`, while every request is
//! still answered.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::binary::{Spawned, spawn_run};
use support::routes::ITEM as ROUTES;
use support::{HOST, Origin, RedisServer, get};

/// More access lines (about 200 bytes each) than a pipe (64 KiB) and the writer's buffer
/// (64 KiB) hold, so that most are still queued while nobody reads the pipe.
const REQUESTS: usize = 1500;

/// `cachalot run` at the default log level, its stderr on a pipe. The reader thread takes
/// the startup lines, then waits for the test's go before reading on.
struct Running {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    go: mpsc::Sender<()>,
    reader: JoinHandle<Vec<String>>,
    _policy: tempfile::NamedTempFile,
}

impl Running {
    async fn start(origin: &Origin, redis: &RedisServer, env: &[(&str, &str)]) -> Self {
        let Spawned {
            mut child,
            addr,
            admin,
            policy,
        } = spawn_run(origin.addr(), &redis.url(), ROUTES, &[], env);
        let (go, reader) = gated_reader(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while get_status(admin, "/readyz").await != Some(StatusCode::OK) {
            assert!(Instant::now() < deadline, "cachalot did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // `cachalot run` installs its SIGTERM handler only after both ports listen.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Self {
            child,
            addr,
            admin,
            go,
            reader,
            _policy: policy,
        }
    }

    /// REQUESTS hits and misses on one keep-alive connection; every one must be answered.
    async fn send_requests(&self) {
        let client = support::client();
        for i in 0..REQUESTS {
            let request = Request::get(format!("http://{}/items/{}", self.addr, i % 10))
                .header("host", HOST)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = client.request(request).await.expect("answered");
            assert_eq!(response.status(), StatusCode::OK, "request {i}");
            response.into_body().collect().await.expect("whole body");
        }
    }

    /// The dropped-line count `/metrics` reports now.
    async fn dropped(&self) -> u64 {
        let metrics = get(self.admin, "/metrics", &[]).await.text();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("cachalot_log_lines_dropped_total "))
            .unwrap_or_else(|| panic!("no cachalot_log_lines_dropped_total:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// SIGTERM, with the reader let go on before it (`read_first`) or only after; every
    /// line, once the process exited 0.
    fn stop(mut self, read_first: bool) -> Vec<String> {
        let pid = self.child.id().to_string();
        if read_first {
            self.go.send(()).unwrap();
        }
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        if !read_first {
            // Only now does anything read the pipe: every queued line is still to be written.
            self.go.send(()).unwrap();
        }
        let status = self.child.wait().unwrap();
        let lines = self.reader.join().unwrap();
        assert!(status.success(), "{status}: {lines:#?}");
        lines
    }
}

/// Reads the startup lines (up to "cachalot is serving"), then waits for `go` before reading on.
fn gated_reader(stderr: ChildStderr) -> (mpsc::Sender<()>, JoinHandle<Vec<String>>) {
    let (go, gate) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut stderr = BufReader::new(stderr).lines().map_while(Result::ok);
        for line in stderr.by_ref() {
            let listening = line.contains("cachalot is serving");
            lines.push(line);
            if listening {
                break;
            }
        }
        let _ = gate.recv();
        lines.extend(stderr);
        lines
    });
    (go, reader)
}

async fn get_status(addr: SocketAddr, path: &str) -> Option<StatusCode> {
    let request = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = support::client().request(request).await.ok()?;
    Some(response.status())
}

fn access_lines(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.contains("cachalot::access"))
        .count()
}

#[tokio::test]
async fn lines_still_queued_at_sigterm_are_written_before_exit() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let proxy = Running::start(&origin, &redis, &[]).await;
    proxy.send_requests().await;
    assert_eq!(proxy.dropped().await, 0, "the default queue holds them all");
    let lines = proxy.stop(false);
    assert_eq!(
        access_lines(&lines),
        REQUESTS,
        "one line per request, none lost at exit"
    );
    assert!(
        lines.last().is_some_and(|l| l.contains("shutting down")),
        "the last line is the shutdown's: {:?}",
        lines.last()
    );
}

#[tokio::test]
async fn a_full_queue_drops_lines_and_counts_each_without_holding_requests() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let proxy = Running::start(&origin, &redis, &[("CACHALOT_LOG_QUEUE_LINES", "50")]).await;
    proxy.send_requests().await;
    // Every access line has been queued or dropped by now (each is emitted before its
    // response is sent), and nothing else is logged until shutdown.
    let dropped = proxy.dropped().await;
    let lines = proxy.stop(true);
    let written = access_lines(&lines);
    assert!(
        dropped > 0,
        "the pipe was not read: lines must have been dropped"
    );
    assert!(written > 0, "what the pipe and the queue held is written");
    assert_eq!(
        written as u64 + dropped,
        REQUESTS as u64,
        "every line is written or counted as dropped"
    );
}

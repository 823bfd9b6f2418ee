//! The access log as an operator meets it, from the real binary: one line per request at
//! info with the request id (the client's `X-Request-Id`, else a generated one, also sent to
//! the origin and returned), route, phase, status, latency and key; JSON with
//! `--log-format json`; never a credential; and nothing at all under `RUST_LOG=warn`.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::binary::{Spawned, collect_lines, spawn_run};
use support::routes::ITEM as ROUTES;
use support::{Got, Origin, RedisServer, get};

const AUTHORIZATION: &str = "Bearer secret-token-8d1e6b";
const COOKIE: &str = "session=secret-cookie-55c2a0";

/// `cachalot run` on free ports, its stderr collected line by line.
struct Running {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
    _policy: tempfile::NamedTempFile,
}

impl Running {
    async fn start(
        origin: &Origin,
        redis: &RedisServer,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let Spawned {
            mut child,
            addr,
            policy,
            ..
        } = spawn_run(origin.addr(), &redis.url(), ROUTES, args, env);
        let (lines, reader) = collect_lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "cachalot did not listen: {:?}",
                lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            addr,
            lines,
            reader,
            _policy: policy,
        }
    }

    /// SIGTERM, then everything it logged.
    fn stop(mut self) -> Vec<String> {
        // `cachalot run` installs its SIGTERM handler only after both ports listen; a
        // SIGTERM in between ends it the default way (not exit 0). Give it that moment.
        std::thread::sleep(Duration::from_millis(300));
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let lines = Arc::try_unwrap(self.lines).unwrap().into_inner().unwrap();
        assert!(status.success(), "{status}: {lines:#?}");
        lines
    }
}

fn request_id(got: &Got) -> &str {
    got.header("x-request-id")
}

#[tokio::test]
async fn json_access_lines_carry_the_request_id_and_never_a_credential() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let proxy = Running::start(&origin, &redis, &["--log-format", "json"], &[]).await;

    let miss = get(proxy.addr, "/items/1", &[("x-request-id", "req-1")]).await;
    let hit = get(proxy.addr, "/items/1", &[("x-request-id", "req-2")]).await;
    let private = get(
        proxy.addr,
        "/items/1",
        &[
            ("x-request-id", "req-3"),
            ("authorization", AUTHORIZATION),
            ("cookie", COOKIE),
        ],
    )
    .await;
    let generated = get(proxy.addr, "/items/2", &[]).await;
    let odd = get(proxy.addr, "/other", &[("x-request-id", "not a token")]).await;
    let lines = proxy.stop();

    assert_eq!(request_id(&miss), "req-1");
    assert_eq!(request_id(&hit), "req-2");
    assert_eq!(request_id(&private), "req-3");
    for got in [&generated, &odd] {
        let id = request_id(got);
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "a generated id: {id:?}"
        );
    }
    assert_ne!(request_id(&generated), request_id(&odd));
    // The origin sees the id the client gets back (the hit never reached it).
    let sent: Vec<String> = origin
        .seen()
        .iter()
        .map(|seen| seen.headers["x-request-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        sent,
        ["req-1", "req-3", request_id(&generated), request_id(&odd)]
    );

    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let access: Vec<&Value> = events
        .iter()
        .filter(|e| e["target"] == "cachalot::access")
        .collect();
    assert_eq!(access.len(), 5, "one line per request: {lines:#?}");
    let line = |id: &str| {
        let found: Vec<_> = access.iter().filter(|e| e["request_id"] == id).collect();
        assert_eq!(found.len(), 1, "{id}: {lines:#?}");
        *found[0]
    };
    let first = line("req-1");
    assert_eq!(first["level"], "INFO");
    assert!(first["timestamp"].is_string());
    assert_eq!(first["message"], "request");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/items/1");
    assert_eq!(first["route"], "item");
    assert_eq!(first["phase"], "miss");
    assert_eq!(first["status"], 200);
    assert_eq!(first["key"], "item:1");
    assert!(first["latency_us"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(line("req-2")["phase"], "hit");
    let bypassed = line("req-3");
    assert_eq!(bypassed["phase"], "bypass");
    assert_eq!(bypassed["reason"], "authorization");
    assert_eq!(line(request_id(&generated))["key"], "item:2");
    let unrouted = line(request_id(&odd));
    assert_eq!(unrouted["phase"], "pass");
    assert_eq!(unrouted["route"], "-");
    assert_eq!(unrouted["key"], "-");

    let all = lines.join("\n");
    for secret in ["secret-token-8d1e6b", "secret-cookie-55c2a0"] {
        assert!(!all.contains(secret), "{secret} was logged:\n{all}");
    }
}

#[tokio::test]
async fn text_is_the_default_and_rust_log_warn_silences_the_access_log() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;

    let proxy = Running::start(&origin, &redis, &[], &[]).await;
    get(proxy.addr, "/items/1", &[("x-request-id", "text-1")]).await;
    let lines = proxy.stop();
    let access: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("cachalot::access"))
        .collect();
    assert_eq!(access.len(), 1, "{lines:#?}");
    assert!(access[0].contains("request_id=\"text-1\""), "{}", access[0]);
    assert!(access[0].contains("phase=\"miss\""), "{}", access[0]);
    assert!(!access[0].starts_with('{'), "text, not JSON: {}", access[0]);

    let quiet = Running::start(&origin, &redis, &[], &[("RUST_LOG", "warn")]).await;
    let got = get(quiet.addr, "/items/1", &[("x-request-id", "quiet-1")]).await;
    assert_eq!(request_id(&got), "quiet-1", "ids work without logs");
    let lines = quiet.stop();
    assert!(
        lines.iter().all(|l| !l.contains("quiet-1")),
        "no access line at warn: {lines:#?}"
    );
}

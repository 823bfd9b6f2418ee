//! Shadow verification against a real Redis, real origins and the real proxy: an origin
//! whose answer depends on a header the key does not hold shows up as mismatches in
//! `/metrics`, `/status.json`, one log line and `explain --live`, while clients keep getting
//! the stored answer and the origin gets exactly the configured share of hits; a refreshed
//! resource (a new `ETag`) counts as changed, not as a mismatch; the bound on requests in
//! flight holds against a slow origin; and nothing a client sends can start a verification
//! or add to what it sends.

mod support;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::binary::{Spawned, collect_lines, spawn_run};
use support::prometheus::scrape;
use support::wait::eventually;
use support::{Got, Origin, Reply, Stack, get, policy_text};

/// The team's data: the origin reads `X-Team`, which the route passes on
/// (`forward_headers`) but does not key on. The mistake shadow verification exists to show.
const TEAM: &str = r#"
[[route]]
name = "team"
match = "GET /team/{id}"
ttl = "10m"
key = "team:{id}"
forward_headers = ["X-Team"]
verify = 0.25
"#;

/// An origin that answers with the caller's team, and a cookie for the blue one.
async fn team_origin() -> Origin {
    Origin::start(|seen, _| {
        let team = seen
            .headers
            .get("x-team")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        let reply = Reply::ok(format!("{{\"team\":\"{team}\"}}"));
        if team == "blue" {
            reply.header("set-cookie", "sid=s3cr3t-blue")
        } else {
            reply
        }
    })
    .await
}

/// Hit `i` (counting from 0) comes from the blue team when it is one of every eighth.
fn team_of(i: usize) -> &'static str {
    if i % 8 == 7 { "blue" } else { "red" }
}

async fn status_json(admin: SocketAddr) -> Value {
    let got = get(admin, "/status.json", &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    serde_json::from_slice(&got.body).expect("status.json is JSON")
}

fn verify_route<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["verify"]["routes"]
        .as_array()
        .expect("verify.routes is a list")
        .iter()
        .find(|r| r["route"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {:#}", status["verify"]))
}

/// Waits until the route's verifications that were sent have all been recorded.
async fn settled(admin: SocketAddr, route: &str, recorded: u64) {
    eventually(
        &format!("{recorded} verifications of {route} recorded"),
        Duration::from_secs(10),
        async || {
            let status = status_json(admin).await;
            let r = verify_route(&status, route);
            let n = |f: &str| r[f].as_u64().unwrap();
            n("verified") + n("errors") + n("skipped") == recorded
        },
    )
    .await;
}

/// `cachalot run` as a process on free ports, its stderr (JSON lines) collected.
struct Running {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    policy: tempfile::NamedTempFile,
}

impl Running {
    async fn start(origin: &Origin, redis: &support::RedisServer, routes: &str) -> Self {
        let Spawned {
            mut child,
            addr,
            admin,
            policy,
        } = spawn_run(
            origin.addr(),
            &redis.url(),
            routes,
            &["--log-format", "json"],
            &[],
        );
        let (lines, _reader) = collect_lines(child.stderr.take().unwrap());
        eventually("cachalot to listen", Duration::from_secs(10), async || {
            tokio::net::TcpStream::connect(admin).await.is_ok()
        })
        .await;
        Self {
            child,
            addr,
            admin,
            lines,
            policy,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// `cachalot explain` on the running proxy's policy file, with `args` before the request.
    fn explain(&self, args: &[&str], request: &str) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_cachalot"))
            .args(["explain", "--config"])
            .arg(self.policy.path())
            .args(args)
            .arg(request)
            .env_remove("CACHALOT_ADMIN_LISTEN")
            .output()
            .expect("cachalot explain runs")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn answers_that_depend_on_an_unkeyed_header_are_counted_shown_and_logged_once() {
    let redis = support::RedisServer::start();
    let origin = team_origin().await;
    let proxy = Running::start(&origin, &redis, TEAM).await;

    let stored = get(proxy.addr, "/team/1", &[("x-team", "red")]).await;
    assert!(stored.stored(), "{}", stored.cache_status());
    assert_eq!(stored.text(), "{\"team\":\"red\"}");
    for i in 0..40 {
        let hit = get(proxy.addr, "/team/1", &[("x-team", team_of(i))]).await;
        assert!(hit.hit(), "hit {i}: {}", hit.cache_status());
        assert_eq!(hit.body, stored.body, "hit {i} got another answer");
        assert!(hit.header("set-cookie").is_empty());
    }
    settled(proxy.admin, "team", 10).await;

    // Exactly a quarter of 40 hits reached the origin, besides the fill: the 4th, 8th, …;
    // every 8th hit came from blue, so half of those answered differently.
    assert_eq!(origin.count(), 1 + 10);
    let blue = origin
        .seen()
        .iter()
        .filter(|s| s.headers.get("x-team").is_some_and(|v| v == "blue"))
        .count();
    assert_eq!(blue, 5);

    let status = status_json(proxy.admin).await;
    let team = verify_route(&status, "team");
    assert_eq!(team["fraction"], 0.25);
    for (field, n) in [
        ("verified", 10),
        ("matched", 5),
        ("mismatches", 5),
        ("changed", 0),
        ("errors", 0),
        ("skipped", 0),
    ] {
        assert_eq!(team[field], n, "{field}: {team:#}");
    }
    let examples = status["verify"]["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 5, "{examples:#?}");
    for example in examples {
        assert_eq!(example["key"], "team:1");
        assert_eq!(example["result"], "mismatch");
        let parts: Vec<&str> = example["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["part"].as_str().unwrap())
            .collect();
        assert_eq!(parts, ["body", "set-cookie"]);
        assert!(example["at"].as_str().unwrap().ends_with('Z'));
    }

    let metrics = scrape(proxy.admin).await;
    let verified = |result: &str| {
        metrics.sum(
            "cachalot_verify_total",
            &[("route", "team"), ("result", result)],
        )
    };
    assert_eq!(
        [
            verified("match"),
            verified("mismatch"),
            verified("changed"),
            verified("error"),
            verified("skipped")
        ],
        [5.0, 5.0, 0.0, 0.0, 0.0]
    );
    assert_eq!(
        metrics.sum(
            "cachalot_verify_differences_total",
            &[("route", "team"), ("part", "body")]
        ),
        5.0
    );
    assert!(
        metrics
            .text
            .contains("# HELP cachalot_verify_total Fresh hits verified")
    );

    // One log line for the key, naming what differed and nothing of its content.
    let logged: Vec<Value> = proxy
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shadow verification"))
        })
        .collect();
    assert_eq!(logged.len(), 1, "{logged:#?}");
    let line = &logged[0];
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["key"], "team:1");
    assert_eq!(line["route"], "team");
    assert_eq!(line["result"], "mismatch");
    let differs = line["differs"].as_str().unwrap();
    assert!(
        differs.starts_with("body (14 bytes stored, 15 now), set-cookie"),
        "{differs}"
    );
    let all = proxy.lines().join("\n");
    for secret in ["s3cr3t", "sid=", "\\\"team\\\""] {
        assert!(!all.contains(secret), "{secret} was logged");
    }

    // explain prints the setting, and with --live what the running proxy found.
    let offline = proxy.explain(&[], "GET /team/1");
    let text = String::from_utf8(offline.stdout).unwrap();
    assert!(
        text.contains("verify      25% of fresh hits are asked of the origin again"),
        "{text}"
    );
    assert!(!text.contains("verified"), "{text}");
    let live = proxy.explain(&["--live"], "GET /team/1");
    assert!(live.status.success(), "{live:?}");
    let text = String::from_utf8(live.stdout).unwrap();
    assert!(
        text.contains("verified    verified 10 times, 5 mismatches, 0 changed since stored"),
        "{text}"
    );
}

#[tokio::test]
async fn a_refreshed_resource_is_changed_not_a_mismatch_and_a_failed_check_an_error() {
    // Every answer is a new version with its own ETag; from the fifth request on, the
    // origin is slower than the route's timeout.
    let stack = Stack::builder(
        r#"
[[route]]
name = "versioned"
match = "GET /doc/{id}"
ttl = "10m"
timeout = "500ms"
verify = 1
"#,
    )
    .start_with(|_, n| {
        let reply = Reply::ok(format!("version {n}")).header("etag", &format!("\"v{n}\""));
        if n >= 5 {
            reply.delay(Duration::from_secs(3))
        } else {
            reply
        }
    })
    .await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = &stack;
    let stored = stack.get("/doc/1", &[]).await;
    assert_eq!(stored.text(), "version 1");
    for _ in 0..3 {
        let hit = stack.get("/doc/1", &[]).await;
        assert!(hit.hit());
        assert_eq!(hit.text(), "version 1");
        assert_eq!(hit.header("etag"), "\"v1\"");
    }
    settled(proxy.admin_addr(), "versioned", 3).await;
    let status = status_json(proxy.admin_addr()).await;
    let route = verify_route(&status, "versioned");
    assert_eq!(
        (&route["changed"], &route["mismatches"], &route["matched"]),
        (&Value::from(3), &Value::from(0), &Value::from(0)),
        "{route:#}"
    );
    assert!(
        status["verify"]["examples"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["result"] == "changed")
    );

    // The origin now takes longer than the route's timeout: the check is an error, the
    // client's hit is as fast and as whole as before.
    let started = std::time::Instant::now();
    let hit = stack.get("/doc/1", &[]).await;
    assert!(hit.hit());
    assert_eq!(hit.text(), "version 1");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the hit waited for its verification"
    );
    settled(proxy.admin_addr(), "versioned", 4).await;
    let status = status_json(proxy.admin_addr()).await;
    assert_eq!(verify_route(&status, "versioned")["errors"], 1);
    assert_eq!(origin.count(), 5);
}

/// An origin that answers its first request at once and holds every later one until
/// released, counting how many it holds at most.
struct GatedOrigin {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    most_held: Arc<AtomicUsize>,
    release: tokio::sync::watch::Sender<bool>,
}

impl GatedOrigin {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let most_held = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let (s, h, m) = (served.clone(), held.clone(), most_held.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, h, m, gate) = (s.clone(), h.clone(), m.clone(), gate.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_: Request<Incoming>| {
                        let (s, h, m, mut gate) = (s.clone(), h.clone(), m.clone(), gate.clone());
                        async move {
                            if s.fetch_add(1, Ordering::SeqCst) > 0 {
                                let now = h.fetch_add(1, Ordering::SeqCst) + 1;
                                m.fetch_max(now, Ordering::SeqCst);
                                let _ = gate.wait_for(|open| *open).await;
                                h.fetch_sub(1, Ordering::SeqCst);
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"the same answer",
                            ))))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            served,
            most_held,
            release,
        }
    }
}

#[tokio::test]
async fn a_slow_origin_gets_at_most_concurrency_checks_and_the_rest_are_skipped() {
    let gated = GatedOrigin::start().await;
    let redis = support::RedisServer::start();
    let routes = r#"
[verify]
concurrency = 2

[[route]]
name = "gated"
match = "GET /slow/{id}"
ttl = "10m"
timeout = "30s"
verify = 1
"#;
    let proxy = support::start_proxy_with(gated.addr, &redis.url(), routes).await;
    assert!(get(proxy.addr(), "/slow/1", &[]).await.stored());
    for i in 0..20 {
        let hit = get(proxy.addr(), "/slow/1", &[]).await;
        assert!(hit.hit(), "hit {i}: {}", hit.cache_status());
        assert_eq!(hit.text(), "the same answer");
    }
    // Skipping is decided as the hit is answered: the counts are final already.
    let status = status_json(proxy.admin_addr()).await;
    let route = verify_route(&status, "gated");
    assert_eq!(route["skipped"], 18, "{route:#}");
    assert_eq!(status["verify"]["in_flight"], 2);
    assert_eq!(status["verify"]["concurrency"], 2);
    eventually(
        "the two checks to reach the origin",
        Duration::from_secs(10),
        async || {
            gated.served.load(Ordering::SeqCst) == 1 + 2
                && gated.most_held.load(Ordering::SeqCst) == 2
        },
    )
    .await;

    gated.release.send(true).unwrap();
    settled(proxy.admin_addr(), "gated", 20).await;
    let status = status_json(proxy.admin_addr()).await;
    assert_eq!(verify_route(&status, "gated")["matched"], 2);
    eventually(
        "the places to be freed",
        Duration::from_secs(5),
        async || status_json(proxy.admin_addr()).await["verify"]["in_flight"] == 0,
    )
    .await;
    // With places free again, the next hit is checked.
    assert!(get(proxy.addr(), "/slow/1", &[]).await.hit());
    settled(proxy.admin_addr(), "gated", 21).await;
    assert_eq!(gated.served.load(Ordering::SeqCst), 1 + 3);
}

/// The names of the headers an origin request carried.
fn names(headers: &http::HeaderMap) -> BTreeSet<String> {
    headers.keys().map(|n| n.as_str().to_string()).collect()
}

#[tokio::test]
async fn no_client_header_starts_a_check_or_reaches_the_origin_through_one() {
    let stack = Stack::builder(
        r#"
[verify]
fraction = 1

[[route]]
name = "quiet"
match = "GET /quiet/{id}"
ttl = "10m"
verify = 0

[[route]]
name = "checked"
match = "GET /checked/{id}"
ttl = "10m"
"#,
    )
    .start()
    .await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = &stack;
    let pushy = [
        ("x-cachalot-verify", "1"),
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
        ("x-api-key", "key-7f3a"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "host=evil.example"),
        ("x-original-url", "/admin"),
    ];
    // verify = 0 wins over the global default: no header turns it on.
    assert!(stack.get("/quiet/1", &[]).await.stored());
    for _ in 0..5 {
        assert!(stack.get("/quiet/1", &pushy).await.hit());
    }
    // The global default verifies every hit of the other route, with the fill's headers.
    let fill = stack
        .get("/checked/1", &[("accept", "application/json")])
        .await;
    assert!(fill.stored());
    let hit = stack.get("/checked/1", &pushy).await;
    let plain = stack.get("/checked/1", &[]).await;
    settled(proxy.admin_addr(), "checked", 2).await;
    assert_eq!(origin.count_of("/quiet/1"), 1);
    assert_eq!(origin.count_of("/checked/1"), 3);

    let seen: Vec<_> = origin
        .seen()
        .into_iter()
        .filter(|s| s.target == "/checked/1")
        .collect();
    let fill_names = names(&seen[0].headers);
    for check in &seen[1..] {
        let mut check_names = names(&check.headers);
        // The fill's client sent Accept, which a fill passes on; the others did not.
        check_names.insert("accept".into());
        assert_eq!(check_names, fill_names, "{:?}", check.headers);
        assert_eq!(check.method, "GET");
        assert_eq!(check.headers["accept-encoding"], "identity");
        for value in check.headers.values() {
            let value = value.to_str().unwrap();
            assert!(
                !value.contains("evil") && !value.contains("key-7f3a"),
                "{value}"
            );
        }
    }

    // The client cannot tell a verified hit from another.
    for got in [&hit, &plain] {
        assert!(got.hit(), "{}", got.cache_status());
        assert_eq!(got.body, fill.body);
    }
    let shape = |got: &Got| {
        let mut n = names(&got.headers);
        n.remove("age");
        n
    };
    assert_eq!(shape(&hit), shape(&plain));
}

#[tokio::test]
async fn hits_from_the_in_process_tier_are_verified_too() {
    let stack = Stack::builder(
        r#"
[l1]
size = "1MiB"

[[route]]
name = "near"
match = "GET /near/{id}"
ttl = "10m"
l1 = true
verify = 1
"#,
    )
    .start()
    .await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = &stack;
    assert!(stack.get("/near/1", &[]).await.stored());
    let mut from_l1 = 0;
    for _ in 0..4 {
        let hit = stack.get("/near/1", &[]).await;
        assert!(hit.hit(), "{}", hit.cache_status());
        from_l1 += usize::from(hit.cache_status().ends_with("/l1"));
    }
    assert!(from_l1 > 0, "no hit came from the in-process tier");
    settled(proxy.admin_addr(), "near", 4).await;
    assert_eq!(origin.count(), 1 + 4);
}

#[tokio::test]
async fn a_reload_changes_the_share_from_the_next_hit() {
    let redis = support::RedisServer::start();
    let origin = Origin::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cachalot.toml");
    let routes = |share: &str| {
        format!(
            "[[route]]\nname = \"reloaded\"\nmatch = \"GET /r/{{id}}\"\nttl = \"10m\"\nverify = {share}\n"
        )
    };
    std::fs::write(
        &path,
        policy_text(origin.addr(), &redis.url(), &routes("0")),
    )
    .unwrap();
    let policy = cachalot::Policy::load(&path).unwrap();
    let server = cachalot::Server::start_watching(policy, path.clone())
        .await
        .unwrap();
    assert!(get(server.addr(), "/r/1", &[]).await.stored());
    for _ in 0..4 {
        assert!(get(server.addr(), "/r/1", &[]).await.hit());
    }
    assert_eq!(origin.count(), 1);

    std::fs::write(
        &path,
        policy_text(origin.addr(), &redis.url(), &routes("0.5")),
    )
    .unwrap();
    eventually(
        "the edited policy to apply",
        Duration::from_secs(10),
        async || {
            let policy = server.proxy().policy();
            let route = policy.routes.iter().next().unwrap();
            policy.verify_fraction(route).to_string() == "50%"
        },
    )
    .await;
    for _ in 0..6 {
        assert!(get(server.addr(), "/r/1", &[]).await.hit());
    }
    settled(server.admin_addr(), "reloaded", 3).await;
    assert_eq!(origin.count(), 1 + 3);
}

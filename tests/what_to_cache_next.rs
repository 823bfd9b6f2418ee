//! What to cache next, against a real Redis, origin and proxy: GET and HEAD requests no
//! cached route answers are grouped by path shape (or by their `cache = false` route),
//! ranked by the origin time they cost, with exact counts and the share a default route
//! would store; a flood of random paths stays bounded; `cachalot report` reads a running
//! proxy and drafts routes that `cachalot check` accepts.

mod support;

use http::Method;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use support::files::policy_file;
use support::{Reply, Stack, send};

const ROUTES: &str = r#"
[[route]]
name = "item"
match = "GET /items/{id}"
ttl = "10m"

[[route]]
name = "feed"
match = "GET /feed"
cache = false
"#;

const UUIDS: [&str; 3] = [
    "9b2e1c3a-0000-4000-8000-00000000002a",
    "9B2E1C3A-0000-4000-8000-00000000002B",
    "51aa0000-1111-4222-8333-444455556666",
];

/// The origin: users' orders are slow-ish and storable, reports slow and half of them set
/// a cookie, searches fast and private, `/health` a 204.
fn origin(seen: &support::origin::Seen, _n: usize) -> Reply {
    let path = seen.target.split('?').next().unwrap_or_default();
    if path.starts_with("/users/") {
        Reply::ok("{}").delay(Duration::from_millis(60))
    } else if let Some(id) = path.strip_prefix("/reports/") {
        let reply = Reply::ok("{}").delay(Duration::from_millis(200));
        if id.parse::<u32>().unwrap_or(0) % 2 == 1 {
            reply.header("set-cookie", "seen=1")
        } else {
            reply
        }
    } else if path == "/search" {
        Reply::ok("[]").header("cache-control", "private")
    } else if path == "/health" {
        Reply::ok("").status(204)
    } else {
        Reply::ok("{}")
    }
}

/// Users' orders: 6 GETs (3 ids) and 2 HEADs; reports: 4 (2 with Set-Cookie); searches: 10
/// with a secret in the query; feed (a `cache = false` route): 3; cached items and writes
/// never count.
async fn send_traffic(proxy: SocketAddr) {
    for round in 0..2 {
        for (i, uuid) in UUIDS.iter().enumerate() {
            send(
                proxy,
                Method::GET,
                &format!("/users/{}/orders/{uuid}", i + round),
                &[],
                Default::default(),
            )
            .await;
        }
    }
    for i in 0..2 {
        send(
            proxy,
            Method::HEAD,
            &format!("/users/{i}/orders/{}", UUIDS[0]),
            &[],
            Default::default(),
        )
        .await;
    }
    for id in 1..=4 {
        support::get(proxy, &format!("/reports/{id}"), &[]).await;
    }
    for i in 0..10 {
        support::get(proxy, &format!("/search?q=secret-token-{i}"), &[]).await;
    }
    for _ in 0..3 {
        support::get(proxy, "/feed", &[]).await;
    }
    for _ in 0..3 {
        support::get(proxy, "/items/1", &[]).await;
    }
    support::get(proxy, "/health", &[]).await;
    send(proxy, Method::POST, "/users/1/orders", &[], "{}".into()).await;
}

async fn status(admin: SocketAddr) -> Value {
    let got = support::get(admin, "/status.json", &[]).await;
    assert_eq!(got.status, 200);
    serde_json::from_slice(&got.body).expect("status.json is JSON")
}

fn row<'a>(uncached: &'a Value, method: &str, shape: &str) -> &'a Value {
    uncached["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == method && r["shape"] == shape)
        .unwrap_or_else(|| panic!("no row {method} {shape} in {uncached:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncached_traffic_is_grouped_and_ranked_by_origin_time() {
    let stack = Stack::builder(ROUTES).start_with(origin).await;
    send_traffic(stack.addr()).await;

    let status = status(stack.admin()).await;
    let uncached = &status["uncached"];
    let text = uncached.to_string();
    assert!(
        !text.contains("secret-token"),
        "query values never show: {text}"
    );
    let shapes: Vec<(&str, &str)> = uncached["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["method"].as_str().unwrap(), r["shape"].as_str().unwrap()))
        .collect();
    // Most origin time first: 4 × 200 ms, 6 × 60 ms, 2 × 60 ms; then the fast ones.
    assert_eq!(
        shapes[..3],
        [
            ("GET", "/reports/<int>"),
            ("GET", "/users/<int>/orders/<uuid>"),
            ("HEAD", "/users/<int>/orders/<uuid>"),
        ],
        "{uncached:#}"
    );
    assert_eq!(shapes.len(), 6, "{uncached:#}");
    assert!(!shapes.iter().any(|(_, s)| s.starts_with("/items")));

    let reports = row(uncached, "GET", "/reports/<int>");
    assert_eq!(reports["requests"], 4);
    assert_eq!(reports["storable"], 2);
    assert_eq!(reports["storable_share"], 0.5);
    assert!(reports["origin_total_s"].as_f64().unwrap() >= 0.8);
    assert!(reports["p50_ms"].as_f64().unwrap() >= 198.0, "{reports}");

    let orders = row(uncached, "GET", "/users/<int>/orders/<uuid>");
    assert_eq!(orders["requests"], 6);
    assert_eq!(orders["storable_share"], 1.0);
    assert_eq!(orders["route"], Value::Null);
    let p50 = orders["p50_ms"].as_f64().unwrap();
    assert!(p50 >= 59.0, "{orders}");
    assert!(orders["p99_ms"].as_f64().unwrap() >= p50);
    assert_eq!(
        row(uncached, "HEAD", "/users/<int>/orders/<uuid>")["requests"],
        2
    );

    let search = row(uncached, "GET", "/search");
    assert_eq!(search["requests"], 10);
    assert_eq!(search["storable"], 0);
    assert_eq!(row(uncached, "GET", "/health")["storable"], 0);
    let feed = row(uncached, "GET", "feed");
    assert_eq!(feed["route"], "feed");
    assert_eq!(feed["requests"], 3);
    assert_eq!(feed["storable_share"], 1.0);

    assert_eq!(uncached["tracked"], 6);
    assert_eq!(uncached["folded"], 0);
    assert_eq!(uncached["other"], Value::Null);
}

/// `/flood/<letters>`: a word, so every one is a shape of its own.
fn word(i: usize) -> String {
    let mut n = i;
    let mut word = String::from("w");
    for _ in 0..4 {
        word.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
    }
    word
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_paths_stays_bounded() {
    let stack = Stack::builder(ROUTES)
        .start_with(|seen, _| {
            if seen.target.starts_with("/slow") {
                Reply::ok("{}").delay(Duration::from_millis(30))
            } else {
                Reply::ok("{}")
            }
        })
        .await;
    for _ in 0..5 {
        stack.get("/slow/report", &[]).await;
    }
    const FLOOD: usize = 600;
    let proxy = stack.addr();
    let mut clients = Vec::new();
    for client in 0..6 {
        clients.push(tokio::spawn(async move {
            for i in (client..FLOOD).step_by(6) {
                support::get(proxy, &format!("/flood/{}", word(i)), &[]).await;
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    for _ in 0..2 {
        stack.get("/slow/report", &[]).await;
    }

    let uncached = &status(stack.admin()).await["uncached"];
    // 601 shapes for 200 places: the 401 cheapest, one request each, are folded.
    assert_eq!(uncached["tracked"], 200, "{uncached:#}");
    assert_eq!(uncached["folded"], 401);
    let other = &uncached["other"];
    assert_eq!(other["requests"], 401);
    assert_eq!(other["shape"], "(other)");
    let rows = uncached["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 50, "the page shows the top 50");
    assert_eq!(rows[0]["shape"], "/slow/report");
    assert_eq!(rows[0]["requests"], 7);
    let shown: u64 = rows[1..]
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(shown, 49, "every flood row is one request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cachalot_report_prints_the_ranking_and_routes_check_accepts() {
    let stack = Stack::builder(ROUTES).start_with(origin).await;
    send_traffic(stack.addr()).await;

    let out = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args([
            "report",
            "--top",
            "10",
            "--admin",
            &format!("http://{}", stack.admin()),
        ])
        .env_remove("CACHALOT_CONFIG")
        .env_remove("CACHALOT_ADMIN_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports = stdout.find("GET    /reports/<int>").expect(&stdout);
    let orders = stdout
        .find("GET    /users/<int>/orders/<uuid>")
        .expect(&stdout);
    assert!(reports < orders, "ranked by origin time: {stdout}");
    assert!(!stdout.contains("secret-token"), "{stdout}");
    // Storable rows get routes (GET and HEAD of one shape: one route); the rest do not.
    assert!(
        stdout.contains("match = \"GET /reports/<int:report>\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("match = \"GET /users/<int:user>/orders/<uuid:order>\""),
        "{stdout}"
    );
    assert_eq!(stdout.matches("[[route]]").count(), 2, "{stdout}");
    assert!(stdout.contains("Already the route \"feed\""), "{stdout}");
    let draft = &stdout[stdout.find("# Routes for the top rows").expect(&stdout)..];

    // Appended to the running policy, the draft passes `check`, route by route.
    let dir = tempfile::tempdir().unwrap();
    let policy = support::policy_text(stack.origin.addr(), &stack.redis.url(), ROUTES);
    let file = policy_file(dir.path(), "next.toml", &format!("{policy}\n{draft}"));
    let checked = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["check", "--config"])
        .arg(&file)
        .env_remove("CACHALOT_CONFIG")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(table.contains("(4 routes)"), "{table}");

    // Without --admin, the policy file's [listen] admin says where to ask.
    let admin_policy = policy.replace(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"{}\"", stack.admin()),
    );
    let file = policy_file(dir.path(), "running.toml", &admin_policy);
    let out = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["report", "--top", "1", "--config"])
        .arg(&file)
        .env_remove("CACHALOT_ADMIN_URL")
        .env_remove("CACHALOT_ADMIN_LISTEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout.matches("[[route]]").count(), 1, "{stdout}");

    // Nowhere to ask: a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .arg("report")
        .env_remove("CACHALOT_ADMIN_URL")
        .env_remove("CACHALOT_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin http://HOST:PORT"));
}

//! The live status page on the admin listener, against a real Redis, origin and proxy:
//! `/status.json` counts per route and reports health, and the page shows the same numbers
//! in a real browser (Debian's headless Chromium), with a screenshot kept as an artifact.

mod support;
mod webdriver;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{Origin, RedisServer, get, start_proxy, start_proxy_redis};
use webdriver::Browser;

const ROUTES: &str = r#"
[[route]]
name = "item"
match = "GET /items/{id}"
ttl = "1m"
verify = 0.5

[[route]]
name = "user"
match = "GET /users/{id}"
ttl = "1m"

[[route]]
name = "feed"
match = "GET /feed"
ttl = "1m"
"#;

/// item: 1 miss and 4 hits (80%); user: 3 misses and 3 hits (50%); 2 requests no route takes.
async fn send_traffic(proxy: SocketAddr) {
    for _ in 0..5 {
        get(proxy, "/items/1", &[]).await;
    }
    for _ in 0..2 {
        for id in 1..=3 {
            get(proxy, &format!("/users/{id}"), &[]).await;
        }
    }
    for _ in 0..2 {
        get(proxy, "/elsewhere", &[]).await;
    }
}

async fn status_json(admin: SocketAddr) -> Value {
    let got = get(admin, "/status.json", &[]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), "application/json");
    serde_json::from_slice(&got.body).expect("status.json is JSON")
}

fn route<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["routes"]
        .as_array()
        .expect("routes is a list")
        .iter()
        .find(|r| r["route"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {status:#}"))
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn status_json_counts_per_route_and_reports_health() {
    let mut redis = RedisServer::start();
    let origin = Origin::echo().await;
    let server = start_proxy(&origin, &redis, ROUTES).await;
    send_traffic(server.addr()).await;

    let status = status_json(server.admin_addr()).await;
    let item = route(&status, "item");
    assert_eq!(item["requests"], 5);
    assert_eq!(item["hits"], 4);
    assert_eq!(item["misses"], 1);
    assert_eq!(item["hit_ratio"], 0.8);
    assert_eq!(item["origin_requests_saved"], 4);
    assert!(item["p50_ms"].as_f64().unwrap() > 0.0, "{item}");
    assert!(item["p99_ms"].as_f64().unwrap() >= item["p50_ms"].as_f64().unwrap());
    assert_eq!(route(&status, "user")["hit_ratio"], 0.5);
    assert_eq!(route(&status, "(no route)")["passed"], 2);
    let elsewhere = &status["uncached"]["rows"][0];
    assert_eq!(elsewhere["shape"], "/elsewhere", "{status:#}");
    assert_eq!(elsewhere["requests"], 2);
    assert_eq!(status["totals"]["requests"], 13);
    assert_eq!(status["totals"]["origin_requests_saved"], 7);
    assert_eq!(status["totals"]["hit_ratio"], 7.0 / 11.0);
    assert_eq!(status["policy"]["file"], "test.toml");
    assert_eq!(status["policy"]["routes"], 3);
    assert!(status["uptime_s"].as_f64().unwrap() > 0.0);
    assert_eq!(status["redis"]["healthy"], true);
    assert_eq!(status["origin"]["reachable"], true, "{status:#}");
    assert_eq!(
        status["origin"]["url"],
        format!("http://{}/", origin.addr())
    );

    // Both dependencies fail: the page says so, and still answers.
    origin.stop();
    redis.kill();
    eventually("Redis and the origin to show as down", async || {
        get(server.addr(), "/items/2", &[]).await;
        let status = status_json(server.admin_addr()).await;
        status["redis"]["healthy"] == false && status["origin"]["reachable"] == false
    })
    .await;
    let status = status_json(server.admin_addr()).await;
    assert!(status["origin"]["error"].is_string(), "{status:#}");
}

#[tokio::test]
async fn the_page_is_self_contained_html_and_the_admin_listener_only_reads() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let server = start_proxy(&origin, &redis, ROUTES).await;
    let page = get(server.admin_addr(), "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(
        page.header("content-security-policy")
            .contains("default-src 'none'"),
        "nothing but the page itself and status.json may load"
    );
    assert!(page.text().contains("status.json"));
    let post = support::send(
        server.admin_addr(),
        http::Method::POST,
        "/status.json",
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(post.status, 405);
    // The public port knows nothing of it: the page is the origin's business there.
    get(server.addr(), "/status.json", &[]).await;
    assert_eq!(origin.count_of("/status.json"), 1);
}

/// Every rendered table cell as `{route: {field: {text, value}}}`, plus the health cards.
const READ_PAGE: &str = r#"
const rows = {};
for (const tr of document.querySelectorAll("tr[data-route]")) {
  const row = rows[tr.dataset.route] = {};
  for (const td of tr.querySelectorAll("td[data-field]")) {
    row[td.dataset.field] = { text: td.textContent, value: td.dataset.value ?? null };
  }
}
const card = (id) => ({ class: document.getElementById(id).className,
                        text: document.getElementById(id).textContent });
const cells = (selector, name) => {
  const out = {};
  for (const tr of document.querySelectorAll(selector)) {
    const row = out[tr.getAttribute(name)] = {};
    for (const td of tr.querySelectorAll("td[data-field]")) row[td.dataset.field] = td.textContent;
  }
  return out;
};
return { rows, redis: card("redis"), origin: card("origin"),
         uncached: cells("tr[data-uncached]", "data-uncached"),
         memory: cells("tr[data-memory-route]", "data-memory-route"),
         memorySummary: document.getElementById("memory-summary").textContent };
"#;

/// The shadow verification table's cells by route, and the examples listed under it.
const READ_VERIFY: &str = r##"
const rows = {};
for (const tr of document.querySelectorAll("tr[data-verify-route]")) {
  const row = rows[tr.dataset.verifyRoute] = {};
  for (const td of tr.querySelectorAll("td[data-field]")) row[td.dataset.field] = td.textContent;
}
const examples = [...document.querySelectorAll("#verify-examples li")].map((li) =>
  ({ key: li.dataset.key, result: li.dataset.result, text: li.textContent }));
return { rows, examples };
"##;

fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_live_numbers_in_a_real_browser() {
    let redis = RedisServer::start_with(&["--maxmemory", "32mb"]);
    let origin = Origin::echo().await;
    let server = start_proxy_redis(
        origin.addr(),
        &redis.url(),
        "memory_sample_interval = \"200ms\"",
        ROUTES,
    )
    .await;
    send_traffic(server.addr()).await;

    // The feed route stays busy while the browser watches, so requests/s is not zero.
    let busy = Arc::new(AtomicBool::new(true));
    let feed = tokio::spawn({
        let busy = Arc::clone(&busy);
        let proxy = server.addr();
        async move {
            for _ in 0..5_000 {
                if !busy.load(Ordering::Relaxed) {
                    break;
                }
                get(proxy, "/feed", &[]).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    let browser = Browser::start().await;
    browser
        .open(&format!("http://{}/", server.admin_addr()))
        .await;
    // Requests/s needs two polls, two seconds apart: the numbers are all there after that.
    let deadline = Instant::now() + Duration::from_secs(8);
    let page = loop {
        let page = browser.eval(READ_PAGE).await;
        let shown = |route: &str, field: &str| {
            page["rows"][route][field]["text"]
                .as_str()
                .is_some_and(|t| t.chars().any(|c| c.is_ascii_digit()))
        };
        let measured = page["memory"]["user"]["keys"]
            .as_str()
            .is_some_and(|keys| keys == "3");
        if shown("item", "hit_ratio") && shown("feed", "rps") && measured {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the numbers did not appear: {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The echo origin numbers its answers, so each of item's two checks (every second of
    // its four hits) differs from the stored one: the page shows both mismatches.
    let deadline = Instant::now() + Duration::from_secs(8);
    let verify = loop {
        let verify = browser.eval(READ_VERIFY).await;
        if verify["rows"]["item"]["findings"]
            .as_str()
            .is_some_and(|t| t.starts_with("verified 2,"))
        {
            break verify;
        }
        assert!(
            Instant::now() < deadline,
            "the verification did not appear: {verify:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let item = &verify["rows"]["item"];
    assert_eq!(
        item["findings"],
        "verified 2, 2 mismatches, 0 changed since stored"
    );
    assert_eq!(item["fraction"], "50.0%");
    assert_eq!(
        (&item["errors"], &item["skipped"]),
        (&"0".into(), &"0".into())
    );
    assert!(verify["rows"]["user"].is_null(), "{verify:#}");
    let examples = verify["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 2, "{verify:#}");
    for example in examples {
        assert_eq!(example["key"], "item:1");
        assert_eq!(example["result"], "mismatch");
        let text = example["text"].as_str().unwrap();
        assert!(
            text.contains("differs for the same version: body ("),
            "{text}"
        );
    }
    let status = status_json(server.admin_addr()).await;
    let checked = &status["verify"]["routes"][0];
    assert_eq!(
        (&checked["route"], &checked["mismatches"]),
        (&"item".into(), &2.into())
    );

    let screenshot = artifact("status-page.png");
    std::fs::write(&screenshot, browser.screenshot().await).expect("screenshot saved");
    busy.store(false, Ordering::Relaxed);
    feed.await.unwrap();

    let status = status_json(server.admin_addr()).await;
    for name in ["item", "user"] {
        let expected = route(&status, name);
        let shown = &page["rows"][name];
        let ratio = expected["hit_ratio"].as_f64().unwrap();
        assert_eq!(
            shown["hit_ratio"]["text"],
            format!("{:.1}%", ratio * 100.0),
            "{name}"
        );
        let value = shown["hit_ratio"]["value"].as_str().unwrap();
        assert_eq!(value.parse::<f64>().unwrap(), ratio, "{name}");
        assert_eq!(
            shown["requests"]["text"],
            expected["requests"].to_string(),
            "{name}"
        );
        assert_eq!(
            shown["origin_requests_saved"]["text"],
            expected["origin_requests_saved"].to_string(),
            "{name}"
        );
        for field in ["p50_ms", "p99_ms"] {
            let latency = shown[field]["text"].as_str().unwrap();
            assert!(latency.ends_with(" ms"), "{name} {field}: {latency}");
        }
    }
    let rps = page["rows"]["feed"]["rps"]["text"].as_str().unwrap();
    assert!(
        rps.parse::<f64>().is_ok_and(|r| r > 0.0),
        "feed was busy between two polls: {rps}"
    );
    assert_eq!(page["redis"]["class"], "card up", "{page:#}");
    assert_eq!(page["origin"]["class"], "card up", "{page:#}");
    assert!(
        page["origin"]["text"]
            .as_str()
            .unwrap()
            .contains("reachable")
    );

    // What to cache next: the two requests no route took.
    let elsewhere = &page["uncached"]["GET /elsewhere"];
    assert_eq!(elsewhere["requests"], "2", "{page:#}");
    assert_eq!(elsewhere["storable_share"], "100.0%", "{page:#}");
    assert!(elsewhere["p99_ms"].as_str().unwrap().ends_with(" ms"));
    // Redis memory per route: one entry for item, three for user, as status.json says.
    let memory = &status["redis_memory"];
    for (name, keys) in [("item", "1"), ("user", "3")] {
        let shown = &page["memory"][name];
        assert_eq!(shown["keys"], keys, "{name}: {page:#}");
        let expected = memory["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .unwrap();
        assert!(expected["bytes"].as_u64().unwrap() > 0, "{memory:#}");
        assert!(
            shown["maxmemory_share"].as_str().unwrap().ends_with('%'),
            "{name}: {page:#}"
        );
        let stored = shown["stored_bytes_total"].as_str().unwrap();
        assert!(
            stored.ends_with(" B") || stored.ends_with("KiB"),
            "{stored}"
        );
    }
    let summary = page["memorySummary"].as_str().unwrap();
    assert!(summary.contains("32.0 MiB maxmemory"), "{summary}");

    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{}", screenshot.display());
    assert!(png.len() > 10_000, "a rendered page, not a blank one");
}

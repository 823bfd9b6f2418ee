//! `GET /metrics` after real traffic: every metric family the code defines is on the admin
//! listener, with the labels it is defined with, in valid Prometheus text format; route
//! labels are route names (or the `match` text of unnamed routes), never request paths.
//!
//! The recorder is process-wide (every proxy in this test binary shares it), so the checks
//! are presence and increases between a scrape before and one after the traffic, never
//! exact totals; and all the traffic runs in one test so that nothing else in this binary
//! adds to the numbers it compares (the other tests here record nothing in this process:
//! they check the checker, read `src/`, or run the real binary as a process of its own).

mod support;

use bytes::Bytes;
use cachalot::app::admin::AdminConfig;
use cachalot::{Policy, Server};
use http::Method;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::files::policy_file;
use support::prometheus::{
    Sample, check_histogram, family_of, parse, scrape, try_check_histogram, try_parse,
};
use support::{Got, Origin, RedisServer, Reply, get, policy_text, send};

const TOKEN: &str = "t";

const ROUTES: &str = r#"
[l1]
size = "16MiB"

[[route]]
name = "item"
match = "GET|POST /items/{id}"
ttl = "1m"
key = "item:{id}"
tags = ["items"]

[[route]]
match = "GET /things/{id}"
ttl = "2m"
max_variants = 1

[[route]]
name = "hot"
match = "GET /hot/{id}"
ttl = "3m"
key = "hot:{id}"
l1 = true

[[route]]
name = "news"
match = "GET /news/{id}"
ttl = "origin"
stale_while_revalidate = "1m"

[[route]]
name = "revoke"
match = "POST /items/{id}/revoke"
invalidate = ["item:{id}"]

[[route]]
match = "/auth/{*rest}"
cache = false
"#;

/// Every route label this test's policy can produce, plus `-` (no route matched).
const ROUTE_LABELS: &[&str] = &[
    "item",
    "GET /things/{id}",
    "hot",
    "news",
    "revoke",
    "/auth/{*rest}",
    "-",
    // Redis memory per route: keys of no route, and keys no route of the policy builds.
    "(proxy)",
    "(no route)",
];

/// The metric families the code defines: name, type, label names. The test also reads
/// `src/` and fails if the code defines a family (or labels) this table does not list.
/// Families the all-traffic scenario below cannot produce: rejected messages need
/// `[invalidation] secret_file`, which would refuse the scenario's own unsigned messages.
/// tests/invalidation_auth.rs checks their series. Shadow verification's need a route with
/// `verify` and an origin that answers differently; tests/verify.rs checks theirs.
/// The Redis memory gauges are set by a sampling pass (every 10 s by default) and the
/// maxmemory ones only with a limit: tests/redis_memory.rs checks them.
const EXERCISED_ELSEWHERE: &[&str] = &[
    "cachalot_invalidation_messages_rejected_total",
    "cachalot_redis_route_keys",
    "cachalot_redis_route_bytes",
    "cachalot_redis_route_maxmemory_ratio",
    "cachalot_redis_maxmemory_bytes",
    "cachalot_redis_used_memory_bytes",
    "cachalot_verify_total",
    "cachalot_verify_differences_total",
];

const FAMILIES: &[(&str, &str, &[&str])] = &[
    (
        "cachalot_requests_total",
        "counter",
        &["route", "phase", "reason"],
    ),
    (
        "cachalot_request_duration_seconds",
        "histogram",
        &["route", "phase"],
    ),
    ("cachalot_response_bytes_total", "counter", &["source"]),
    (
        "cachalot_origin_requests_total",
        "counter",
        &["route", "status"],
    ),
    ("cachalot_origin_duration_seconds", "histogram", &["route"]),
    (
        "cachalot_redis_command_duration_seconds",
        "histogram",
        &["command"],
    ),
    ("cachalot_redis_errors_total", "counter", &["kind"]),
    ("cachalot_collapse_waiters_total", "counter", &["scope"]),
    ("cachalot_collapse_timeouts_total", "counter", &[]),
    ("cachalot_background_refreshes_total", "counter", &["route"]),
    (
        "cachalot_invalidations_total",
        "counter",
        &["source", "outcome"],
    ),
    (
        "cachalot_invalidation_messages_malformed_total",
        "counter",
        &[],
    ),
    (
        "cachalot_invalidation_messages_rejected_total",
        "counter",
        &["reason"],
    ),
    ("cachalot_policy_reloads_total", "counter", &["outcome"]),
    ("cachalot_l1_lookups_total", "counter", &["result"]),
    ("cachalot_l1_entries", "gauge", &[]),
    ("cachalot_l1_bytes", "gauge", &[]),
    ("cachalot_build_info", "gauge", &["version"]),
    ("cachalot_redis_up", "gauge", &[]),
    ("cachalot_connections_refused_total", "counter", &[]),
    ("cachalot_send_timeouts_total", "counter", &["scope"]),
    ("cachalot_h2_late_resets_total", "counter", &[]),
    ("cachalot_variants_refused_total", "counter", &["route"]),
    ("cachalot_stored_bytes_total", "counter", &["route"]),
    ("cachalot_redis_route_keys", "gauge", &["route"]),
    ("cachalot_redis_route_bytes", "gauge", &["route"]),
    ("cachalot_redis_route_maxmemory_ratio", "gauge", &["route"]),
    ("cachalot_redis_maxmemory_bytes", "gauge", &[]),
    ("cachalot_redis_used_memory_bytes", "gauge", &[]),
    ("cachalot_verify_total", "counter", &["route", "result"]),
    (
        "cachalot_verify_differences_total",
        "counter",
        &["route", "part"],
    ),
    ("cachalot_log_lines_dropped_total", "counter", &[]),
];

/// A request id nobody else uses: if it shows up in `/metrics`, a raw path leaked into a label.
fn fresh_id(ids: &mut Vec<String>) -> String {
    let id = format!("q{:032x}", rand::random::<u128>());
    ids.push(id.clone());
    id
}

/// The origin: slow for `slow-` ids (so concurrent misses overlap), 404 for `missing-`
/// things, otherwise a small JSON body naming the target.
async fn origin() -> Origin {
    Origin::start(|seen, n| {
        let reply = Reply::ok(format!("{{\"target\":\"{}\",\"n\":{n}}}", seen.target));
        if seen.target.contains("/missing-") {
            reply.status(404)
        } else if seen.target.contains("/slow-") {
            reply.delay(Duration::from_millis(1000))
        } else if seen.target.starts_with("/news/") {
            reply.header("cache-control", "max-age=0")
        } else {
            reply
        }
    })
    .await
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn purge(admin: SocketAddr, body: &str) -> Got {
    send(
        admin,
        Method::POST,
        "/purge",
        &[("authorization", &bearer())],
        Bytes::from(body.to_string()),
    )
    .await
}

/// `PUBLISH channel message`, repeated until a subscriber heard it.
async fn publish(redis: &RedisServer, channel: &str, message: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = redis
            .command(&["PUBLISH", channel, message])
            .expect("PUBLISH");
        if reply.starts_with(':') && !reply.starts_with(":0") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nobody subscribed to {channel}: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until the in-process tier answers (it is trusted once the pub/sub feed is up).
async fn until_l1(addr: SocketAddr, path: &str) -> Got {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = get(addr, path, &[]).await;
        if got.cache_status().contains("; hit") && got.cache_status().ends_with("/l1") {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "never served from the tier: {}",
            got.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Scrapes until the tier's gauges (`cachalot_l1_entries`, `cachalot_l1_bytes`) satisfy
/// `ok`, for up to 5 s (the tier's own counts may settle a moment after a change); else
/// their last values. Only this test's proxy has a tier in this process, so the gauges are
/// its tier's.
async fn l1_gauges_until(
    admin: SocketAddr,
    ok: impl Fn(f64, f64) -> bool,
) -> Result<(), (f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = scrape(admin).await;
        let entries = now.sum("cachalot_l1_entries", &[]);
        let bytes = now.sum("cachalot_l1_bytes", &[]);
        if ok(entries, bytes) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err((entries, bytes));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The families the code defines, read from src/.

/// Every `counter!`, `gauge!` and `histogram!` call in `src/`: name → (type, label names).
fn families_in_source() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut found: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let code = std::fs::read_to_string(&path).expect("read source");
            for (kind, macro_call) in [
                ("counter", "counter!("),
                ("gauge", "gauge!("),
                ("histogram", "histogram!("),
            ] {
                for (at, _) in code.match_indices(macro_call) {
                    let before = code[..at].chars().next_back();
                    if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                        continue; // describe_counter! and the like
                    }
                    let args = macro_args(&code[at + macro_call.len()..]);
                    let where_ = format!("{}:{}", path.display(), code[..at].lines().count());
                    let name = args
                        .trim_start()
                        .strip_prefix('"')
                        .and_then(|rest| rest.split_once('"'))
                        .map(|(name, _)| name.to_string())
                        .unwrap_or_else(|| {
                            panic!("{where_}: metric name is not a literal: {args}")
                        });
                    let labels = label_names(&args);
                    let known = found
                        .entry(name.clone())
                        .or_insert_with(|| (kind.to_string(), labels.clone()));
                    assert_eq!(
                        known,
                        &(kind.to_string(), labels),
                        "{where_}: {name} is recorded with another type or other labels elsewhere"
                    );
                }
            }
        }
    }
    found
}

/// The text up to the macro call's closing parenthesis.
fn macro_args(code: &str) -> String {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in code.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => depth += 1,
            ')' if depth == 0 => return code[..i].to_string(),
            ')' => depth -= 1,
            _ => {}
        }
    }
    panic!("unterminated metrics macro call: {code:.80}")
}

/// The `"label" =>` names in a macro call's arguments.
fn label_names(args: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let mut rest = args;
    while let Some(arrow) = rest.find("=>") {
        let before = rest[..arrow].trim_end();
        let label = before
            .strip_suffix('"')
            .and_then(|b| b.rfind('"').map(|q| &b[q + 1..]))
            .unwrap_or_else(|| panic!("label name is not a literal in {args}"));
        labels.insert(label.to_string());
        rest = &rest[arrow + 2..];
    }
    labels
}

/// The checker itself: a valid exposition passes, each kind of damage is caught.
#[test]
fn the_format_checker_rejects_malformed_expositions() {
    let valid = "# HELP a_total Things.\n# TYPE a_total counter\na_total{route=\"GET /x/{id}\",k=\"v\\\"q\"} 3\n\n\
                 # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n";
    let scrape = parse(valid);
    check_histogram(&scrape, "h");
    assert_eq!(scrape.sum("a_total", &[("route", "GET /x/{id}")]), 3.0);
    assert_eq!(scrape.sum("a_total", &[("k", "v\"q")]), 3.0);

    let rejected = |text: &str| match try_parse(text) {
        Err(_) => true,
        Ok(scrape) => {
            scrape.types.get("h").is_some_and(|t| t == "histogram")
                && try_check_histogram(&scrape, "h").is_err()
        }
    };
    assert!(!rejected(valid));
    for bad in [
        "a_total{route=GET} 1\n",               // unquoted label value
        "a_total{route=\"x\"} one\n",           // not a number
        "a total 1\n",                          // space in the name
        "a_total{route=\"x\",route=\"y\"} 1\n", // a label twice
        "a_total 1\na_total 2\n",               // a series twice
        "a_total 1\nb 1\na_total{x=\"1\"} 1\n", // a family split
        "# TYPE a_total counter\n# TYPE a_total gauge\na_total 1\n", // TYPE twice
        "a_total 1\n# TYPE a_total counter\n",  // TYPE after samples
        "# TYPE a_total counter\na_total -1\n", // a counter below zero
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", // +Inf != count
        "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n", // no _sum
    ] {
        assert!(rejected(bad), "accepted: {bad:?}");
    }
}

#[test]
fn the_family_table_lists_every_family_the_code_defines() {
    let in_source = families_in_source();
    let listed: BTreeMap<String, (String, BTreeSet<String>)> = FAMILIES
        .iter()
        .map(|(name, kind, labels)| {
            (
                name.to_string(),
                (
                    kind.to_string(),
                    labels.iter().map(|l| l.to_string()).collect(),
                ),
            )
        })
        .collect();
    assert_eq!(
        in_source, listed,
        "src/ defines (left) other metric families or labels than this test checks (right)"
    );
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_family_is_exported_with_its_labels_after_real_traffic() {
    let mut redis = RedisServer::start();
    let origin = origin().await;
    // A short collapse wait, so that a lock held elsewhere times out quickly.
    let text = policy_text(origin.addr(), &redis.url(), ROUTES)
        .replace("wait = \"3s\"", "wait = \"300ms\"");
    assert!(text.contains("wait = \"300ms\""));
    let policy = Policy::parse(&text, "metrics.toml").expect("test policy is valid");
    let server = Server::start_with(policy, AdminConfig::with_token(Some(TOKEN.into())))
        .await
        .expect("proxy starts");
    let (addr, admin) = (server.addr(), server.admin_addr());
    let mut ids = Vec::new();

    let before = scrape(admin).await;

    // Miss, then hit (a tagged route: stored with "put").
    let a = fresh_id(&mut ids);
    let item_a = format!("/items/{a}");
    let miss = get(addr, &item_a, &[]).await;
    assert!(miss.cache_status().contains("stored"), "{miss:?}");
    let hit = get(addr, &item_a, &[]).await;
    assert!(hit.cache_status().contains("; hit"), "{hit:?}");

    // Stale on arrival (max-age=0) but inside stale-while-revalidate: served at once, and
    // refreshed in the background.
    let news = format!("/news/{}", fresh_id(&mut ids));
    assert!(get(addr, &news, &[]).await.stored());
    let stale = get(addr, &news, &[]).await;
    assert!(
        stale
            .cache_status()
            .ends_with("news/stale-while-revalidate"),
        "{stale:?}"
    );

    // An unnamed route: labelled with its match text. Miss, hit, and a 404 not stored.
    let b = fresh_id(&mut ids);
    let things_b = format!("/things/{b}");
    assert!(
        get(addr, &things_b, &[])
            .await
            .cache_status()
            .contains("stored")
    );
    assert!(
        get(addr, &things_b, &[])
            .await
            .cache_status()
            .contains("; hit")
    );
    let missing = format!("/things/missing-{}", fresh_id(&mut ids));
    let not_found = get(addr, &missing, &[]).await;
    assert_eq!(not_found.status, 404);
    assert!(
        not_found.cache_status().contains("status-not-stored"),
        "{not_found:?}"
    );
    // A second query variant of one thing is over max_variants = 1: answered, not stored.
    let c = fresh_id(&mut ids);
    assert!(get(addr, &format!("/things/{c}?v=1"), &[]).await.stored());
    let over = get(addr, &format!("/things/{c}?v=2"), &[]).await;
    assert!(
        over.cache_status().contains("too-many-variants"),
        "{over:?}"
    );

    // Collapsed in this process: followers join the flight the leader is still fetching.
    let slow = format!("/items/slow-{}", fresh_id(&mut ids));
    let leader = tokio::spawn({
        let slow = slow.clone();
        async move { get(addr, &slow, &[]).await }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.count_of(&slow) == 0 {
        assert!(
            Instant::now() < deadline,
            "the leader never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let followers: Vec<_> = (0..5)
        .map(|_| {
            let slow = slow.clone();
            tokio::spawn(async move { get(addr, &slow, &[]).await })
        })
        .collect();
    let mut collapsed = 0;
    for follower in followers {
        let got = follower.await.expect("follower");
        assert_eq!(got.status, 200);
        collapsed += usize::from(got.cache_status().contains("collapsed"));
    }
    assert!(
        leader
            .await
            .expect("leader")
            .cache_status()
            .contains("stored")
    );
    assert!(collapsed > 0, "no follower was collapsed");
    assert_eq!(origin.count_of(&slow), 1);

    // Another instance holds the key's lock and never fills: this one waits, times out,
    // and asks the origin itself.
    let t = fresh_id(&mut ids);
    let held = redis
        .command(&[
            "SET",
            &format!("cachalot:lock:{{item:{t}}}"),
            "someone-else",
            "PX",
            "60000",
        ])
        .expect("SET lock");
    assert!(held.starts_with("+OK"), "{held}");
    let timed_out = get(addr, &format!("/items/{t}"), &[]).await;
    assert_eq!(timed_out.status, 200);
    assert!(
        timed_out.cache_status().contains("collapse-timeout"),
        "{timed_out:?}"
    );

    // Passes: no route, and a cache = false route (unnamed: its match text).
    let free = get(addr, &format!("/free/{}", fresh_id(&mut ids)), &[]).await;
    assert!(free.cache_status().contains("detail=no-route"), "{free:?}");
    let auth = get(addr, &format!("/auth/{}", fresh_id(&mut ids)), &[]).await;
    assert!(
        auth.cache_status().contains("detail=route-pass"),
        "{auth:?}"
    );

    // Bypass: Authorization on a cached route.
    let bypass = get(addr, &item_a, &[("authorization", "Bearer secret")]).await;
    assert!(
        bypass.cache_status().contains("detail=item/authorization"),
        "{bypass:?}"
    );

    // Writes that invalidate: one on the cached route's own URI, one on the revoke route.
    let write = send(addr, Method::POST, &item_a, &[], Bytes::new()).await;
    assert!(
        write.cache_status().contains("detail=item/method"),
        "{write:?}"
    );
    let revoke = send(
        addr,
        Method::POST,
        &format!("/items/{a}/revoke"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(revoke.status, 200);
    assert!(
        get(addr, &item_a, &[])
            .await
            .cache_status()
            .contains("stored"),
        "the write dropped the entry"
    );

    // The in-process tier: lookups miss, then hit. Its size gauges say what it holds: two
    // entries, then none once a purge dropped them.
    let hot: Vec<String> = (0..2).map(|_| fresh_id(&mut ids)).collect();
    let from_l1 =
        |got: &Got| got.cache_status().contains("; hit") && got.cache_status().ends_with("/l1");
    let mut attempts = 0;
    loop {
        attempts += 1;
        for id in &hot {
            until_l1(addr, &format!("/hot/{id}")).await;
        }
        let gauges = l1_gauges_until(admin, |entries, bytes| entries == 2.0 && bytes > 0.0).await;
        // Both still answered from the tier: it held both the whole time (nothing else
        // refills it), so the gauges must have said so.
        let mut held = true;
        for id in &hot {
            held &= from_l1(&get(addr, &format!("/hot/{id}"), &[]).await);
        }
        match gauges {
            Ok(()) => break,
            Err((entries, bytes)) if held || attempts == 3 => panic!(
                "the tier holds 2 entries (both served from it before and after), but \
                 /metrics says cachalot_l1_entries {entries}, cachalot_l1_bytes {bytes}"
            ),
            // The tier was flushed meanwhile (Redis slow, the feed in doubt): again.
            Err(_) => {}
        }
    }
    let purged = purge(
        admin,
        &format!("{{\"keys\":[\"hot:{}\",\"hot:{}\"]}}", hot[0], hot[1]),
    )
    .await;
    assert_eq!(purged.status, 200, "{purged:?}");
    if let Err((entries, bytes)) =
        l1_gauges_until(admin, |entries, bytes| entries == 0.0 && bytes == 0.0).await
    {
        panic!(
            "a purge dropped the tier's only entries, but /metrics says \
             cachalot_l1_entries {entries}, cachalot_l1_bytes {bytes}"
        );
    }
    assert!(
        !from_l1(&get(addr, &format!("/hot/{}", hot[0]), &[]).await),
        "the purge dropped the entry"
    );

    // Pub/sub: a message other services publish, and a malformed one.
    publish(
        &redis,
        "cache:invalidate",
        &format!("{{\"keys\":[\"item:{a}\"],\"reason\":\"test\"}}"),
    )
    .await;
    publish(&redis, "cache:invalidate", "this is not json").await;

    // The purge API: keys, a tag (zrangebyscore) and a prefix (scan).
    let purged = purge(
        admin,
        &format!(
            "{{\"keys\":[\"item:{}\"],\"tags\":[\"items\"],\"prefix\":\"/things/\"}}",
            fresh_id(&mut ids)
        ),
    )
    .await;
    assert_eq!(purged.status, 200, "{purged:?}");
    // A key whose generation counter is not a counter: Redis answers WRONGTYPE, an error
    // about one key, not an outage.
    let wrong = fresh_id(&mut ids);
    redis
        .command(&["RPUSH", &format!("cachalot:gen:{{item:{wrong}}}"), "x"])
        .expect("RPUSH");
    let purged = purge(admin, &format!("{{\"keys\":[\"item:{wrong}\"]}}")).await;
    assert_eq!(purged.status, 200, "{purged:?}");

    // Reloads: one good file, one bad.
    let dir = tempfile::tempdir().expect("temp dir");
    let good = policy_file(dir.path(), "good.toml", &text);
    let bad = policy_file(
        dir.path(),
        "bad.toml",
        &text.replace("ttl = \"2m\"", "ttl = \"two minutes\""),
    );
    cachalot::app::reload::reload(server.proxy(), &good).expect("the good policy reloads");
    assert!(cachalot::app::reload::reload(server.proxy(), &bad).is_err());

    // Health (ping).
    assert_eq!(get(admin, "/health/cache", &[]).await.status, 200);

    // Redis goes away for a moment: errors, requests served from the origin, and a write
    // whose invalidation is queued.
    redis.kill();
    let down = format!("/items/{}", fresh_id(&mut ids));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(addr, &down, &[]).await;
        assert_eq!(got.status, 200);
        if got.cache_status().contains("redis-unavailable") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis killed, yet: {}",
            got.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = send(
        addr,
        Method::POST,
        &format!("{down}/revoke"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(queued.status, 200);
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(addr, &down, &[]).await;
        if !got.cache_status().contains("redis-unavailable") {
            break;
        }
        assert!(Instant::now() < deadline, "caching never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Pub/sub invalidations are applied by a task: wait for them to be counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = scrape(admin).await;
        let counted = |name: &str, labels: &[(&str, &str)]| {
            after.sum(name, labels) > before.sum(name, labels)
        };
        if counted(
            "cachalot_invalidations_total",
            &[("source", "pubsub"), ("outcome", "applied")],
        ) && counted("cachalot_invalidation_messages_malformed_total", &[])
        {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "pub/sub messages were never counted:\n{}",
            after.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Every family, with its labels and type; histograms complete.
    let mut missing = Vec::new();
    for (family, kind, labels) in FAMILIES {
        let expected: BTreeSet<&str> = labels.iter().copied().collect();
        if let Some(declared) = after.types.get(*family) {
            assert_eq!(declared, kind, "# TYPE of {family}");
        }
        let sample_names: Vec<String> = if *kind == "histogram" {
            ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect()
        } else {
            vec![family.to_string()]
        };
        for name in &sample_names {
            let samples: Vec<&Sample> = after.named(name).collect();
            if samples.is_empty() && !EXERCISED_ELSEWHERE.contains(family) {
                missing.push(name.clone());
            }
            for sample in samples {
                let keys: BTreeSet<&str> = sample
                    .labels
                    .keys()
                    .map(String::as_str)
                    .filter(|k| !(name.ends_with("_bucket") && *k == "le"))
                    .collect();
                assert_eq!(keys, expected, "labels of {sample:?}");
            }
        }
        if *kind == "histogram" && after.named(&format!("{family}_bucket")).next().is_some() {
            check_histogram(&after, family);
        }
    }
    assert!(
        missing.is_empty(),
        "missing from /metrics after the traffic: {missing:?}\n{}",
        after.text
    );

    // Nothing cachalot_* that the table does not know.
    for sample in &after.samples {
        if sample.name.starts_with("cachalot_") {
            let family = family_of(&sample.name, &after.types);
            assert!(
                FAMILIES.iter().any(|(f, _, _)| *f == family),
                "unknown family {family} in /metrics"
            );
        }
    }

    // Route labels: route names, or the match text of unnamed routes; never a path.
    for sample in &after.samples {
        if let Some(route) = sample.labels.get("route") {
            assert!(
                ROUTE_LABELS.contains(&route.as_str()),
                "route label {route:?} is not a route's name or match: {sample:?}"
            );
        }
    }
    for id in &ids {
        assert!(
            !after.text.contains(id.as_str()),
            "request id {id} (from a request path) appears in /metrics:\n{}",
            after.text
        );
    }

    // Each kind of traffic above counted under its labels.
    let increased = |name: &str, labels: &[(&str, &str)]| {
        let (was, is) = (before.sum(name, labels), after.sum(name, labels));
        assert!(
            is > was,
            "{name}{labels:?} did not increase ({was} -> {is})\n{}",
            after.text
        );
    };
    let requests = "cachalot_requests_total";
    for labels in [
        &[("route", "item"), ("phase", "miss"), ("reason", "-")][..],
        &[("route", "item"), ("phase", "hit"), ("reason", "-")],
        &[("route", "item"), ("phase", "collapsed")],
        &[
            ("route", "item"),
            ("phase", "miss"),
            ("reason", "collapse-timeout"),
        ],
        &[
            ("route", "item"),
            ("phase", "bypass"),
            ("reason", "authorization"),
        ],
        &[("route", "item"), ("phase", "pass"), ("reason", "method")],
        &[("route", "item"), ("reason", "redis-unavailable")],
        &[("route", "GET /things/{id}"), ("phase", "miss")],
        &[("route", "GET /things/{id}"), ("phase", "hit")],
        &[
            ("route", "GET /things/{id}"),
            ("reason", "status-not-stored"),
        ],
        &[("route", "hot"), ("phase", "hit"), ("reason", "l1")],
        &[
            ("route", "revoke"),
            ("phase", "pass"),
            ("reason", "route-pass"),
        ],
        &[
            ("route", "/auth/{*rest}"),
            ("phase", "pass"),
            ("reason", "route-pass"),
        ],
        &[("route", "-"), ("phase", "pass"), ("reason", "no-route")],
    ] {
        increased(requests, labels);
    }
    let durations = "cachalot_request_duration_seconds_count";
    for phase in ["hit", "miss", "collapsed", "pass", "bypass"] {
        increased(durations, &[("phase", phase)]);
    }
    increased(durations, &[("route", "hot"), ("phase", "hit")]);
    increased("cachalot_response_bytes_total", &[("source", "cache")]);
    increased("cachalot_response_bytes_total", &[("source", "origin")]);
    increased(
        "cachalot_origin_requests_total",
        &[("route", "item"), ("status", "200")],
    );
    increased(
        "cachalot_origin_requests_total",
        &[("route", "GET /things/{id}"), ("status", "404")],
    );
    increased(
        "cachalot_variants_refused_total",
        &[("route", "GET /things/{id}")],
    );
    increased(
        "cachalot_origin_requests_total",
        &[("route", "-"), ("status", "200")],
    );
    increased(
        "cachalot_origin_requests_total",
        &[("route", "revoke"), ("status", "200")],
    );
    for route in ["item", "GET /things/{id}", "-", "revoke", "/auth/{*rest}"] {
        increased(
            "cachalot_origin_duration_seconds_count",
            &[("route", route)],
        );
    }
    for command in [
        "mget",
        "put",
        "set",
        "lock",
        "unlock",
        "publish",
        "ping",
        "invalidate",
        "zrangebyscore",
        "scan",
    ] {
        increased(
            "cachalot_redis_command_duration_seconds_count",
            &[("command", command)],
        );
    }
    increased("cachalot_redis_errors_total", &[("kind", "outage")]);
    increased("cachalot_redis_errors_total", &[("kind", "reply")]);
    increased("cachalot_collapse_waiters_total", &[("scope", "process")]);
    increased("cachalot_collapse_waiters_total", &[("scope", "instances")]);
    increased("cachalot_collapse_timeouts_total", &[]);
    for (source, outcome) in [
        ("write", "applied"),
        ("pubsub", "applied"),
        ("purge", "applied"),
        ("write", "queued"),
    ] {
        increased(
            "cachalot_invalidations_total",
            &[("source", source), ("outcome", outcome)],
        );
    }
    increased("cachalot_invalidation_messages_malformed_total", &[]);
    increased("cachalot_policy_reloads_total", &[("outcome", "applied")]);
    increased("cachalot_policy_reloads_total", &[("outcome", "rejected")]);
    increased("cachalot_l1_lookups_total", &[("result", "hit")]);
    increased("cachalot_l1_lookups_total", &[("result", "miss")]);

    server.shutdown().await;
}

/// An error reply about one key (here `ERR value is not an integer`, from a generation
/// counter that holds text) is that key's problem: counted as `kind="reply"`, and Redis
/// stays in use for every other request. Run in its own process (the real binary), so its
/// counters are its own and do not mix with the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reply_about_one_key_is_counted_as_reply_and_caching_goes_on() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let (port, admin_port) = (support::redis::free_port(), support::redis::free_port());
    let text = policy_text(
        origin.addr(),
        &redis.url(),
        "[[route]]\nname = \"item\"\nmatch = \"GET /items/{id}\"\nttl = \"1m\"\nkey = \"item:{id}\"\n",
    )
    .replace(
        "addr = \"127.0.0.1:0\"",
        &format!("addr = \"127.0.0.1:{port}\""),
    )
    .replace(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"127.0.0.1:{admin_port}\""),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = policy_file(dir.path(), "cachalot.toml", &text);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("REDIS_URL")
        .env_remove("CACHALOT_CONFIG")
        .env("CACHALOT_ADMIN_TOKEN", TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cachalot starts");
    let (addr, admin) = (
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from(([127, 0, 0, 1], admin_port)),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    for listener in [addr, admin] {
        while tokio::net::TcpStream::connect(listener).await.is_err() {
            if Instant::now() >= deadline || child.try_wait().ok().flatten().is_some() {
                let _ = child.kill();
                panic!("cachalot did not listen on {listener}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let outcome = async {
        let first = get(addr, "/items/1", &[]).await;
        assert!(first.cache_status().contains("stored"), "{first:?}");

        redis
            .command(&["SET", "cachalot:gen:{item:broken}", "not-a-number"])
            .expect("SET");
        let purged = purge(admin, "{\"keys\":[\"item:broken\"]}").await;

        // Give the health probe time to act on whatever the error did.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let next = get(addr, "/items/2", &[]).await;
        let metrics = scrape(admin).await;
        (purged, next, metrics)
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (purged, next, metrics) = outcome;

    let reply = metrics.sum("cachalot_redis_errors_total", &[("kind", "reply")]);
    let outage = metrics.sum("cachalot_redis_errors_total", &[("kind", "outage")]);
    assert!(
        reply >= 1.0 && outage == 0.0,
        "an error reply counted as redis errors reply={reply}, outage={outage}"
    );
    assert_eq!(
        purged.status,
        200,
        "the purge of a healthy Redis was not applied: {}",
        purged.text()
    );
    assert!(
        next.cache_status().contains("stored"),
        "one key's error reply took Redis out of use for every request: {}",
        next.cache_status()
    );
}

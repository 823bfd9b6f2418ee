//! RFC 9111 mode and staying up: `ttl = "origin"` freshness, `Vary` variants, revalidation
//! with conditional requests, stale-while-revalidate, stale-if-error, early refresh, jitter,
//! and clients' `Cache-Control` only where a route honours it. Real origin, Redis and proxy.

mod support;

use cachalot::policy::Policy;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::{Got, Origin, RedisServer, Reply, Stack, get, policy_text, start_proxy};

/// Asserts that a response's `Cache-Status` contains `part`, showing it when not.
fn says(got: &Got, part: &str) {
    assert!(
        got.cache_status().contains(part),
        "expected {part:?} in {}",
        got.cache_status()
    );
}

const ORIGIN_ROUTE: &str = r#"
[[route]]
name = "page"
match = "GET /pages/{id}"
ttl = "origin"
ttl_max = "10s"
key = "page:{id}"
"#;

#[tokio::test]
async fn the_origins_max_age_decides_freshness_within_ttl_max() {
    let origin = Origin::start(|seen, n| {
        let cc = if seen.target.ends_with("/short") {
            "max-age=1"
        } else {
            "public, s-maxage=86400, max-age=5"
        };
        Reply::ok(format!("n={n}")).header("cache-control", cc)
    })
    .await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ORIGIN_ROUTE).origin(origin).start().await;

    let first = get(proxy.addr(), "/pages/short", &[]).await;
    assert!(first.stored(), "{}", first.cache_status());
    says(&first, "ttl=1");
    let hit = get(proxy.addr(), "/pages/short", &[]).await;
    says(&hit, "; hit");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = get(proxy.addr(), "/pages/short", &[]).await;
    assert!(
        expired.stored(),
        "max-age=1 ran out: {}",
        expired.cache_status()
    );
    assert_eq!(origin.count_of("/pages/short"), 2);

    // s-maxage wins over max-age for a shared cache, and ttl_max caps it.
    let capped = get(proxy.addr(), "/pages/long", &[]).await;
    says(&capped, "ttl=10;");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_response_without_freshness_is_stored_only_with_ttl_default() {
    let origin = Origin::start(|_, n| Reply::ok(format!("n={n}"))).await;
    let routes = format!(
        "{ORIGIN_ROUTE}\n[[route]]\nname = \"doc\"\nmatch = \"GET /docs/{{id}}\"\nttl = \"origin\"\nttl_default = \"30s\"\n"
    );
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(&routes).origin(origin).start().await;
    for _ in 0..2 {
        let got = get(proxy.addr(), "/pages/plain", &[]).await;
        assert!(
            got.cache_status().ends_with("page/no-freshness"),
            "{}",
            got.cache_status()
        );
    }
    assert_eq!(origin.count_of("/pages/plain"), 2);
    assert!(get(proxy.addr(), "/docs/a", &[]).await.stored());
    let hit = get(proxy.addr(), "/docs/a", &[]).await;
    says(&hit, "; hit; ttl=");
    proxy.shutdown().await;
}

#[tokio::test]
async fn vary_stores_one_variant_per_request_header_value() {
    let origin = Origin::start(|seen, _| {
        let lang = seen
            .headers
            .get("accept-language")
            .map_or("none", |v| v.to_str().unwrap());
        Reply::ok(format!("lang={lang}"))
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Language")
    })
    .await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ORIGIN_ROUTE).origin(origin).start().await;
    let ask = |lang: Option<&'static str>| {
        let addr = proxy.addr();
        async move {
            let headers: Vec<(&str, &str)> =
                lang.map(|l| ("accept-language", l)).into_iter().collect();
            get(addr, "/pages/1", &headers).await
        }
    };
    for round in 0..2 {
        for lang in [Some("de"), Some("en"), None] {
            let got = ask(lang).await;
            assert_eq!(
                got.text(),
                format!("lang={}", lang.unwrap_or("none")),
                "round {round}"
            );
            assert_eq!(
                got.cache_status().contains("; hit"),
                round == 1,
                "round {round} {lang:?}: {}",
                got.cache_status()
            );
        }
    }
    assert_eq!(origin.count(), 3, "one origin request per variant");
    let keys: BTreeSet<String> = redis.entries().into_iter().collect();
    for key in [
        "cachalot:{page:1}",
        "cachalot:{page:1}#accept-language=de",
        "cachalot:{page:1}#accept-language=en",
        "cachalot:{page:1}#accept-language",
    ] {
        assert!(keys.contains(key), "{key} missing from {keys:?}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_and_a_304_refreshes_it_without_the_body() {
    let origin = Origin::start(|seen, n| {
        let validated = seen
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"");
        let reply = if validated {
            Reply::ok("").status(304)
        } else {
            Reply::ok("the whole payload").header("etag", "\"v1\"")
        };
        reply
            .header("cache-control", "max-age=1")
            .header("x-served", &n.to_string())
    })
    .await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ORIGIN_ROUTE).origin(origin).start().await;
    assert!(get(proxy.addr(), "/pages/r", &[]).await.stored());
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let revalidated = get(proxy.addr(), "/pages/r", &[]).await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "the whole payload");
    assert!(
        revalidated
            .cache_status()
            .starts_with("cachalot; fwd=stale; fwd-status=304; stored"),
        "{}",
        revalidated.cache_status()
    );
    assert_eq!(revalidated.header("x-served"), "2", "headers from the 304");
    assert_eq!(
        origin.seen()[1].headers.get("if-none-match").unwrap(),
        "\"v1\"",
        "the origin was asked conditionally"
    );
    let hit = get(proxy.addr(), "/pages/r", &[]).await;
    says(&hit, "; hit");
    assert_eq!(hit.text(), "the whole payload");
    proxy.shutdown().await;
}

/// A feed that goes stale after a second and may be served stale for 30 s while refreshed.
const FEED: &str = r#"
[[route]]
name = "feed"
match = "GET /feed"
ttl = "1s"
stale_while_revalidate = "30s"
"#;

/// An origin that answers `n=<serial>`, the first time at once and then after `delay`.
async fn slow_after_first(delay: Duration) -> Origin {
    Origin::start(move |_, n| {
        let reply = Reply::ok(format!("n={n}"));
        if n > 1 { reply.delay(delay) } else { reply }
    })
    .await
}

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once() {
    let origin = slow_after_first(Duration::from_millis(300)).await;
    let routes = FEED;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(routes).origin(origin).start().await;
    assert!(get(proxy.addr(), "/feed", &[]).await.stored());
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let burst: Vec<_> = (0..20)
        .map(|_| {
            let addr = proxy.addr();
            tokio::spawn(async move { get(addr, "/feed", &[]).await })
        })
        .collect();
    for got in burst {
        let got = got.await.unwrap();
        assert_eq!(got.text(), "n=1", "served the stale entry at once");
        assert!(
            got.hit() && got.cache_status().ends_with("feed/stale-while-revalidate"),
            "{}",
            got.cache_status()
        );
    }
    let refreshed = async {
        loop {
            let got = get(proxy.addr(), "/feed", &[]).await;
            if got.text() == "n=2" {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let got = tokio::time::timeout(Duration::from_secs(5), refreshed)
        .await
        .expect("the background refresh stored the new response");
    says(&got, "; hit");
    assert_eq!(origin.count(), 2, "one refresh for the whole burst");
    proxy.shutdown().await;
}

/// An origin that answers `good` until the returned switch is set, then `broken`.
async fn breakable(good: Reply, broken: Reply) -> (Origin, Arc<AtomicBool>) {
    let switch = Arc::new(AtomicBool::new(false));
    let origin = Origin::start({
        let switch = Arc::clone(&switch);
        move |_, _| {
            if switch.load(Ordering::SeqCst) {
                broken.clone()
            } else {
                good.clone()
            }
        }
    })
    .await;
    (origin, switch)
}

#[tokio::test]
async fn stale_if_error_stands_in_for_a_failing_origin() {
    let redis = RedisServer::start();
    let (origin, broken) =
        breakable(Reply::ok("good"), Reply::ok("database down").status(503)).await;
    let routes = r#"
[[route]]
name = "kept"
match = "GET /kept"
ttl = "1s"
stale_if_error = "1m"

[[route]]
name = "plain"
match = "GET /plain"
ttl = "1s"
"#;
    let proxy = start_proxy(&origin, &redis, routes).await;
    assert!(get(proxy.addr(), "/kept", &[]).await.stored());
    assert!(get(proxy.addr(), "/plain", &[]).await.stored());
    broken.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let kept = get(proxy.addr(), "/kept", &[]).await;
    assert_eq!((kept.status.as_u16(), kept.text().as_str()), (200, "good"));
    assert_eq!(
        kept.cache_status(),
        "cachalot; fwd=stale; fwd-status=503; ttl=0; detail=kept/stale-if-error"
    );
    let plain = get(proxy.addr(), "/plain", &[]).await;
    assert_eq!(plain.status, 503, "no stale_if_error: the origin's answer");

    // The origin gone altogether: the stale entry still answers.
    origin.stop();
    let gone = get(proxy.addr(), "/kept", &[]).await;
    assert_eq!((gone.status.as_u16(), gone.text().as_str()), (200, "good"));
    assert!(
        gone.cache_status().starts_with("cachalot; fwd=stale")
            && gone.cache_status().ends_with("stale-if-error"),
        "{}",
        gone.cache_status()
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn age_counts_the_origins_age_and_heuristics_need_the_route_to_ask() {
    let origin = Origin::start(|seen, _| {
        if seen.target.starts_with("/pages/") {
            // Five minutes old already, fresh for ten: five minutes of freshness are left.
            Reply::ok("aged")
                .header("cache-control", "max-age=600")
                .header("age", "300")
        } else {
            // Last changed ten days ago, no stated freshness: heuristically a day.
            let modified = httpdate::fmt_http_date(
                std::time::SystemTime::now() - Duration::from_secs(10 * 24 * 3600),
            );
            Reply::ok("old news").header("last-modified", &modified)
        }
    })
    .await;
    let routes = format!(
        "{}
{}",
        ORIGIN_ROUTE.replace("ttl_max = \"10s\"", "ttl_max = \"1d\""),
        r#"
[[route]]
name = "guess"
match = "GET /guess/{id}"
ttl = "origin"
ttl_heuristic = true

[[route]]
name = "strict"
match = "GET /strict/{id}"
ttl = "origin"
"#
    );
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(&routes).origin(origin).start().await;
    let first = get(proxy.addr(), "/pages/a", &[]).await;
    let age: u64 = first.header("age").parse().unwrap();
    assert!((300..=302).contains(&age), "Age {age}");
    says(&first, "ttl=300");

    let guessed = get(proxy.addr(), "/guess/a", &[]).await;
    says(&guessed, "ttl=86400");
    // Without the heuristic: not fresh, but kept to be revalidated by its Last-Modified.
    let strict = get(proxy.addr(), "/strict/a", &[]).await;
    says(&strict, "stored; ttl=0");
    proxy.shutdown().await;
}

#[tokio::test]
async fn surrogate_control_for_the_proxy_beats_cache_control() {
    let origin = Origin::start(|_, n| {
        Reply::ok(format!("n={n}"))
            .header("cache-control", "no-store")
            .header(
                "surrogate-control",
                "max-age=60;cachalot, no-store;other-cdn",
            )
    })
    .await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ORIGIN_ROUTE).origin(origin).start().await;
    assert!(get(proxy.addr(), "/pages/s", &[]).await.stored());
    let hit = get(proxy.addr(), "/pages/s", &[]).await;
    says(&hit, "; hit");
    assert_eq!(
        origin.seen()[0]
            .headers
            .get("surrogate-capability")
            .unwrap(),
        "cachalot=\"Surrogate/1.0\""
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn one_background_refresh_across_two_instances() {
    let origin = slow_after_first(Duration::from_millis(500)).await;
    let routes = FEED;
    let Stack {
        redis,
        origin,
        proxy: one,
        ..
    } = Stack::builder(routes).origin(origin).start().await;
    let two = start_proxy(&origin, &redis, routes).await;
    assert!(get(one.addr(), "/feed", &[]).await.stored());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let burst: Vec<_> = (0..20)
        .map(|i| {
            let addr = if i % 2 == 0 { one.addr() } else { two.addr() };
            tokio::spawn(async move { get(addr, "/feed", &[]).await })
        })
        .collect();
    for got in burst {
        assert_eq!(got.await.unwrap().text(), "n=1");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        origin.count(),
        2,
        "one refresh, shared through the Redis lock"
    );
    assert_eq!(get(two.addr(), "/feed", &[]).await.text(), "n=2");
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn byte_ranges_are_cut_from_the_stored_whole() {
    let origin = Origin::start(|_, _| Reply::ok("0123456789").header("etag", "\"v1\"")).await;
    let routes = r#"
[[route]]
name = "file"
match = "GET /files/{id}"
ttl = "1m"
"#;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(routes).origin(origin).start().await;
    let miss = get(proxy.addr(), "/files/a", &[("range", "bytes=2-5")]).await;
    assert_eq!(miss.status, 206, "{}", miss.cache_status());
    assert!(miss.stored(), "the whole response was stored");
    assert_eq!(miss.text(), "2345");
    assert_eq!(miss.header("content-range"), "bytes 2-5/10");
    assert!(
        origin.seen()[0].headers.get("range").is_none(),
        "the fill asked for the whole response"
    );
    let tail = get(proxy.addr(), "/files/a", &[("range", "bytes=-3")]).await;
    assert_eq!((tail.status.as_u16(), tail.text().as_str()), (206, "789"));
    says(&tail, "; hit");
    let beyond = get(proxy.addr(), "/files/a", &[("range", "bytes=10-")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), "bytes */10");
    let changed = get(
        proxy.addr(),
        "/files/a",
        &[("range", "bytes=0-0"), ("if-range", "\"v0\"")],
    )
    .await;
    assert_eq!(
        (changed.status.as_u16(), changed.text().as_str()),
        (200, "0123456789")
    );
    assert_eq!(origin.count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn must_revalidate_is_never_served_stale() {
    let (origin, broken) = breakable(
        Reply::ok("strict").header("cache-control", "max-age=1, must-revalidate"),
        Reply::ok("down").status(503),
    )
    .await;
    let routes = r#"
[[route]]
name = "strict"
match = "GET /strict"
ttl = "origin"
stale_if_error = "1m"
stale_while_revalidate = "1m"
"#;
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(routes).origin(origin).start().await;
    assert!(get(proxy.addr(), "/strict", &[]).await.stored());
    broken.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let got = get(proxy.addr(), "/strict", &[]).await;
    assert_eq!(got.status, 503, "{}", got.cache_status());
    assert_eq!(got.text(), "down");
    proxy.shutdown().await;
}

#[tokio::test]
async fn clients_cache_control_counts_only_where_the_route_honours_it() {
    let origin = Origin::start(|_, n| Reply::ok(format!("n={n}"))).await;
    let routes = r#"
[[route]]
name = "shielded"
match = "GET /shielded"
ttl = "1m"

[[route]]
name = "honest"
match = "GET /honest"
ttl = "1m"
honor_client_no_cache = true
"#;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(routes).origin(origin).start().await;
    let no_cache = [("cache-control", "no-cache")];
    for path in ["/shielded", "/honest"] {
        assert!(get(proxy.addr(), path, &[]).await.stored());
    }
    let shielded = get(proxy.addr(), "/shielded", &no_cache).await;
    says(&shielded, "; hit");
    assert_eq!(
        origin.count_of("/shielded"),
        1,
        "a client cannot force origin requests"
    );

    let honest = get(proxy.addr(), "/honest", &no_cache).await;
    assert_eq!(honest.text(), "n=3");
    assert_eq!(origin.count_of("/honest"), 2);
    let pragma = get(proxy.addr(), "/honest", &[("pragma", "no-cache")]).await;
    assert_eq!(pragma.text(), "n=4");
    let only = get(
        proxy.addr(),
        "/honest?other",
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(only.status, 504);
    assert_eq!(origin.count_of("/honest?other"), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn early_refresh_renews_a_hot_key_before_it_expires() {
    let redis = RedisServer::start();
    let origin =
        Origin::start(|_, n| Reply::ok(format!("n={n}")).delay(Duration::from_millis(400))).await;
    let routes = r#"
[[route]]
name = "hot"
match = "GET /hot"
ttl = "2s"
early_refresh = true
"#;
    let proxy = start_proxy(&origin, &redis, routes).await;
    assert!(get(proxy.addr(), "/hot", &[]).await.stored());
    let mut statuses = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        statuses.push(
            get(proxy.addr(), "/hot", &[])
                .await
                .cache_status()
                .to_string(),
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        statuses.iter().any(|s| s.ends_with("hot/early-refresh")),
        "a request started a refresh before expiry: {statuses:?}"
    );
    // The refresh (fetch ~400 ms) starts well before expiry with near certainty: with XFetch
    // the chance that none of ~20 requests in the last 500 ms starts one is below 1e-6.
    assert!(
        !statuses.iter().any(|s| s.contains("fwd=uri-miss")),
        "no request met an expired key: {statuses:?}"
    );
    assert!(origin.count() >= 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn ttl_jitter_spreads_the_expiry_of_keys_filled_together() {
    let routes = r#"
[[route]]
name = "item"
match = "GET /items/{id}"
ttl = "100s"
ttl_jitter = "50%"
"#;
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::start(routes).await;
    let mut ttls = BTreeSet::new();
    for id in 0..20 {
        let got = get(proxy.addr(), &format!("/items/{id}"), &[]).await;
        let ttl: u64 = got
            .cache_status()
            .split("ttl=")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no ttl in {}", got.cache_status()));
        assert!((50..=100).contains(&ttl), "ttl {ttl} outside 50-100 s");
        ttls.insert(ttl);
    }
    assert!(ttls.len() > 3, "expiries spread: {ttls:?}");
    proxy.shutdown().await;
}

#[test]
fn origin_only_settings_and_bad_jitter_are_named_errors() {
    let redis = "redis://127.0.0.1:1";
    let origin = "127.0.0.1:1".parse().unwrap();
    let route = |extra: &str| {
        policy_text(
            origin,
            redis,
            &format!("[[route]]\nmatch = \"GET /a\"\nttl = \"1m\"\n{extra}\n"),
        )
    };
    let error = Policy::parse(&route("ttl_max = \"1h\""), "p.toml")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("route[0].ttl_max") && error.contains("ttl = \"origin\""),
        "{error}"
    );
    let error = Policy::parse(&route("ttl_jitter = \"200%\""), "p.toml")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("route[0].ttl_jitter") && error.contains("\"0%\" to \"50%\""),
        "{error}"
    );
    let error = Policy::parse(&route("stale_if_error = \"soon\""), "p.toml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("route[0].stale_if_error"), "{error}");
}

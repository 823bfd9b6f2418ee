//! Targeted cache-control fields (RFC 9213), case by case as the public HTTP cache test suite
//! names them (`cdn-*`), and this proxy's own `Cachalot-Cache-Control`:
//! - `CDN-Cache-Control` replaces `Cache-Control` for the proxy: its `private`, `no-cache` and
//!   `no-store` win over a fresh `Cache-Control` and `Expires`, its fresh `max-age` wins over
//!   `Cache-Control: no-store`, and a shorter or longer `max-age` in it is the one that counts;
//! - it is an RFC 8941 dictionary: a field that does not parse, or states `max-age` as
//!   something other than an integer, is ignored whole (`Cache-Control` then applies);
//! - directive names are case-insensitive; the field is forwarded downstream;
//! - `Cachalot-Cache-Control` wins over `Surrogate-Control`, which wins over
//!   `CDN-Cache-Control`; fixed-TTL routes honour a `private`/`no-store` in any of them.
//!
//! Real origin, Redis and proxy; the origin's request count says what was reused.

mod support;

use std::time::SystemTime;
use support::{Got, Origin, Reply, Stack, get};

const ROUTES: &str = r#"
[[route]]
name = "cdn"
match = "GET /cdn/{case}"
ttl = "origin"
ttl_max = "1d"

[[route]]
name = "fixed"
match = "GET /fixed/{case}"
ttl = "60s"
"#;

/// The response headers of each case, by the path's last segment. `expires` stands for an
/// `Expires` 10000 s after `Date`.
fn headers_for(case: &str) -> &'static [(&'static str, &'static str)] {
    match case {
        "cdn-max-age" => &[("cdn-cache-control", "max-age=3600")],
        "cdn-max-age-case-insensitive" => &[("cdn-cache-control", "MaX-aGe=3600")],
        "cdn-max-age-extension" => &[("cdn-cache-control", "foobar, max-age=3600")],
        "cdn-max-age-0" => &[("cdn-cache-control", "max-age=0")],
        "cdn-max-age-0-expires" => &[("cdn-cache-control", "max-age=0"), ("expires", "")],
        "cdn-max-age-age" => &[("cdn-cache-control", "max-age=3600"), ("age", "7200")],
        "cdn-private" => &[
            ("cdn-cache-control", "private"),
            ("cache-control", "max-age=10000"),
            ("expires", ""),
        ],
        "cdn-no-cache" => &[
            ("cdn-cache-control", "no-cache"),
            ("cache-control", "max-age=10000"),
            ("expires", ""),
        ],
        "cdn-no-store-cc-fresh" => &[
            ("cache-control", "max-age=10000"),
            ("cdn-cache-control", "no-store"),
            ("expires", ""),
        ],
        // A valid field replaces Cache-Control whole: no max-age in it, no Expires, no freshness.
        "cdn-valid-without-freshness" => &[
            ("cache-control", "max-age=10000"),
            ("cdn-cache-control", "foo"),
        ],
        "cdn-fresh-cc-nostore" => &[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=10000"),
        ],
        "cdn-cc-invalid-sh-type-unknown" => &[
            ("cdn-cache-control", "max-age=10000, &&&&&"),
            ("cache-control", "no-store"),
        ],
        "cdn-cc-invalid-sh-type-wrong" => &[
            ("cdn-cache-control", "max-age=\"10000\""),
            ("cache-control", "no-store"),
        ],
        // The suite's cdn-max-age-space-before-equals, -long-cc-max-age and
        // -short-cc-max-age, with 5 s for its 1 s: a lifetime a test can see stored.
        "space-before-equals" => &[
            ("cache-control", "max-age=5"),
            ("cdn-cache-control", "max-age =100"),
        ],
        "cdn-shorter" => &[
            ("cache-control", "max-age=3600"),
            ("cdn-cache-control", "max-age=5"),
        ],
        "cdn-longer" => &[
            ("cache-control", "max-age=5"),
            ("cdn-cache-control", "max-age=3600"),
        ],
        "cdn-remove-header" => &[
            ("cache-control", "max-age=10000"),
            ("cdn-cache-control", "foo"),
            ("expires", ""),
        ],
        "cachalot-over-cdn" => &[
            ("cache-control", "max-age=3600"),
            ("cdn-cache-control", "max-age=3600"),
            ("cachalot-cache-control", "no-store"),
        ],
        "cachalot-fresh-over-cdn-no-store" => &[
            ("cdn-cache-control", "no-store"),
            ("cachalot-cache-control", "max-age=120"),
        ],
        "cachalot-invalid-falls-back" => &[
            ("cdn-cache-control", "max-age=300"),
            ("cachalot-cache-control", "max-age=\"120\""),
        ],
        "surrogate-over-cdn" => &[
            ("cdn-cache-control", "no-store"),
            ("surrogate-control", "max-age=90"),
        ],
        "cachalot-over-surrogate" => &[
            ("surrogate-control", "max-age=90"),
            ("cachalot-cache-control", "max-age=45"),
        ],
        "fixed-cdn-private" => &[
            ("cache-control", "max-age=3600"),
            ("cdn-cache-control", "private"),
        ],
        "fixed-cachalot-no-store" => &[("cachalot-cache-control", "no-store")],
        _ => &[],
    }
}

async fn origin() -> Origin {
    Origin::start(|seen, n| {
        let case = seen.target.rsplit('/').next().unwrap_or_default();
        let now = SystemTime::now();
        let mut reply =
            Reply::ok(format!("{case} n={n}")).header("date", &httpdate::fmt_http_date(now));
        for (name, value) in headers_for(case) {
            let later;
            let value = if *name == "expires" {
                later = httpdate::fmt_http_date(now + std::time::Duration::from_secs(10000));
                later.as_str()
            } else {
                value
            };
            reply = reply.header(name, value);
        }
        reply
    })
    .await
}

/// Asserts that `got` was stored with `seconds` of freshness left: as stated, or a second
/// less when the origin's `Date` was stamped in the second before the proxy received it.
fn stored_for(got: &Got, seconds: u64, case: &str) {
    let ttl = got
        .cache_status()
        .split("; ")
        .find_map(|part| part.strip_prefix("ttl="))
        .and_then(|ttl| ttl.parse::<u64>().ok());
    assert!(
        got.stored() && ttl.is_some_and(|ttl| ttl == seconds || ttl + 1 == seconds),
        "{case}: expected ttl={seconds}: {}",
        got.cache_status()
    );
}

/// Asks for each case twice; `reused` says whether the second answer came from the cache
/// (one origin request) or not (two).
async fn check(route: &str, cases: &[(&str, bool)]) {
    let origin = origin().await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    for (case, reused) in cases {
        let path = format!("/{route}/{case}");
        get(proxy.addr(), &path, &[]).await;
        let second = get(proxy.addr(), &path, &[]).await;
        assert_eq!(second.hit(), *reused, "{case}: {}", second.cache_status());
        let expected = if *reused { 1 } else { 2 };
        assert_eq!(origin.count_of(&path), expected, "{case}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn private_no_cache_and_no_store_in_cdn_cache_control_win_over_fresh_cache_control() {
    check(
        "cdn",
        &[
            ("cdn-private", false),
            ("cdn-no-cache", false),
            ("cdn-no-store-cc-fresh", false),
            ("cdn-max-age-0", false),
            ("cdn-max-age-0-expires", false),
            ("cdn-max-age-age", false),
            ("cdn-valid-without-freshness", false),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_fresh_cdn_max_age_is_reused_even_with_cache_control_no_store() {
    check(
        "cdn",
        &[
            ("cdn-max-age", true),
            ("cdn-fresh-cc-nostore", true),
            ("cdn-max-age-case-insensitive", true),
            ("cdn-max-age-extension", true),
        ],
    )
    .await;
}

#[tokio::test]
async fn an_invalid_cdn_cache_control_is_ignored_and_cache_control_applies() {
    check(
        "cdn",
        &[
            ("cdn-cc-invalid-sh-type-unknown", false),
            ("cdn-cc-invalid-sh-type-wrong", false),
        ],
    )
    .await;
    // Ignored, not fatal: with a readable `Cache-Control: max-age=5` beside it, the response
    // is stored for those 5 seconds.
    let origin = origin().await;
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    let got = get(proxy.addr(), "/cdn/space-before-equals", &[]).await;
    stored_for(&got, 5, "space-before-equals");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_cdn_max_age_decides_the_lifetime_whether_shorter_or_longer() {
    let origin = origin().await;
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    for (case, ttl) in [("cdn-shorter", 5), ("cdn-longer", 3600)] {
        let got = get(proxy.addr(), &format!("/cdn/{case}"), &[]).await;
        stored_for(&got, ttl, case);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn cdn_cache_control_is_forwarded_downstream_on_misses_and_hits() {
    let origin = origin().await;
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    let miss = get(proxy.addr(), "/cdn/cdn-remove-header", &[]).await;
    let hit = get(proxy.addr(), "/cdn/cdn-remove-header", &[]).await;
    assert!(hit.hit(), "{}", hit.cache_status());
    for got in [miss, hit] {
        assert_eq!(got.header("cdn-cache-control"), "foo");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn cachalot_cache_control_wins_then_surrogate_control_then_cdn_cache_control() {
    check(
        "cdn",
        &[
            ("cachalot-over-cdn", false),
            ("cachalot-fresh-over-cdn-no-store", true),
            ("cachalot-invalid-falls-back", true),
            ("surrogate-over-cdn", true),
            ("cachalot-over-surrogate", true),
        ],
    )
    .await;
    let origin = origin().await;
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    for (case, ttl) in [
        ("cachalot-fresh-over-cdn-no-store", 120),
        ("cachalot-invalid-falls-back", 300),
        ("surrogate-over-cdn", 90),
        ("cachalot-over-surrogate", 45),
    ] {
        let got = get(proxy.addr(), &format!("/cdn/{case}"), &[]).await;
        stored_for(&got, ttl, case);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn fixed_ttl_routes_never_store_what_a_targeted_field_calls_private_or_no_store() {
    check(
        "fixed",
        &[
            ("fixed-cdn-private", false),
            ("fixed-cachalot-no-store", false),
            ("cdn-max-age", true),
        ],
    )
    .await;
}

//! One resource, one key: typed path parameters are keyed (and fetched) in canonical form,
//! so the aliases Werkzeug accepts for one value (`0042`, fullwidth `４２`, an upper-case
//! uuid) share one entry that one invalidation drops, and cannot flood Redis. And
//! `check --connect` warns when Redis has nothing that bounds the cache's memory.

mod support;

use http::Method;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::{Origin, RedisServer, Reply, Stack, check_connect, get, send};

const ORDERS: &str = r#"
[[route]]
name = "order"
match = "GET /api/orders/<int:id>"
ttl = "10m"
key = "order:{id}"
max_variants = 50

[[route]]
match = "POST /api/orders/<int:id>/cancel"
invalidate = ["order:{id}"]
"#;

/// The id a Werkzeug `<int:id>` would hand the view: any decimal digits, ASCII or
/// fullwidth here (the ones these tests send), leading zeros ignored.
fn werkzeug_int(segment: &str) -> Option<u64> {
    let decoded = percent_decode(segment);
    let digits: Option<String> = decoded
        .chars()
        .map(|c| match c {
            '0'..='9' => Some(c),
            '０'..='９' => char::from_u32(u32::from(c) - u32::from('０') + u32::from('0')),
            _ => None,
        })
        .collect();
    digits?.parse().ok()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// An order service: order 42 is open until `POST /api/orders/<id>/cancel`.
async fn orders() -> (Origin, Arc<AtomicBool>) {
    let cancelled = Arc::new(AtomicBool::new(false));
    let state = Arc::clone(&cancelled);
    let origin = Origin::start(move |seen, _| {
        let segments: Vec<&str> = seen.target.split('/').collect();
        let Some(id) = segments.get(3).and_then(|s| werkzeug_int(s)) else {
            return Reply::ok("not found").status(404);
        };
        if seen.method == "POST" {
            state.store(true, Ordering::SeqCst);
            return Reply::ok(format!("{{\"id\":{id},\"status\":\"cancelled\"}}"));
        }
        let status = if state.load(Ordering::SeqCst) {
            "cancelled"
        } else {
            "open"
        };
        Reply::ok(format!("{{\"id\":{id},\"status\":\"{status}\"}}"))
    })
    .await;
    (origin, cancelled)
}

const ALIASES: [&str; 4] = [
    "/api/orders/42",
    "/api/orders/0042",
    "/api/orders/%EF%BC%94%EF%BC%92",          // ４２
    "/api/orders/%EF%BC%90%EF%BC%94%EF%BC%92", // ０４２
];

#[tokio::test]
async fn aliases_share_one_entry_and_the_write_drops_it_for_all() {
    let (origin, _) = orders().await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ORDERS).origin(origin).start().await;

    for (i, alias) in ALIASES.iter().enumerate() {
        let got = get(proxy.addr(), alias, &[]).await;
        assert_eq!(got.text(), r#"{"id":42,"status":"open"}"#, "{alias}");
        if i == 0 {
            assert!(got.stored(), "{alias}: {}", got.cache_status());
        } else {
            assert!(
                got.hit(),
                "{alias} is an alias of 42: {}",
                got.cache_status()
            );
        }
    }
    assert_eq!(redis.entries(), ["cachalot:{order:42}"]);
    assert_eq!(origin.count(), 1);

    // The write names the canonical id; every alias is dropped with it.
    let cancel = send(
        proxy.addr(),
        Method::POST,
        "/api/orders/42/cancel",
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(cancel.status, 200);
    for alias in ALIASES {
        let got = get(proxy.addr(), alias, &[]).await;
        assert_eq!(got.text(), r#"{"id":42,"status":"cancelled"}"#, "{alias}");
    }
    // One refill for all of them, and the origin was only ever asked for the canonical URL.
    let gets: Vec<String> = origin
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET")
        .map(|s| s.target)
        .collect();
    assert_eq!(gets, ["/api/orders/42", "/api/orders/42"]);
}

#[tokio::test]
async fn a_write_through_an_alias_invalidates_the_canonical_key() {
    let (origin, _) = orders().await;
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(ORDERS).origin(origin).start().await;

    assert!(get(proxy.addr(), "/api/orders/42", &[]).await.stored());
    let cancel = send(
        proxy.addr(),
        Method::POST,
        "/api/orders/%EF%BC%90%EF%BC%94%EF%BC%92/cancel",
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(cancel.status, 200);
    let got = get(proxy.addr(), "/api/orders/42", &[]).await;
    assert!(!got.hit(), "{}", got.cache_status());
    assert_eq!(got.text(), r#"{"id":42,"status":"cancelled"}"#);
}

#[tokio::test]
async fn two_hundred_padded_ids_store_one_entry() {
    let (origin, _) = orders().await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ORDERS).origin(origin).start().await;

    for zeros in 0..200 {
        let path = format!("/api/orders/{}7", "0".repeat(zeros));
        let got = get(proxy.addr(), &path, &[]).await;
        assert_eq!(got.status, 200, "{path}");
    }
    let entries = redis.entries();
    assert_eq!(
        entries.len(),
        1,
        "200 spellings of one id stored {} entries",
        entries.len()
    );
    assert_eq!(entries, ["cachalot:{order:7}"]);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn values_a_converter_refuses_are_passed_uncached() {
    let routes = r#"
[[route]]
name = "thing"
match = "GET /api/things/<uuid:id>"
ttl = "10m"

[[route]]
name = "price"
match = "GET /api/prices/<float:amount>"
ttl = "10m"

[[route]]
match = "GET /api/rates/<int:id>"
ttl = "10m"
"#;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(routes).await;

    let lower = "/api/things/550e8400-e29b-41d4-a716-446655440000";
    let upper = "/api/things/550E8400-E29B-41D4-A716-446655440000";
    assert!(get(proxy.addr(), upper, &[]).await.stored());
    assert!(get(proxy.addr(), lower, &[]).await.hit());
    assert!(get(proxy.addr(), "/api/prices/0042.50", &[]).await.stored());
    assert!(get(proxy.addr(), "/api/prices/42.5", &[]).await.hit());
    // An unnamed route without `key` is keyed on the path: the canonical path.
    assert!(get(proxy.addr(), "/api/rates/0042", &[]).await.stored());
    assert!(get(proxy.addr(), "/api/rates/42", &[]).await.hit());
    assert_eq!(
        redis.entries(),
        [
            "cachalot:{/api/rates/42}",
            "cachalot:{price:42.5}",
            "cachalot:{thing:550e8400-e29b-41d4-a716-446655440000}"
        ]
    );

    // Not a uuid, not a float: no route takes them (Flask would 404), nothing is stored.
    for refused in [
        "/api/things/550e8400e29b41d4a716446655440000",
        "/api/things/x",
        "/api/prices/42",
        "/api/prices/1e5",
    ] {
        for _ in 0..2 {
            let got = get(proxy.addr(), refused, &[]).await;
            assert!(
                got.cache_status().contains("detail=no-route"),
                "{refused}: {}",
                got.cache_status()
            );
        }
        assert_eq!(origin.count_of(refused), 2, "{refused}");
    }
    assert_eq!(redis.entries().len(), 3);
    let targets: Vec<String> = origin.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(&targets[..3], [lower, "/api/prices/42.5", "/api/rates/42"]);
}

#[tokio::test]
async fn a_case_insensitive_parameter_is_one_entry_in_lower_case() {
    let routes = r#"
[[route]]
name = "profile"
match = "GET /api/users/{login}/profile"
ttl = "10m"
key = "user:{login}:profile"
params.login.case = "insensitive"

[[route]]
match = "POST /api/users/{login}/rename"
invalidate = ["user:{login}:profile"]
params.login.case = "insensitive"

[[route]]
name = "page"
match = "GET /pages/{slug}"
ttl = "10m"
"#;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(routes).await;

    assert!(
        get(proxy.addr(), "/api/users/Alice/profile", &[])
            .await
            .stored()
    );
    for alias in ["/api/users/alice/profile", "/api/users/ALICE/profile"] {
        let got = get(proxy.addr(), alias, &[]).await;
        assert!(got.hit(), "{alias}: {}", got.cache_status());
        assert_eq!(got.text(), r#"{"target":"/api/users/alice/profile","n":1}"#);
    }
    let renamed = send(
        proxy.addr(),
        Method::POST,
        "/api/users/ALICE/rename",
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(renamed.status, 200);
    assert!(
        !get(proxy.addr(), "/api/users/alice/profile", &[])
            .await
            .hit()
    );

    // Routes that do not say so stay case-sensitive, as Flask is.
    assert!(get(proxy.addr(), "/pages/About", &[]).await.stored());
    assert!(get(proxy.addr(), "/pages/about", &[]).await.stored());
    assert_eq!(origin.count_of("/pages/About"), 1);
}

/// `check --connect` against real servers configured each way.
#[test]
fn check_connect_warns_when_nothing_bounds_redis_memory() {
    let warns = |args: &[&str]| {
        let redis = RedisServer::start_with(args);
        let out = check_connect(Some(&redis.url()), "", &[]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        (
            stderr.contains("has maxmemory 0 (no limit)"),
            stderr.contains("has maxmemory-policy noeviction"),
            stderr,
        )
    };
    // redis-server's defaults: no limit, and noeviction.
    let (unlimited, noeviction, stderr) = warns(&[]);
    assert!(unlimited && noeviction, "{stderr}");
    let (unlimited, noeviction, stderr) = warns(&["--maxmemory", "64mb"]);
    assert!(!unlimited && noeviction, "{stderr}");
    let (unlimited, noeviction, stderr) =
        warns(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    assert!(!unlimited && !noeviction, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn explain_shows_the_canonical_value_key_and_origin_request() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["explain", "--config", "config/cachalot.toml"])
        .arg("GET /api/users/%EF%BC%90%EF%BC%94%EF%BC%92/profile")
        .output()
        .expect("cachalot runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for line in [
        "params      user_id=42",
        "key         cachalot:{user:42:profile}",
        "origin      GET /api/users/42/profile",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}

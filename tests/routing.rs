//! Routing and keys: which route a request meets, what the proxy does on it, and under which
//! Redis key a cacheable response lands.
//!
//! The promises checked here:
//! - the most specific route wins whatever the order of the file (static beats `<int:id>`
//!   beats `{id}` beats `{*rest}`), and Flask's `<int:id>` falls back to a plainer route for
//!   a segment that is not all digits;
//! - a route without a method takes every method; a route with `GET` also answers HEAD, and
//!   HEAD is served from (and fills) the GET entry, with a GET to the origin;
//! - a request no route names is forwarded untouched but for path normalisation
//!   (`fwd=bypass; detail=no-route`), a
//!   `cache = false` route never stores, and writes on a cached route are forwarded
//!   (`fwd=method`) and never stored;
//! - default keys are `<prefix>:<name>:<param>` for a named route and `<prefix>:<path>` for an
//!   unnamed one; the query rule (`sorted`, `ignore`, a list) shapes both the key and what the
//!   origin sees; request values are escaped in keys so they cannot forge or collide.

mod support;

use bytes::Bytes;
use http::Method;
use support::routes::CREDENTIAL;
use support::{Got, Origin, RedisServer, Reply, Stack, get, send, start_proxy};

/// The route name in a response's `Cache-Status` (`detail=<name>[/<reason>]`), or "".
fn route_of(got: &Got) -> String {
    let status = got.cache_status();
    status
        .split("; ")
        .find_map(|part| part.strip_prefix("detail="))
        .map(|detail| detail.split('/').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// The four kinds of segment for one path prefix, written least specific first.
const ITEMS_LEAST_SPECIFIC_FIRST: &str = r#"
[[route]]
name = "rest"
match = "GET /items/{*rest}"
ttl = "1m"

[[route]]
name = "by_param"
match = "GET /items/{id}"
ttl = "2m"

[[route]]
name = "by_int"
match = "GET /items/<int:id>"
ttl = "3m"

[[route]]
name = "special"
match = "GET /items/special"
ttl = "4m"
"#;

/// The same four routes, most specific first.
const ITEMS_MOST_SPECIFIC_FIRST: &str = r#"
[[route]]
name = "special"
match = "GET /items/special"
ttl = "4m"

[[route]]
name = "by_int"
match = "GET /items/<int:id>"
ttl = "3m"

[[route]]
name = "by_param"
match = "GET /items/{id}"
ttl = "2m"

[[route]]
name = "rest"
match = "GET /items/{*rest}"
ttl = "1m"
"#;

#[tokio::test]
async fn most_specific_route_wins_whatever_the_file_order() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let cases = [
        ("/items/special", "special"),
        ("/items/42", "by_int"),
        ("/items/abc", "by_param"),
        ("/items/a/b", "rest"),
    ];
    for routes in [ITEMS_LEAST_SPECIFIC_FIRST, ITEMS_MOST_SPECIFIC_FIRST] {
        redis.command(&["FLUSHALL"]).expect("FLUSHALL");
        let proxy = start_proxy(&origin, &redis, routes).await;
        for (path, route) in cases {
            let got = get(proxy.addr(), path, &[]).await;
            assert_eq!(got.status, 200, "{path}");
            assert_eq!(route_of(&got), route, "{path}: {}", got.cache_status());
        }
        // Each route stored under its own default key.
        assert_eq!(
            redis.entries(),
            [
                "cachalot:{by_int:42}",
                "cachalot:{by_param:abc}",
                "cachalot:{rest:a/b}",
                "cachalot:{special}",
            ]
        );
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn int_route_falls_back_to_a_plain_parameter_for_non_digits() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(
        r#"
[[route]]
name = "user_by_name"
match = "GET /api/users/{name}"
ttl = "1m"

[[route]]
name = "user_by_id"
match = "GET /api/users/<int:id>"
ttl = "2m"
"#,
    )
    .await;
    // (request, route, what the origin is asked: an int in canonical form)
    for (path, route, asked) in [
        ("/api/users/42", "user_by_id", "/api/users/42"),
        ("/api/users/007", "user_by_id", "/api/users/7"),
        ("/api/users/alice", "user_by_name", "/api/users/alice"),
        ("/api/users/42abc", "user_by_name", "/api/users/42abc"),
        ("/api/users/-1", "user_by_name", "/api/users/-1"),
    ] {
        let got = get(proxy.addr(), path, &[]).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(route_of(&got), route, "{path}: {}", got.cache_status());
        assert_eq!(origin.count_of(asked), 1, "{path} reached the origin once");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_route_without_a_method_takes_every_method() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(
        r#"
[[route]]
name = "auth"
match = "/api/auth/{*rest}"
cache = false

[[route]]
name = "login_form"
match = "GET /api/login"
ttl = "1m"
"#,
    )
    .await;
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let got = send(
            proxy.addr(),
            method.clone(),
            "/api/auth/token",
            &[],
            Bytes::new(),
        )
        .await;
        assert_eq!(got.status, 200, "{method}");
        assert_eq!(route_of(&got), "auth", "{method}: {}", got.cache_status());
    }
    assert_eq!(origin.count_of("/api/auth/token"), 7);

    // For contrast: a route that names GET does not take POST.
    let got = send(proxy.addr(), Method::POST, "/api/login", &[], Bytes::new()).await;
    assert!(
        got.cache_status().ends_with("detail=no-route"),
        "{}",
        got.cache_status()
    );
    assert!(redis.entries().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_get_route_also_answers_head_from_the_get_entry() {
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;

    let get_miss = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert_eq!(get_miss.status, 200);
    assert!(
        get_miss.cache_status().contains("fwd=uri-miss"),
        "{}",
        get_miss.cache_status()
    );
    assert!(!get_miss.body.is_empty());

    let head = send(
        proxy.addr(),
        Method::HEAD,
        "/api/credentials/abc",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(
        head.hit(),
        "HEAD after a GET miss is a hit: {}",
        head.cache_status()
    );
    assert_eq!(route_of(&head), "credential");
    assert!(head.body.is_empty(), "a HEAD response has no body");
    assert_eq!(
        head.header("content-length"),
        get_miss.body.len().to_string(),
        "HEAD carries the GET's content-length"
    );
    assert_eq!(head.header("content-type"), "application/json");
    assert_eq!(origin.count(), 1, "the HEAD did not reach the origin");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_head_miss_fills_the_get_entry_with_a_get() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;

    let head = send(
        proxy.addr(),
        Method::HEAD,
        "/api/credentials/abc",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(
        head.cache_status().contains("fwd=uri-miss") && head.stored(),
        "{}",
        head.cache_status()
    );
    assert!(head.body.is_empty());
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET", "a HEAD miss fills with a GET");
    assert_eq!(redis.entries(), ["cachalot:{credential:abc}"]);

    let full = get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(full.hit(), "{}", full.cache_status());
    assert_eq!(
        full.text(),
        r#"{"target":"/api/credentials/abc","n":1}"#,
        "the GET after a HEAD miss gets the whole body the HEAD stored"
    );
    assert_eq!(
        head.header("content-length"),
        full.body.len().to_string(),
        "HEAD miss carries the body's content-length"
    );
    assert_eq!(origin.count(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_no_route_names_is_forwarded_untouched() {
    let origin = Origin::start(|_, _| {
        Reply::ok("created")
            .status(201)
            .header("x-origin", "flask")
            .header("set-cookie", "session=s1")
    })
    .await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(
        r#"
[[route]]
name = "credential"
match = "GET /api/credentials/{id}"
ttl = "10m"
"#,
    )
    .origin(origin)
    .start()
    .await;

    let target = "/api/other/%61bc?b=2&a=1&utm=x";
    let got = send(
        proxy.addr(),
        Method::POST,
        target,
        &[
            ("cookie", "session=s0"),
            ("authorization", "Bearer t"),
            ("x-client", "1"),
        ],
        Bytes::from_static(b"payload"),
    )
    .await;
    assert_eq!(got.status, 201);
    assert_eq!(got.text(), "created");
    assert_eq!(got.header("x-origin"), "flask");
    assert_eq!(got.header("set-cookie"), "session=s1");
    let status = got.cache_status();
    assert!(status.starts_with("cachalot; fwd=bypass"), "{status}");
    assert!(status.ends_with("detail=no-route"), "{status}");

    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    // The path in its normalised form (the one routing used: `%61` is `a`), the query as sent.
    assert_eq!(
        seen[0].target, "/api/other/abc?b=2&a=1&utm=x",
        "normalised path, query exactly as sent"
    );
    assert_eq!(&seen[0].body[..], b"payload");
    assert_eq!(seen[0].headers["cookie"], "session=s0");
    assert_eq!(seen[0].headers["authorization"], "Bearer t");
    assert_eq!(seen[0].headers["x-client"], "1");

    // A GET no route names is not cached either.
    let first = get(proxy.addr(), "/api/other", &[]).await;
    let second = get(proxy.addr(), "/api/other", &[]).await;
    assert!(first.cache_status().ends_with("detail=no-route"));
    assert!(second.cache_status().ends_with("detail=no-route"));
    assert_eq!(origin.count_of("/api/other"), 2);
    assert!(redis.entries().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_cache_false_route_never_stores() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(
        r#"
[[route]]
name = "auth"
match = "GET /api/auth/{*rest}"
cache = false
"#,
    )
    .await;
    let first = get(proxy.addr(), "/api/auth/session", &[]).await;
    let second = get(proxy.addr(), "/api/auth/session", &[]).await;
    assert_eq!(first.status, 200);
    assert_ne!(first.body, second.body, "each answer is the origin's own");
    for got in [&first, &second] {
        let status = got.cache_status();
        assert!(status.starts_with("cachalot; fwd=bypass"), "{status}");
        assert!(status.ends_with("detail=auth/route-pass"), "{status}");
    }
    assert_eq!(origin.count(), 2);
    assert!(redis.entries().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn writes_on_a_cached_route_are_forwarded_and_never_stored() {
    let origin = Origin::start(|seen, n| Reply::ok(format!("{} {n}", seen.method))).await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(
        r#"
[[route]]
name = "profile"
match = "/api/profiles/{id}"
ttl = "5m"
"#,
    )
    .origin(origin)
    .start()
    .await;
    for (i, method) in [Method::POST, Method::PUT, Method::DELETE]
        .into_iter()
        .enumerate()
    {
        let got = send(
            proxy.addr(),
            method.clone(),
            "/api/profiles/7",
            &[],
            Bytes::from_static(b"{\"x\":1}"),
        )
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), format!("{method} {}", i + 1));
        let status = got.cache_status();
        assert!(status.contains("fwd=method"), "{method}: {status}");
        assert!(status.ends_with("detail=profile/method"), "{status}");
        assert!(redis.entries().is_empty(), "{method} stored");
    }
    let seen = origin.seen();
    assert_eq!(
        seen.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(),
        ["POST", "PUT", "DELETE"]
    );
    assert!(seen.iter().all(|s| &s.body[..] == b"{\"x\":1}"));

    // Nothing the writes returned is served to a read.
    let read = get(proxy.addr(), "/api/profiles/7", &[]).await;
    assert_eq!(read.text(), "GET 4");
    assert!(
        read.cache_status().contains("fwd=uri-miss"),
        "{}",
        read.cache_status()
    );
    assert_eq!(redis.entries(), ["cachalot:{profile:7}"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn default_keys_are_name_and_params_or_the_path() {
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::start(
        r#"
[[route]]
name = "user"
match = "GET /api/users/{id}"
ttl = "1m"

[[route]]
name = "file"
match = "GET /api/orgs/{org}/files/{*rest}"
ttl = "2m"

[[route]]
match = "GET /api/stats/{period}"
ttl = "3m"
"#,
    )
    .await;
    for path in [
        "/api/users/42",
        "/api/orgs/o1/files/a/b.txt",
        "/api/stats/week",
    ] {
        let got = get(proxy.addr(), path, &[]).await;
        assert!(got.stored(), "{path}: {}", got.cache_status());
    }
    assert_eq!(
        redis.entries(),
        [
            "cachalot:{/api/stats/week}",
            "cachalot:{file:o1:a/b.txt}",
            "cachalot:{user:42}",
        ]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn sorted_query_shares_an_entry_across_orders_and_separates_values() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(
        r#"
[[route]]
name = "search"
match = "GET /api/search"
ttl = "1m"
"#,
    )
    .await;

    let first = get(proxy.addr(), "/api/search?b=2&a=1", &[]).await;
    assert!(first.stored());
    let second = get(proxy.addr(), "/api/search?a=1&b=2", &[]).await;
    assert!(second.hit(), "{}", second.cache_status());
    assert_eq!(second.body, first.body);
    assert_eq!(origin.count(), 1, "one origin request for both orders");
    assert_eq!(
        origin.seen()[0].target,
        "/api/search?b=2&a=1",
        "the origin sees the query as the client sent it"
    );

    let page2 = get(proxy.addr(), "/api/search?page=2", &[]).await;
    assert!(
        page2.cache_status().contains("fwd=uri-miss"),
        "{}",
        page2.cache_status()
    );
    assert_eq!(page2.text(), r#"{"target":"/api/search?page=2","n":2}"#);
    let bare = get(proxy.addr(), "/api/search", &[]).await;
    assert_eq!(bare.text(), r#"{"target":"/api/search","n":3}"#);
    assert_eq!(
        redis.entries(),
        [
            "cachalot:{search}",
            "cachalot:{search}?a=1&b=2",
            "cachalot:{search}?page=2",
        ]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn ignored_query_never_reaches_the_origin_or_the_key() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(
        r#"
[[route]]
name = "settings"
match = "GET /api/settings"
ttl = "1m"
query = "ignore"
"#,
    )
    .await;
    let first = get(proxy.addr(), "/api/settings?x=1&y=2", &[]).await;
    assert_eq!(first.text(), r#"{"target":"/api/settings","n":1}"#);
    let second = get(proxy.addr(), "/api/settings?x=2", &[]).await;
    assert!(second.hit(), "{}", second.cache_status());
    assert_eq!(second.body, first.body);
    let targets: Vec<String> = origin.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/api/settings"]);
    assert_eq!(redis.entries(), ["cachalot:{settings}"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_allow_list_keeps_only_its_parameters_in_key_and_origin_request() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(
        r#"
[[route]]
name = "stats"
match = "GET /api/stats"
ttl = "1m"
query = ["period"]
"#,
    )
    .await;
    let first = get(proxy.addr(), "/api/stats?utm=x&period=day", &[]).await;
    assert_eq!(first.text(), r#"{"target":"/api/stats?period=day","n":1}"#);
    let second = get(proxy.addr(), "/api/stats?period=day&utm=y", &[]).await;
    assert!(second.hit(), "{}", second.cache_status());
    let week = get(proxy.addr(), "/api/stats?period=week", &[]).await;
    assert_eq!(week.text(), r#"{"target":"/api/stats?period=week","n":2}"#);
    let none = get(proxy.addr(), "/api/stats?utm=z", &[]).await;
    assert_eq!(none.text(), r#"{"target":"/api/stats","n":3}"#);
    assert_eq!(origin.count(), 3);
    assert_eq!(
        redis.entries(),
        [
            "cachalot:{stats}",
            "cachalot:{stats}?period=day",
            "cachalot:{stats}?period=week",
        ]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn separators_and_globs_in_a_param_are_escaped_and_do_not_collide() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::start(CREDENTIAL).await;
    let forged = get(proxy.addr(), "/api/credentials/a:b*", &[]).await;
    assert_eq!(forged.status, 200);
    assert!(forged.stored());
    assert_eq!(redis.entries(), ["cachalot:{credential:a%3Ab%2A}"]);

    let plain = get(proxy.addr(), "/api/credentials/a", &[]).await;
    assert!(
        plain.cache_status().contains("fwd=uri-miss"),
        "/a must not be answered from /a:b*'s entry: {}",
        plain.cache_status()
    );
    assert_eq!(plain.text(), r#"{"target":"/api/credentials/a","n":2}"#);
    assert_eq!(
        redis.entries(),
        ["cachalot:{credential:a%3Ab%2A}", "cachalot:{credential:a}"]
    );

    // Each is then a hit on its own entry.
    let again = get(proxy.addr(), "/api/credentials/a:b*", &[]).await;
    assert!(again.hit());
    assert_eq!(again.body, forged.body);
    assert_eq!(origin.count(), 2);
    proxy.shutdown().await;
}

//! Web cache deception and key injection: a private route's response is never stored under
//! a public route, whatever the path looks like.
//!
//! The policy has a public catch-all (`/static/{*file}`), a public cached user card
//! (`/api/users/<int:id>`) and a private profile (`/api/users/<int:id>/profile`, not
//! cached). The origin answers the profile with a secret. Each trick — extension suffix,
//! `;`, `%2F`, `%2e%2e`, double slashes, trailing dots, case — is checked three ways: the
//! secret never lands in Redis, a second request still goes to the origin, and the origin
//! received the path the proxy routed on (normalisation happens once, for both).
//!
//! Key injection: parameters holding `:` `*` `{` `}` spaces or non-UTF-8 bytes get keys of
//! their own, inside the route's namespace, and a prefix purge of one never drops another.

mod support;

use bytes::Bytes;
use cachalot::app::admin::AdminConfig;
use cachalot::{Policy, Server};
use http::Method;
use support::{Origin, RedisServer, Reply, Stack, get, policy_text, send};

const TOKEN: &str = "deception-test-token";

const ROUTES: &str = r#"
[[route]]
name = "static"
match = "GET /static/{*file}"
ttl = "10m"

[[route]]
name = "user"
match = "GET /api/users/<int:id>"
ttl = "1m"

[[route]]
name = "profile"
match = "GET /api/users/<int:id>/profile"
cache = false
"#;

const SECRET: &str = "SECRET-profile";

/// An origin that, like the Flask app, serves the private profile at exactly one path and
/// public data everywhere else.
async fn origin() -> Origin {
    Origin::start(|seen, n| {
        if seen.target == "/api/users/42/profile" {
            Reply::ok(format!("{SECRET} n={n}"))
        } else {
            Reply::ok(format!("public {} n={n}", seen.target))
        }
    })
    .await
}

/// Redis holds no copy of the secret, under any key.
fn assert_secret_not_stored(redis: &RedisServer, trick: &str) {
    for key in redis.entries() {
        let value = redis.command(&["GET", &key]).expect("GET");
        assert!(
            !value.contains(SECRET),
            "{trick}: the private profile was stored under {key}"
        );
    }
}

/// Sends `path` twice; both reach the origin as `expected_target` and neither is stored.
async fn assert_private_each_time(path: &str, expected_target: &str) {
    let origin = origin().await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    for round in 1..=2 {
        let got = get(proxy.addr(), path, &[]).await;
        assert_eq!(got.status, 200, "{path}");
        assert!(!got.stored(), "{path}: {}", got.cache_status());
        assert!(
            !got.cache_status().contains("; hit"),
            "{path}: {}",
            got.cache_status()
        );
        assert_eq!(
            origin.count(),
            round,
            "{path}: every request reaches the origin"
        );
    }
    for seen in origin.seen() {
        assert_eq!(seen.target, expected_target, "{path}: what the origin saw");
    }
    assert_secret_not_stored(&redis, path);
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_extension_suffix_does_not_make_a_private_page_static() {
    // A cache that keys on "looks like a .css file" stores the profile; routes match whole
    // paths here, and no route takes this one.
    assert_private_each_time("/api/users/42/profile/x.css", "/api/users/42/profile/x.css").await;
}

#[tokio::test]
async fn encoded_dot_segments_are_resolved_before_routing_and_for_the_origin() {
    for path in [
        "/static/%2e%2e/api/users/42/profile",
        "/static/%2E%2E/api/users/42/profile",
        "/static/../api/users/42/profile",
        "/static/x/%2e%2e/%2e%2e/api/users/42/profile",
    ] {
        // Without normalisation this path matches /static/{*file} and the profile would
        // be stored as a static file.
        assert_private_each_time(path, "/api/users/42/profile").await;
    }
}

#[tokio::test]
async fn semicolon_path_parameters_cannot_smuggle_a_dot_segment() {
    // Java servers read `..;x` as `..`; it is resolved the same way here, and the origin
    // receives the resolved path.
    for path in [
        "/static/..;/api/users/42/profile",
        "/static/x.css;/../../api/users/42/profile",
    ] {
        assert_private_each_time(path, "/api/users/42/profile").await;
    }
    // A `;` that is data stays data: no route takes these, so they pass through unstored.
    assert_private_each_time("/api/users/42/profile;x.css", "/api/users/42/profile;x.css").await;
}

#[tokio::test]
async fn double_slashes_are_merged_for_routing_and_the_origin() {
    for path in [
        "//api/users/42/profile",
        "/api//users/42//profile",
        "/static//..//api/users/42/profile",
    ] {
        assert_private_each_time(path, "/api/users/42/profile").await;
    }
}

#[tokio::test]
async fn trailing_dots_are_not_the_same_segment() {
    for path in ["/api/users/42/profile.", "/api/users/42./profile"] {
        // No route takes them (routes match segments exactly); forwarded, never stored.
        assert_private_each_time(path, path).await;
    }
}

#[tokio::test]
async fn case_tricks_do_not_reach_a_public_route() {
    // `/STATIC/...` is not `/static/...` (routes, like Flask's, are case-sensitive).
    assert_private_each_time("/STATIC/../api/users/42/profile", "/api/users/42/profile").await;

    let origin = origin().await;
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    let lower = get(proxy.addr(), "/static/app.css", &[]).await;
    assert!(lower.stored());
    let upper = get(proxy.addr(), "/Static/app.css", &[]).await;
    assert!(!upper.stored(), "{}", upper.cache_status());
    assert!(upper.text().contains("/Static/app.css"));
    assert_eq!(redis.entries(), ["cachalot:{static:app.css}"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn encoded_slashes_and_control_characters_are_refused_without_asking_the_origin() {
    let origin = origin().await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    for path in [
        // Werkzeug decodes %2F before routing: the origin would see the profile path.
        "/static/..%2Fapi%2Fusers%2F42%2Fprofile",
        "/static/..%2fapi/users/42/profile",
        "/api/users/42%2Fprofile",
        "/static/x%5C..%5Capi",
        "/static/a%00.css",
        "/api/users/42%0d%0aX-Injected:%201",
    ] {
        let got = get(proxy.addr(), path, &[]).await;
        assert_eq!(got.status, 400, "{path}");
        assert!(got.text().contains("bad request"), "{path}: {}", got.text());
        assert!(
            got.cache_status().contains("bad-path"),
            "{path}: {}",
            got.cache_status()
        );
    }
    assert_eq!(origin.count(), 0);
    assert!(redis.entries().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_stray_percent_cannot_build_an_escape_for_the_origin_to_decode() {
    // `%2%46` would read as `%2F` after one decoding of `%46`; the stray `%` is sent as
    // `%25`, so the origin decodes it to the text "%2F", never to a slash.
    assert_private_each_time("/api/users/42%2%46profile", "/api/users/42%252Fprofile").await;
    // Built dot segments stay text: a static path the origin serves as one, never the profile.
    let origin = origin().await;
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    let got = get(proxy.addr(), "/static/%2%65%2%65/api/users/42/profile", &[]).await;
    assert!(!got.text().contains(SECRET));
    assert_eq!(
        origin.seen()[0].target,
        "/static/%252e%252e/api/users/42/profile"
    );
    assert_secret_not_stored(&redis, "built dot segments");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_normalised_path_shares_the_entry_of_its_plain_form() {
    let origin = origin().await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    let plain = get(proxy.addr(), "/static/css/app.css", &[]).await;
    assert!(plain.stored());
    for path in [
        "/static//css/app.css",
        "/static/css/./app.css",
        "/static/img/../css/app.css",
        "/static/%63ss/app.css",
    ] {
        let got = get(proxy.addr(), path, &[]).await;
        assert!(got.hit(), "{path}: {}", got.cache_status());
        assert_eq!(got.body, plain.body, "{path}");
    }
    assert_eq!(origin.count(), 1);
    assert_eq!(origin.seen()[0].target, "/static/css/app.css");
    proxy.shutdown().await;
}

#[tokio::test]
async fn injected_key_characters_get_keys_of_their_own() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let routes = concat!(
        support::routes::credential!(),
        r#"
[[route]]
name = "other"
match = "GET /api/other/{id}"
ttl = "10m"
key = "other:{id}"
"#
    );
    let policy = Policy::parse(&policy_text(origin.addr(), &redis.url(), routes), "t.toml")
        .expect("valid policy");
    let proxy = Server::start_with(policy, AdminConfig::with_token(Some(TOKEN.into())))
        .await
        .expect("proxy starts");
    let forged = [
        (
            "/api/credentials/x%7Bslot%7D",
            "cachalot:{credential:x%7Bslot%7D}",
        ),
        ("/api/credentials/a%20b", "cachalot:{credential:a%20b}"),
        ("/api/credentials/%FF%FE", "cachalot:{credential:%FF%FE}"),
        // Tries to climb into another route's namespace and the proxy's own.
        (
            "/api/credentials/..:other:x",
            "cachalot:{credential:..%3Aother%3Ax}",
        ),
        (
            "/api/credentials/x:lock:y",
            "cachalot:{credential:x%3Alock%3Ay}",
        ),
        ("/api/credentials/*", "cachalot:{credential:%2A}"),
    ];
    for (path, _) in forged {
        let got = get(proxy.addr(), path, &[]).await;
        assert_eq!(got.status, 200, "{path}");
        assert!(got.stored(), "{path}: {}", got.cache_status());
    }
    let mut expected: Vec<&str> = forged.iter().map(|(_, key)| *key).collect();
    expected.sort_unstable();
    assert_eq!(redis.entries(), expected);
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];

    // A prefix with a glob character matches it literally: nothing starts with "credential:*".
    let none = send(
        proxy.admin_addr(),
        Method::POST,
        "/purge",
        &auth,
        Bytes::from_static(br#"{"prefix": "credential:*"}"#),
    )
    .await;
    assert_eq!(none.status, 200, "{}", none.text());
    assert_eq!(redis.entries(), expected);

    // PURGE of the "*" resource drops its entry only.
    let one = send(
        proxy.admin_addr(),
        Method::from_bytes(b"PURGE").unwrap(),
        "/api/credentials/*",
        &auth,
        Bytes::new(),
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.text());
    expected.retain(|key| *key != "cachalot:{credential:%2A}");
    assert_eq!(redis.entries(), expected);
    proxy.shutdown().await;
}

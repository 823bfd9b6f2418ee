//! The purge API on the admin listener and `cachalot purge`, against a real Redis, origin
//! and proxy: only the configured bearer token purges, a purge drops exactly what it names,
//! and nothing of it is reachable through the public port.

mod support;

use bytes::Bytes;
use cachalot::app::admin::AdminConfig;
use http::Method;
use std::net::SocketAddr;
use std::process::Output;
use support::files::policy_file;
use support::{Got, Origin, Reply, Stack, get, policy_text, send};

const TOKEN: &str = "test-admin-token-4f9c2a";

const ROUTES: &str = r#"
[[route]]
name = "item"
match = "GET /items/{id}"
ttl = "1m"
key = "item:{id}"

[[route]]
name = "user"
match = "GET /users/{uid}/{part}"
ttl = "1m"
key = "user:{uid}:{part}"
tags = ["user:{uid}"]

[[route]]
match = "/auth/{*rest}"
cache = false
"#;

/// A stack whose purge API takes `token` (`None`: the purge API is off).
fn stack(token: Option<&str>) -> support::stack::Builder {
    Stack::builder(ROUTES).admin(AdminConfig::with_token(token.map(String::from)))
}

fn purge_method() -> Method {
    Method::from_bytes(b"PURGE").unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `POST /purge` with `body` and the given Authorization header, if any.
async fn post_purge(admin: SocketAddr, authorization: Option<&str>, body: &str) -> Got {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    send(
        admin,
        Method::POST,
        "/purge",
        &headers,
        Bytes::from(body.to_string()),
    )
    .await
}

async fn purge_path(addr: SocketAddr, authorization: Option<&str>, path: &str) -> Got {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    send(addr, purge_method(), path, &headers, Bytes::new()).await
}

fn json(got: &Got) -> serde_json::Value {
    assert_eq!(got.header("content-type"), "application/json", "{got:?}");
    serde_json::from_slice(&got.body).unwrap_or_else(|e| panic!("{e}: {}", got.text()))
}

/// GETs each path until it is a hit (the first GET stores it).
async fn cache(addr: SocketAddr, paths: &[&str]) {
    for path in paths {
        get(addr, path, &[]).await;
        assert_hit(addr, path).await;
    }
}

async fn assert_hit(addr: SocketAddr, path: &str) {
    let got = get(addr, path, &[]).await;
    assert!(
        got.cache_status().contains("; hit"),
        "{path} should be a hit: {}",
        got.cache_status()
    );
}

async fn assert_miss(addr: SocketAddr, path: &str) {
    let got = get(addr, path, &[]).await;
    assert!(
        got.cache_status().contains("fwd=uri-miss"),
        "{path} should have been purged: {}",
        got.cache_status()
    );
}

#[tokio::test]
async fn purging_needs_the_configured_bearer_token() {
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = stack(Some(TOKEN)).start().await;
    cache(proxy.addr(), &["/items/1"]).await;
    let admin = proxy.admin_addr();

    let wrong = bearer("test-admin-token-4f9c2b");
    for authorization in [None, Some(wrong.as_str()), Some("Basic dXNlcjpwYXNz")] {
        for got in [
            post_purge(admin, authorization, r#"{"keys": ["item:1"]}"#).await,
            purge_path(admin, authorization, "/items/1").await,
        ] {
            assert_eq!(got.status, 401, "{authorization:?}: {}", got.text());
            assert!(
                got.header("www-authenticate").starts_with("Bearer"),
                "{:?}",
                got.headers
            );
            assert!(json(&got)["error"].is_string());
        }
    }
    assert_hit(proxy.addr(), "/items/1").await;

    // Health and metrics stay open: a load balancer has no token.
    assert_eq!(get(admin, "/healthz", &[]).await.status, 200);
    assert_eq!(get(admin, "/health/cache", &[]).await.status, 200);
    assert_eq!(get(admin, "/metrics", &[]).await.status, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn without_a_token_the_purge_api_is_off_and_says_so() {
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = stack(None).start().await;
    cache(proxy.addr(), &["/items/1"]).await;
    let admin = proxy.admin_addr();

    for authorization in [None, Some("Bearer "), Some("Bearer anything")] {
        for got in [
            post_purge(admin, authorization, r#"{"keys": ["item:1"]}"#).await,
            purge_path(admin, authorization, "/items/1").await,
        ] {
            assert_eq!(got.status, 403, "{authorization:?}: {}", got.text());
            let reason = json(&got)["error"].as_str().unwrap_or_default().to_string();
            assert!(reason.contains("CACHALOT_ADMIN_TOKEN"), "{reason}");
        }
    }
    assert_hit(proxy.addr(), "/items/1").await;
    assert_eq!(get(admin, "/healthz", &[]).await.status, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn post_purge_drops_exactly_the_keys_tags_and_prefixes_it_names() {
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = stack(Some(TOKEN)).start().await;
    let (addr, admin) = (proxy.addr(), proxy.admin_addr());
    let auth = bearer(TOKEN);
    let all = [
        "/items/1",
        "/items/1?v=2",
        "/items/2",
        "/users/42/profile",
        "/users/42/settings",
        "/users/7/profile",
    ];
    cache(addr, &all).await;

    // A key drops every variant of it, and nothing else.
    let got = post_purge(
        admin,
        Some(&auth),
        r#"{"keys": ["item:1"], "reason": "test"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(json(&got), serde_json::json!({"dropped": 1}));
    assert_miss(addr, "/items/1").await;
    assert_miss(addr, "/items/1?v=2").await;
    for path in ["/items/2", "/users/42/profile", "/users/7/profile"] {
        assert_hit(addr, path).await;
    }

    // A tag drops the entries carrying it.
    let got = post_purge(admin, Some(&auth), r#"{"tags": ["user:42"]}"#).await;
    assert_eq!(json(&got), serde_json::json!({"dropped": 2}));
    assert_miss(addr, "/users/42/profile").await;
    assert_miss(addr, "/users/42/settings").await;
    assert_hit(addr, "/users/7/profile").await;
    assert_hit(addr, "/items/2").await;

    // A prefix drops the keys starting with it.
    let got = post_purge(admin, Some(&auth), r#"{"prefix": "item:"}"#).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_miss(addr, "/items/2").await;
    assert_hit(addr, "/users/7/profile").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn purge_of_a_path_drops_the_entry_a_get_of_it_uses() {
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = stack(Some(TOKEN)).start().await;
    let (addr, admin) = (proxy.addr(), proxy.admin_addr());
    let auth = bearer(TOKEN);
    cache(addr, &["/items/1", "/items/2"]).await;

    let got = purge_path(admin, Some(&auth), "/items/1").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        json(&got),
        serde_json::json!({"dropped": 1, "key": "item:1"})
    );
    assert_miss(addr, "/items/1").await;
    assert_hit(addr, "/items/2").await;

    // No cached route takes these paths: nothing is stored for them.
    for path in ["/nope", "/auth/login"] {
        let got = purge_path(admin, Some(&auth), path).await;
        assert_eq!(got.status, 404, "{path}: {}", got.text());
        assert!(json(&got)["error"].as_str().unwrap().contains(path));
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn bad_purge_bodies_are_refused_with_the_reason() {
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = stack(Some(TOKEN)).start().await;
    let admin = proxy.admin_addr();
    let auth = bearer(TOKEN);
    cache(proxy.addr(), &["/items/1"]).await;

    for (body, says) in [
        ("not json", "expected a JSON object"),
        ("{}", "names nothing"),
        (r#"{"prefix": ""}"#, "whole cache"),
        (r#"{"tag": ["user:42"]}"#, "unknown field \"tag\""),
        (r#"{"keys": "item:1"}"#, "not an invalidation"),
    ] {
        let got = post_purge(admin, Some(&auth), body).await;
        assert_eq!(got.status, 400, "{body}: {}", got.text());
        let reason = json(&got)["error"].as_str().unwrap().to_string();
        assert!(reason.contains(says), "{body}: {reason}");
    }
    let huge = format!(r#"{{"keys": ["{}"]}}"#, "k".repeat(70 * 1024));
    let got = post_purge(admin, Some(&auth), &huge).await;
    assert_eq!(got.status, 413, "{}", got.text());

    let got = get(admin, "/purge", &[]).await;
    assert_eq!(got.status, 405);
    assert_eq!(got.header("allow"), "POST");
    assert_hit(proxy.addr(), "/items/1").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_purge_api_is_not_reachable_on_the_public_port() {
    // An origin that takes only GET, as most APIs would answer PURGE.
    let origin = Origin::start(|seen, n| match seen.method.as_str() {
        "GET" => Reply::ok(format!("{{\"n\":{n}}}")),
        _ => Reply::ok("origin: method not allowed").status(405),
    })
    .await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = stack(Some(TOKEN)).origin(origin).start().await;
    let addr = proxy.addr();
    let auth = bearer(TOKEN);
    cache(addr, &["/items/1"]).await;

    let got = post_purge(addr, Some(&auth), r#"{"keys": ["item:1"]}"#).await;
    assert_eq!(got.text(), "origin: method not allowed");
    let got = purge_path(addr, Some(&auth), "/items/1").await;
    assert_eq!(got.text(), "origin: method not allowed");
    assert_eq!(
        origin.count_of("/purge"),
        1,
        "the origin answered POST /purge"
    );
    assert_hit(addr, "/items/1").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_purge_while_redis_is_down_is_queued() {
    let Stack {
        mut redis,
        origin: _origin,
        proxy,
        ..
    } = stack(Some(TOKEN)).start().await;
    let auth = bearer(TOKEN);
    cache(proxy.addr(), &["/items/1"]).await;

    redis.kill();
    let got = post_purge(proxy.admin_addr(), Some(&auth), r#"{"keys": ["item:1"]}"#).await;
    assert_eq!(got.status, 202, "{}", got.text());
    assert_eq!(json(&got), serde_json::json!({"queued": true}));
    let got = purge_path(proxy.admin_addr(), Some(&auth), "/items/2").await;
    assert_eq!(got.status, 202, "{}", got.text());
    proxy.shutdown().await;
}

/// Runs `cachalot` with a clean environment apart from `env`.
async fn cachalot(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("CACHALOT_CONFIG")
        .output()
        .await
        .expect("cachalot runs")
}

#[tokio::test]
async fn the_purge_command_drops_what_a_running_proxy_cached() {
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = stack(None).start().await;
    let addr = proxy.addr();
    cache(addr, &["/items/1", "/items/2", "/users/42/profile"]).await;

    let dir = tempfile::tempdir().unwrap();
    let config = policy_file(
        dir.path(),
        "cachalot.toml",
        &policy_text(origin.addr(), &redis.url(), ROUTES),
    )
    .display()
    .to_string();
    let out = cachalot(&[
        "purge", "--config", &config, "--key", "item:1", "--tag", "user:42", "--reason", "test",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("invalidated 2 keys (each with all its variants)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("on \"cache:invalidate\": 1 subscriber heard it"),
        "the running proxy heard it: {stdout}"
    );
    assert_miss(addr, "/items/1").await;
    assert_miss(addr, "/users/42/profile").await;
    assert_hit(addr, "/items/2").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_purge_command_fails_clearly_without_redis_or_without_a_name() {
    let origin = Origin::echo().await;
    let dead = format!("redis://127.0.0.1:{}", support::redis::free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = policy_file(
        dir.path(),
        "cachalot.toml",
        &policy_text(origin.addr(), &dead, ROUTES),
    )
    .display()
    .to_string();

    let out = cachalot(&["purge", "--config", &config, "--key", "item:1"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(stderr.contains("nothing was purged"), "{stderr}");

    let out = cachalot(&["purge", "--config", &config]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing to purge"), "{stderr}");
}

//! `cachalot explain` as policy authors meet it: which route takes a request, its Redis
//! key, TTL and tags, what reaches the origin, and what a write invalidates; and proof that
//! the key and origin target it prints are the ones the running proxy uses.

mod support;

use std::io::Write;
use std::process::{Command, Output};
use support::{Origin, RedisServer, get, policy_text, start_proxy};

const ROUTES: &str = r#"
[[route]]
name = "credential"
match = "GET /api/credentials/{id}"
ttl = "10m"
key = "credential:{id}"
tags = ["credential:{id}", "credentials"]
query = ["x"]
ignore_cookies = true

[[route]]
name = "revoke"
match = "POST|PUT /api/credentials/{id}/revoke"
invalidate = ["credential:{id}"]
invalidate_tags = ["credentials"]

[[route]]
match = "GET /api/stats"
ttl = "30s"

[[route]]
name = "file"
match = "GET /files/{org}/{*path}"
ttl = "1h"
compress = false

[[route]]
name = "auth"
match = "/api/auth/{*rest}"
cache = false
"#;

fn policy_file() -> tempfile::NamedTempFile {
    let text = policy_text(
        "127.0.0.1:5000".parse().unwrap(),
        "redis://127.0.0.1:1",
        ROUTES,
    );
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write policy");
    file
}

fn explain_with(config: &str, request: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["explain", "--config", config, request])
        .env_remove("REDIS_URL")
        .env_remove("CACHALOT_CONFIG")
        .output()
        .expect("cachalot runs")
}

/// `explain`'s output for `request`, which must succeed.
fn explain(request: &str) -> String {
    let file = policy_file();
    let out = explain_with(file.path().to_str().unwrap(), request);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{request}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The value on the first line labelled `label`.
fn field<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| {
            line.strip_prefix(label)
                .filter(|rest| rest.starts_with(' '))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{output}"))
}

#[test]
fn a_cached_get_shows_route_key_ttl_tags_and_origin_target() {
    let out = explain("GET /api/credentials/abc?x=1&utm_source=qr");
    let route = field(&out, "route");
    assert!(
        route.starts_with("credential: \"GET /api/credentials/{id}\""),
        "{out}"
    );
    assert!(
        route.contains(".toml:"),
        "file and line of the route: {out}"
    );
    assert_eq!(field(&out, "params"), "id=abc");
    assert!(field(&out, "action").starts_with("cached"), "{out}");
    assert_eq!(field(&out, "key"), "cachalot:{credential:abc}?x=1");
    assert!(field(&out, "ttl").starts_with("10m "), "{out}");
    assert!(
        field(&out, "tags").starts_with("credential:abc, credentials;"),
        "{out}"
    );
    // query = ["x"]: only x reaches the origin.
    assert!(
        field(&out, "origin").starts_with("GET /api/credentials/abc?x=1 "),
        "{out}"
    );
    assert!(
        field(&out, "bypass").contains("Cookie is stripped"),
        "{out}"
    );
    assert!(!out.contains("on 2xx"), "a read invalidates nothing: {out}");
}

#[test]
fn the_compress_line_says_how_bodies_are_stored_and_what_turned_it_off() {
    let on = explain("GET /api/stats");
    assert!(
        field(&on, "compress").starts_with(
            "bodies of [compression] types from 512 B up are stored gzip-compressed (level 6)"
        ),
        "{on}"
    );
    let route_off = explain("GET /files/acme/a.txt");
    assert!(
        field(&route_off, "compress").starts_with("off for this route (compress = false)"),
        "{route_off}"
    );
    let text = policy_text(
        "127.0.0.1:5000".parse().unwrap(),
        "redis://127.0.0.1:1",
        &format!("{ROUTES}\n[compression]\nenabled = false\ncoding = \"zstd\"\n"),
    );
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let out = explain_with(file.path().to_str().unwrap(), "GET /api/stats");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        field(&out, "compress").starts_with("off ([compression] enabled = false)"),
        "{out}"
    );
}

#[test]
fn query_variants_share_a_key_in_sorted_order_and_a_bare_path_is_a_get() {
    let out = explain("/api/stats?period=week&b=2&a=1");
    assert_eq!(field(&out, "request"), "GET /api/stats?period=week&b=2&a=1");
    assert_eq!(
        field(&out, "key"),
        "cachalot:{/api/stats}?a=1&b=2&period=week"
    );
    assert_eq!(
        field(&out, "origin"),
        "GET /api/stats?period=week&b=2&a=1",
        "the origin gets the query as sent"
    );
    let head = explain("HEAD /api/stats?a=1&b=2&period=week");
    assert_eq!(field(&head, "key"), field(&out, "key"));
    assert!(field(&head, "action").contains("GET entry"), "{head}");
}

#[test]
fn a_pass_route_and_no_route_are_forwarded_untouched() {
    let out = explain("POST /api/auth/login");
    assert!(field(&out, "route").starts_with("auth: "), "{out}");
    let action = field(&out, "action");
    assert!(action.contains("cache = false"), "{out}");
    assert!(action.contains("route-pass"), "{out}");
    assert_eq!(field(&out, "origin"), "POST /api/auth/login (untouched)");
    assert!(!out.contains("\nkey "), "{out}");

    let out = explain("GET /nope?a=1");
    assert!(field(&out, "route").starts_with("none"), "{out}");
    assert!(field(&out, "action").contains("no-route"), "{out}");
    assert_eq!(field(&out, "origin"), "GET /nope?a=1 (untouched)");
}

#[test]
fn a_write_shows_what_its_success_invalidates() {
    let out = explain("POST /api/credentials/abc/revoke");
    assert!(field(&out, "route").starts_with("revoke: "), "{out}");
    assert!(field(&out, "action").contains("only writes"), "{out}");
    assert!(
        out.contains("  key       cachalot:{credential:abc} and its variants (invalidate)\n"),
        "{out}"
    );
    assert!(
        out.contains("  tag       credentials: every entry carrying it (invalidate_tags)\n"),
        "{out}"
    );

    // No rule, but RFC 9111 §4.4: a write drops what a GET of its own URI was cached under.
    let out = explain("DELETE /api/credentials/abc");
    assert!(field(&out, "action").contains("no-route"), "{out}");
    assert!(
        out.contains("  key       cachalot:{credential:abc} and its variants (RFC 9111"),
        "{out}"
    );

    let out = explain("DELETE /nope");
    assert!(out.contains("  nothing   no invalidate rule"), "{out}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let file = policy_file();
    let config = file.path().to_str().unwrap();
    for (request, says) in [
        ("get /api/stats", "upper case"),
        ("", "no request given"),
        ("GET /a /b", "not one request"),
        ("GET api/stats", "must start with '/'"),
    ] {
        let out = explain_with(config, request);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{request:?}: {stderr}");
        assert!(stderr.contains(says), "{request:?}: {stderr}");
    }
    let out = explain_with("/nonexistent/cachalot.toml", "GET /a");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[tokio::test]
async fn explain_names_the_key_and_origin_target_the_proxy_uses() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let proxy = start_proxy(&origin, &redis, ROUTES).await;
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(policy_text(origin.addr(), &redis.url(), ROUTES).as_bytes())
        .unwrap();
    let config = file.path().to_str().unwrap().to_string();

    for target in [
        "/api/credentials/ab%63?utm=1&x=2",
        "/api/stats?b=2&a=1&b=1",
        "/files/o1/a/b%20c.txt",
        "/files/o1/x:y",
    ] {
        let before = redis.entries();
        get(proxy.addr(), target, &[]).await;
        let stored: Vec<String> = redis
            .entries()
            .into_iter()
            .filter(|k| !before.contains(k))
            .collect();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cachalot"))
            .args(["explain", "--config", &config, &format!("GET {target}")])
            .env_remove("REDIS_URL")
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        let out = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stored, [field(&out, "key")], "{target}: {out}");
        let sent = origin.seen().last().unwrap().target.clone();
        let explained = field(&out, "origin").split(' ').nth(1).unwrap();
        assert_eq!(sent, explained, "{target}: {out}");
    }

    // The key explain says a revoke drops is the one the proxy drops.
    get(proxy.addr(), "/api/credentials/abc", &[]).await;
    assert!(
        redis
            .entries()
            .contains(&"cachalot:{credential:abc}".to_string())
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args([
            "explain",
            "--config",
            &config,
            "POST /api/credentials/abc/revoke",
        ])
        .env_remove("REDIS_URL")
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let dropped = field(&out, "  key").split(' ').next().unwrap().to_string();
    support::send(
        proxy.addr(),
        http::Method::POST,
        "/api/credentials/abc/revoke",
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert!(!redis.entries().contains(&dropped), "{dropped}: {out}");
    proxy.shutdown().await;
}

/// The sample in docs/operations.md is the real output for the shipped policy, so it cannot go
/// stale when the policy's lines move or `explain` learns a new line.
#[test]
fn the_docs_sample_is_what_explain_prints() {
    let command = "$ cachalot explain --config config/cachalot.toml \"GET /api/credentials/abc123?utm_source=qr\"\n";
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md");
    let start = docs.find(command).expect("the docs show this explain") + command.len();
    let sample = &docs[start..start + docs[start..].find("```").expect("closed block")];
    let out = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "explain",
            "--config",
            "config/cachalot.toml",
            "GET /api/credentials/abc123?utm_source=qr",
        ])
        .env_remove("REDIS_URL")
        .env_remove("CACHALOT_CONFIG")
        .env_remove("CACHALOT_ORIGIN")
        .output()
        .expect("cachalot runs");
    assert_eq!(sample, String::from_utf8_lossy(&out.stdout));
}

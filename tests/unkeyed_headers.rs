//! Headers that could shape a shared response without being in its key (issue 13 §3).
//!
//! The promises checked here:
//! - on a cacheable route a fill passes the origin only what the key holds (the authority,
//!   the route's `vary` headers, `Authorization` with `per_user`), the request id, and
//!   content negotiation (`Accept`, `Accept-Language`, `Accept-Charset`, `User-Agent`), or
//!   exactly the route's `forward_headers`; every header known to move an origin's idea of
//!   its own URL (`X-Forwarded-Scheme`, `X-Forwarded-Ssl`, `Front-End-Https`, `X-Url-Scheme`,
//!   `X-Original-Host`, `X-Forwarded-Uri`, `X-Original-Uri`, `X-Forwarded-Path`, …) and
//!   every one no list foresaw never reaches it: an attacker's reflection never reaches a
//!   victim's hit;
//! - header names with `_` are dropped on every request, cached or not, unless
//!   `[listen] underscores_in_headers = true`: `X_Forwarded_Host` is `X-Forwarded-Host` to a
//!   WSGI server;
//! - `forward_headers` refuses names that would reopen the hole, naming file and field.

mod support;

use cachalot::{Policy, Server};
use std::net::SocketAddr;
use support::python::WsgiOrigin;
use support::{Origin, RedisServer, Reply, get, policy_text_listen};

const ROUTES: &str = r#"
[[route]]
name = "page"
match = "GET /page/{id}"
ttl = "10m"

[[route]]
match = "/pass/{id}"
cache = false
"#;

const STRICT: &str = r#"
[[route]]
name = "strict"
match = "GET /strict/{id}"
ttl = "10m"
forward_headers = ["X-Team"]
"#;

/// Every header issue 13 found reflected, and the ones the old deny-list already knew.
const REFLECTED: [&str; 15] = [
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "front-end-https",
    "x-url-scheme",
    "x-original-host",
    "x-forwarded-uri",
    "x-original-uri",
    "x-forwarded-path",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-host",
    "x-original-url",
    "forwarded",
    "referer",
];

#[tokio::test]
async fn no_header_outside_the_key_reaches_a_victim() {
    let redis = RedisServer::start();
    // Reflects every request header it receives into the body, as a careless origin does.
    let origin = Origin::start(|seen, _| {
        let mut body = String::new();
        for (name, value) in &seen.headers {
            body.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        Reply::ok(body)
    })
    .await;
    let proxy = proxy_for(origin.addr(), &redis, "", ROUTES).await;
    for (i, name) in REFLECTED.iter().enumerate() {
        let path = format!("/page/{i}");
        let attacker = get(proxy.addr(), &path, &[(name, "evil.example")]).await;
        assert!(attacker.stored(), "{name}: {}", attacker.cache_status());
        let victim = get(proxy.addr(), &path, &[]).await;
        assert!(victim.hit(), "{name}: {}", victim.cache_status());
        assert!(
            !victim.text().contains("evil"),
            "{name} reached the victim: {}",
            victim.text()
        );
    }
    for seen in origin.seen() {
        for name in REFLECTED {
            assert!(
                seen.headers.get(name).is_none(),
                "{name} reached the origin"
            );
        }
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn fills_pass_content_negotiation_or_exactly_the_routes_list() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let proxy = proxy_for(origin.addr(), &redis, "", &format!("{ROUTES}{STRICT}")).await;
    let sent = [
        ("accept", "application/json"),
        ("accept-language", "de"),
        ("user-agent", "curl/8"),
        ("x-team", "blue"),
        ("x-end-to-end", "kept?"),
    ];
    get(proxy.addr(), "/page/1", &sent).await;
    get(proxy.addr(), "/strict/1", &sent).await;
    get(proxy.addr(), "/pass/1", &sent).await;
    let seen = origin.seen();
    assert_eq!(seen.len(), 3);
    let names = |i: usize| -> Vec<&str> {
        sent.iter()
            .map(|(name, _)| *name)
            .filter(|name| seen[i].headers.contains_key(*name))
            .collect()
    };
    assert_eq!(names(0), ["accept", "accept-language", "user-agent"]);
    assert_eq!(names(1), ["x-team"]);
    assert_eq!(names(2), sent.map(|(name, _)| name));
    for request in &seen {
        assert_eq!(request.headers["host"], support::HOST);
        assert!(request.headers.contains_key("x-request-id"));
        assert!(request.headers.contains_key("x-forwarded-for"));
    }
    proxy.shutdown().await;
}

/// A proxy in front of any origin address, with `listen` as its `[listen]` extras.
async fn proxy_for(origin: SocketAddr, redis: &RedisServer, listen: &str, routes: &str) -> Server {
    let text = policy_text_listen(origin, &redis.url(), listen, "", routes);
    Server::start(Policy::parse(&text, "test.toml").expect("valid policy"))
        .await
        .expect("proxy starts")
}

#[tokio::test]
async fn underscored_names_never_reach_a_wsgi_origin() {
    let redis = RedisServer::start();
    let python = WsgiOrigin::start();
    let proxy = proxy_for(python.addr(), &redis, "", ROUTES).await;
    let attack = [
        ("host", "shop.example"),
        ("x_forwarded_host", "evil.example"),
    ];
    let attacker = get(proxy.addr(), "/page/1", &attack).await;
    assert_eq!(attacker.text(), "url: http://shop.example/page/1\n");
    let victim = get(proxy.addr(), "/page/1", &[("host", "shop.example")]).await;
    assert!(victim.hit(), "{}", victim.cache_status());
    assert_eq!(victim.text(), "url: http://shop.example/page/1\n");
    // Not on passed requests either: the app would build its links from it all the same.
    let passed = get(proxy.addr(), "/pass/1", &attack).await;
    assert_eq!(passed.text(), "url: http://shop.example/pass/1\n");
    proxy.shutdown().await;

    // Kept when the deployment says so (and the WSGI server reads it as X-Forwarded-Host).
    let allowing = proxy_for(
        python.addr(),
        &redis,
        "underscores_in_headers = true",
        ROUTES,
    )
    .await;
    let passed = get(allowing.addr(), "/pass/1", &attack).await;
    assert_eq!(passed.text(), "url: http://evil.example/pass/1\n");
    allowing.shutdown().await;
}

#[test]
fn forward_headers_refuses_what_would_reopen_the_hole() {
    for (listed, says) in [
        ("X-Forwarded-Host", "vary"),
        ("Front-End-Https", "vary"),
        ("X-Original-Uri", "vary"),
        ("Cookie", "per_user"),
        ("Host", "set by the proxy"),
        ("X_Team", "'_'"),
        ("Connection", "set by the proxy"),
        ("Content-Length", "set by the proxy"),
    ] {
        let routes = format!(
            "[[route]]\nmatch = \"GET /x/{{id}}\"\nttl = \"1m\"\nforward_headers = [\"{listed}\"]\n"
        );
        let text = policy_text_listen(
            "127.0.0.1:1".parse().unwrap(),
            "redis://127.0.0.1:1",
            "",
            "",
            &routes,
        );
        let error = Policy::parse(&text, "test.toml").unwrap_err().to_string();
        assert!(
            error.contains("route[0].forward_headers") && error.contains(says),
            "{listed}: {error}"
        );
    }
}

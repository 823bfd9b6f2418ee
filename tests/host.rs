//! The request's authority: what the origin sees of it, and whose entry it is.
//!
//! The promises checked here (issue 13 §2, issue 20 §3 and §4):
//! - an attacker's `Host` never reaches a victim: with any host allowed (the default) the
//!   authority is part of the key, so `Host: evil.example` fills its own entry, never the
//!   shared one; a 302 `Location` built from it likewise;
//! - two virtual hosts on one origin never share entries;
//! - a request without a usable Host (HTTP/1.0 without one) is forwarded and never stored;
//!   `Connection: host` cannot take the Host away from the origin request;
//! - `[listen] hosts` answers 421 for any other authority, without asking the origin, and
//!   keeps keys free of the one served host;
//! - invalidation by a write reaches every host's entry;
//! - two Host lines, none on HTTP/1.1, a list, userinfo, a path, a space, a bad port, an
//!   unclosed IPv6 literal: 400, and the origin receives nothing; on HTTP/2 `:authority` is
//!   the authority, userinfo in it or a Host that disagrees with it is 400;
//! - `GET *` (and `:path *` on HTTP/2) is 400; `OPTIONS *` is answered by the proxy itself.
//!
//! Origins: the Rust test origin and a Python WSGI app (`wsgiref`) that builds its URLs as
//! Werkzeug's `url_for(_external=True)` does.

mod support;

use bytes::Bytes;
use cachalot::{Policy, Server};
use http::Method;
use std::net::SocketAddr;
use support::python::WsgiOrigin;
use support::{Origin, RedisServer, Reply, get, policy_text_listen, raw, send};
use tokio::net::TcpStream;

const ROUTES: &str = r#"
[[route]]
name = "page"
match = "/page/{id}"
ttl = "10m"

[[route]]
name = "go"
match = "GET /go/{id}"
ttl = "10m"
statuses = [200, 302]
"#;

/// A proxy in front of any origin address, with `listen` as its `[listen]` extras.
async fn proxy_for(origin: SocketAddr, redis: &RedisServer, listen: &str) -> Server {
    let text = policy_text_listen(origin, &redis.url(), listen, "", ROUTES);
    Server::start(Policy::parse(&text, "test.toml").expect("valid policy"))
        .await
        .expect("proxy starts")
}

/// The Rust origin, reflecting `Host` into its body (and a redirect), as Flask does.
async fn reflecting_origin() -> Origin {
    Origin::start(|seen, _| {
        let host = seen.headers.get("host").map_or("", |h| h.to_str().unwrap());
        let reply = Reply::ok(format!("url: http://{host}{}\n", seen.target));
        if seen.target.starts_with("/go/") {
            reply
                .status(302)
                .header("location", &format!("http://{host}/login"))
        } else {
            reply
        }
    })
    .await
}

#[tokio::test]
async fn an_attackers_host_never_reaches_a_victim_on_either_origin() {
    let redis = RedisServer::start();
    let rust = reflecting_origin().await;
    let python = WsgiOrigin::start();
    for (name, addr) in [("rust", rust.addr()), ("wsgiref", python.addr())] {
        let proxy = proxy_for(addr, &redis, "").await;
        let path = format!("/page/{name}");
        let attacker = get(proxy.addr(), &path, &[("host", "evil.example")]).await;
        assert_eq!(attacker.status, 200, "{name}");
        assert!(
            attacker.text().contains("evil.example"),
            "{name}: {attacker:?}"
        );
        for round in 0..2 {
            let victim = get(proxy.addr(), &path, &[("host", "shop.example")]).await;
            assert!(
                !victim.text().contains("evil"),
                "{name}: the victim got the attacker's page: {}",
                victim.text()
            );
            assert!(
                victim.text().contains("http://shop.example/page/"),
                "{name}"
            );
            assert_eq!(
                victim.hit(),
                round == 1,
                "{name}: {}",
                victim.cache_status()
            );
        }
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn a_redirect_location_is_not_poisoned() {
    let redis = RedisServer::start();
    let python = WsgiOrigin::start();
    let proxy = proxy_for(python.addr(), &redis, "").await;
    let attacker = get(proxy.addr(), "/go/1", &[("host", "evil.example")]).await;
    assert_eq!(attacker.status, 302);
    assert_eq!(attacker.header("location"), "http://evil.example/login");
    for round in 0..2 {
        let victim = get(proxy.addr(), "/go/1", &[("host", "shop.example")]).await;
        assert_eq!(victim.status, 302);
        assert_eq!(victim.header("location"), "http://shop.example/login");
        assert_eq!(victim.hit(), round == 1, "{}", victim.cache_status());
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn two_virtual_hosts_on_one_origin_never_share_entries() {
    let redis = RedisServer::start();
    let origin = Origin::start(|seen, _| {
        let tenant = seen.headers["host"].to_str().unwrap().to_string();
        Reply::ok(format!("{{\"tenant\":\"{tenant}\"}}"))
    })
    .await;
    let proxy = proxy_for(origin.addr(), &redis, "").await;
    for round in 0..2 {
        for tenant in ["a.example", "b.example"] {
            let got = get(proxy.addr(), "/page/data", &[("host", tenant)]).await;
            assert_eq!(got.text(), format!("{{\"tenant\":\"{tenant}\"}}"));
            assert_eq!(got.hit(), round == 1, "{tenant}: {}", got.cache_status());
        }
    }
    assert_eq!(origin.count(), 2);
    // Spellings of one host share its entry: case, the default port, a trailing dot.
    let same = get(proxy.addr(), "/page/data", &[("host", "A.Example.:80")]).await;
    assert!(same.hit(), "{}", same.cache_status());
    assert_eq!(same.text(), "{\"tenant\":\"a.example\"}");
    let mut keys = redis.entries();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cachalot:{page:data}?#host=a.example",
            "cachalot:{page:data}?#host=b.example"
        ]
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_absolute_form_target_names_the_host_over_the_host_header() {
    let redis = RedisServer::start();
    let python = WsgiOrigin::start();
    let proxy = proxy_for(python.addr(), &redis, "").await;
    // RFC 9112 §3.2.2: the target's authority wins; the origin and the key both use it.
    let reply = raw(
        proxy.addr(),
        b"GET http://evil.example/page/4 HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        reply.ends_with("url: http://evil.example/page/4\n"),
        "{reply}"
    );
    let victim = get(proxy.addr(), "/page/4", &[("host", "shop.example")]).await;
    assert!(!victim.hit(), "{}", victim.cache_status());
    assert_eq!(victim.text(), "url: http://shop.example/page/4\n");
    proxy.shutdown().await;
}

#[tokio::test]
async fn without_a_usable_host_nothing_is_stored() {
    let redis = RedisServer::start();
    let python = WsgiOrigin::start();
    let proxy = proxy_for(python.addr(), &redis, "").await;
    for _ in 0..2 {
        let reply = raw(proxy.addr(), b"GET /page/1 HTTP/1.0\r\n\r\n").await;
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
        assert!(
            reply.contains("cache-status: cachalot; fwd=bypass"),
            "{reply}"
        );
        assert!(reply.contains("/no-host"), "{reply}");
    }
    assert_eq!(redis.entries(), Vec::<String>::new());
    // The next visitor with a Host gets the origin's answer for it, not a stored fallback.
    let victim = get(proxy.addr(), "/page/1", &[("host", "shop.example")]).await;
    assert!(!victim.hit(), "{}", victim.cache_status());
    assert_eq!(victim.text(), "url: http://shop.example/page/1\n");
    proxy.shutdown().await;
}

#[tokio::test]
async fn connection_host_cannot_take_the_host_away_from_the_origin() {
    let redis = RedisServer::start();
    let python = WsgiOrigin::start();
    let proxy = proxy_for(python.addr(), &redis, "").await;
    let reply = raw(
        proxy.addr(),
        b"GET /page/2 HTTP/1.1\r\nHost: shop.example\r\nConnection: host, close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.ends_with("url: http://shop.example/page/2\n"),
        "{reply}"
    );
    let victim = get(proxy.addr(), "/page/2", &[("host", "shop.example")]).await;
    assert!(victim.hit(), "{}", victim.cache_status());
    assert_eq!(victim.text(), "url: http://shop.example/page/2\n");
    proxy.shutdown().await;
}

#[tokio::test]
async fn served_hosts_answer_421_for_any_other_without_asking_the_origin() {
    let redis = RedisServer::start();
    let origin = reflecting_origin().await;
    let proxy = proxy_for(origin.addr(), &redis, r#"hosts = ["shop.example"]"#).await;
    for host in ["evil.example", "shop.example:8080", "127.0.0.1"] {
        let got = get(proxy.addr(), "/page/1", &[("host", host)]).await;
        assert_eq!(got.status, 421, "{host}");
        assert!(got.cache_status().contains("misdirected-host"), "{host}");
    }
    let reply = raw(proxy.addr(), b"GET /page/1 HTTP/1.0\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.0 421"), "{reply}");
    assert_eq!(origin.count(), 0);
    let got = get(proxy.addr(), "/page/1", &[("host", "SHOP.example:80")]).await;
    assert_eq!(got.text(), "url: http://shop.example/page/1\n");
    // One served host tells no entry apart: it is not in the key.
    assert_eq!(redis.entries(), ["cachalot:{page:1}"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_write_invalidates_the_entry_of_every_host() {
    let redis = RedisServer::start();
    let origin = reflecting_origin().await;
    let proxy = proxy_for(origin.addr(), &redis, "").await;
    let hosts = ["a.example", "b.example:8080"];
    for host in hosts {
        assert!(
            get(proxy.addr(), "/page/7", &[("host", host)])
                .await
                .stored()
        );
        assert!(get(proxy.addr(), "/page/7", &[("host", host)]).await.hit());
    }
    let write = send(
        proxy.addr(),
        Method::POST,
        "/page/7",
        &[("host", "a.example")],
        Bytes::new(),
    )
    .await;
    assert_eq!(write.status, 200);
    for host in hosts {
        let after = get(proxy.addr(), "/page/7", &[("host", host)]).await;
        assert!(!after.hit(), "{host}: {}", after.cache_status());
    }
    proxy.shutdown().await;
}

#[test]
fn explain_shows_the_authority_in_the_key() {
    let text = policy_text_listen(
        "127.0.0.1:1".parse().unwrap(),
        "redis://127.0.0.1:1",
        "",
        "",
        ROUTES,
    );
    let policy = Policy::parse(&text, "test.toml").unwrap();
    let probe = cachalot::app::explain::Probe::parse("http://Shop.Example:80/page/1").unwrap();
    let out = cachalot::app::explain::explain(&policy, &probe);
    assert!(
        out.contains("cachalot:{page:1}?#host=shop.example"),
        "{out}"
    );
    let bare = cachalot::app::explain::Probe::parse("/page/1").unwrap();
    let out = cachalot::app::explain::explain(&policy, &bare);
    assert!(
        out.contains("cachalot:{page:1}?#host=<the request's Host>"),
        "{out}"
    );
}

#[test]
fn a_bad_served_host_names_the_field() {
    for bad in [
        r#"hosts = ["a@b"]"#,
        r#"hosts = []"#,
        r#"hosts = ["a.example", "A.example:80"]"#,
    ] {
        let text = policy_text_listen(
            "127.0.0.1:1".parse().unwrap(),
            "redis://127.0.0.1:1",
            bad,
            "",
            ROUTES,
        );
        let error = Policy::parse(&text, "test.toml").unwrap_err().to_string();
        assert!(error.contains("listen.hosts"), "{bad}: {error}");
    }
}

#[tokio::test]
async fn malformed_hosts_and_asterisk_targets_are_400_and_reach_nobody() {
    let redis = RedisServer::start();
    let origin = reflecting_origin().await;
    let proxy = proxy_for(origin.addr(), &redis, "").await;
    let heads: [&[u8]; 11] = [
        b"GET /page/1 HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        b"GET /page/1 HTTP/1.1\r\n\r\n",
        b"GET /page/1 HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n",
        b"GET /page/1 HTTP/1.1\r\nHost: a@b\r\n\r\n",
        b"GET /page/1 HTTP/1.1\r\nHost: b/x\r\n\r\n",
        b"GET /page/1 HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /page/1 HTTP/1.1\r\nHost: a:abc\r\n\r\n",
        b"GET /page/1 HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET /page/1 HTTP/1.0\r\nHost: a@b\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"DELETE * HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ];
    for head in heads {
        let what = String::from_utf8_lossy(head);
        let reply = raw(proxy.addr(), head).await;
        let status_line = reply.lines().next().unwrap_or_default();
        assert!(status_line.ends_with(" 400 Bad Request"), "{what}: {reply}");
        assert!(reply.contains("detail=bad-host"), "{what}: {reply}");
    }
    // OPTIONS * asks about the server the client talks to: the proxy answers it.
    let reply = raw(
        proxy.addr(),
        b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(origin.count(), 0, "{:?}", origin.seen());
    proxy.shutdown().await;
}

/// Sends one HTTP/2 request (prior knowledge) and returns its status, or the stream error.
async fn h2_status(addr: SocketAddr, request: http::Request<()>) -> Result<u16, h2::Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await?;
    let (response, _) = client.send_request(request, true)?;
    Ok(response.await?.status().as_u16())
}

#[tokio::test]
async fn on_http2_the_authority_is_authority_and_must_be_clean() {
    let redis = RedisServer::start();
    let origin = reflecting_origin().await;
    let proxy = proxy_for(origin.addr(), &redis, "").await;
    let addr = proxy.addr();

    let userinfo = http::Request::get("http://user@shop.example/page/1")
        .body(())
        .unwrap();
    let conflicting = http::Request::get("http://shop.example/page/1")
        .header("host", "evil.example")
        .body(())
        .unwrap();
    let mut asterisk = http::Request::get("http://shop.example/").body(()).unwrap();
    *asterisk.uri_mut() = http::Uri::from_parts({
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some("shop.example".parse().unwrap());
        parts.path_and_query = Some("*".parse().unwrap());
        parts
    })
    .unwrap();
    for (what, request) in [
        ("userinfo", userinfo),
        ("conflicting Host", conflicting),
        (":path *", asterisk),
    ] {
        let status = h2_status(addr, request).await.expect("an HTTP/2 response");
        assert_eq!(status, 400, "{what}");
    }
    assert_eq!(origin.count(), 0, "{:?}", origin.seen());

    // :authority is the authority: it reaches the origin as Host and keys the entry.
    let ok = http::Request::get("http://Shop.Example/page/3")
        .body(())
        .unwrap();
    assert_eq!(h2_status(addr, ok).await.unwrap(), 200);
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get_all("host").iter().count(), 1);
    assert_eq!(seen[0].headers["host"], "shop.example");
    let over_h1 = get(addr, "/page/3", &[("host", "shop.example")]).await;
    assert!(over_h1.hit(), "{}", over_h1.cache_status());
    proxy.shutdown().await;
}

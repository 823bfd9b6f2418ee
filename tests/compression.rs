//! Compression: text bodies are stored gzip-compressed once, at the fill; a client that
//! accepts gzip gets the stored bytes, any other the origin's bytes decoded; the origin's
//! own gzip is stored as it came and never compressed twice; `no-transform`, images and
//! routes with `compress = false` are left alone; ranges, validators and HEAD describe the
//! form each client gets; and no `Accept-Encoding` an attacker sends changes what anyone
//! else gets. Real Redis, real origins (hyper and a raw socket), the real proxy.

mod raw_origin;
mod support;

use bytes::Bytes;
use cachalot::Policy;
use flate2::read::GzDecoder;
use http::Method;
use raw_origin::RawOrigin;
use std::io::{Read, Write};
use support::{Got, Reply, Stack, get, raw, send};

const ROUTES: &str = r#"
[[route]]
name = "doc"
match = "GET /doc/{id}"
ttl = "10m"
key = "doc:{id}"

[[route]]
name = "plain"
match = "GET /plain/{id}"
ttl = "10m"
key = "plain:{id}"
compress = false
"#;

/// A JSON document of `records` records with varied values (names, emails, numbers, dates,
/// flags), the same every time: what an API's list endpoint sends.
fn json_document(records: usize) -> Bytes {
    const FIRST: [&str; 8] = [
        "alice", "bob", "carol", "dmitri", "eve", "farah", "gustavo", "hana",
    ];
    const TITLES: [&str; 5] = [
        "Certified Data Steward",
        "Cloud Operations Associate",
        "Security Fundamentals",
        "Applied Statistics",
        "Network Design",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = String::from("{\"items\":[");
    for i in 0..records {
        if i > 0 {
            out.push(',');
        }
        let name = FIRST[(next() % 8) as usize];
        out.push_str(&format!(
            "{{\"id\":\"{:08x}\",\"holder\":\"{name} {}\",\"email\":\"{name}.{}@example.org\",\"title\":\"{}\",\"score\":{}.{:02},\"valid\":{},\"issued_at\":\"2026-{:02}-{:02}T{:02}:{:02}:00Z\"}}",
            next() as u32,
            next() % 1000,
            next() % 100,
            TITLES[(next() % 5) as usize],
            next() % 100,
            next() % 100,
            next() % 4 != 0,
            next() % 12 + 1,
            next() % 28 + 1,
            next() % 24,
            next() % 60,
        ));
    }
    out.push_str("]}");
    Bytes::from(out)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a valid gzip stream");
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Checks that `got` is the gzip form of `original`: decoded by a real decompressor, equal.
fn assert_gzip_of(got: &Got, original: &[u8]) {
    assert_eq!(got.header("content-encoding"), "gzip", "{:?}", got.headers);
    assert_eq!(got.header("content-length"), got.body.len().to_string());
    assert!(got.body.len() < original.len() / 2, "{}", got.body.len());
    assert_eq!(gunzip(&got.body), original);
}

fn assert_identity_of(got: &Got, original: &[u8]) {
    assert!(
        got.headers.get("content-encoding").is_none(),
        "{:?}",
        got.headers
    );
    assert_eq!(got.header("content-length"), original.len().to_string());
    assert_eq!(got.body, original);
}

const GZIP: (&str, &str) = ("accept-encoding", "gzip, deflate, br");

/// A stack on [`ROUTES`] whose origin answers every request with `document`, tagged with
/// `etag` when given.
async fn serving(document: &Bytes, etag: Option<&'static str>) -> Stack {
    let body = document.clone();
    Stack::builder(ROUTES)
        .start_with(move |_, _| {
            let reply = Reply::ok(body.clone());
            match etag {
                Some(tag) => reply.header("etag", tag),
                None => reply,
            }
        })
        .await
}

#[tokio::test]
async fn stored_gzip_goes_to_gzip_clients_and_the_origin_bytes_to_the_others() {
    let document = json_document(100);
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = serving(&document, None).await;

    let miss = get(proxy.addr(), "/doc/1", &[GZIP]).await;
    assert!(miss.stored(), "{}", miss.cache_status());
    assert_gzip_of(&miss, &document);
    assert_eq!(miss.header("vary"), "accept-encoding");
    // The fill asked the origin for the identity form, whatever the client accepts.
    assert_eq!(origin.seen()[0].headers["accept-encoding"], "identity");

    let hit = get(proxy.addr(), "/doc/1", &[GZIP]).await;
    assert!(hit.hit(), "{}", hit.cache_status());
    assert_gzip_of(&hit, &document);
    assert_eq!(
        hit.body, miss.body,
        "the stored bytes, not compressed again"
    );

    let identity = get(proxy.addr(), "/doc/1", &[]).await;
    assert!(identity.hit());
    assert_identity_of(&identity, &document);
    assert_eq!(identity.header("vary"), "accept-encoding");
    assert_eq!(identity.header("content-type"), "application/json");
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn a_miss_for_a_client_without_accept_encoding_is_identity_too() {
    let document = json_document(40);
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = serving(&document, None).await;
    let miss = get(proxy.addr(), "/doc/1", &[]).await;
    assert!(miss.stored(), "{}", miss.cache_status());
    assert_identity_of(&miss, &document);
    let hit = get(proxy.addr(), "/doc/1", &[("accept-encoding", "gzip")]).await;
    assert!(hit.hit(), "{}", hit.cache_status());
    assert_gzip_of(&hit, &document);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn redis_holds_the_compressed_entry() {
    let document = json_document(200);
    assert!(document.len() > 30_000, "{}", document.len());
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = serving(&document, None).await;
    for path in ["/doc/1", "/plain/1"] {
        assert!(get(proxy.addr(), path, &[]).await.stored());
    }
    let usage = |key: &str| -> u64 {
        let reply = redis
            .command(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
            .unwrap();
        reply.trim().trim_start_matches(':').parse().unwrap()
    };
    let compressed = usage("cachalot:{doc:1}");
    let plain = usage("cachalot:{plain:1}");
    assert!(plain > document.len() as u64, "{plain}");
    assert!(
        compressed * 100 <= plain * 30,
        "compressed {compressed} bytes, plain {plain}"
    );
    // And the plain route's entry still serves the origin's bytes to a gzip client.
    let hit = get(proxy.addr(), "/plain/1", &[GZIP]).await;
    assert!(hit.hit());
    assert_identity_of(&hit, &document);
    assert!(hit.headers.get("vary").is_none());
}

#[tokio::test]
async fn accept_encoding_is_read_as_rfc_9110_says() {
    let document = json_document(40);
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = serving(&document, None).await;
    assert!(get(proxy.addr(), "/doc/1", &[]).await.stored());
    for value in [
        "gzip",
        "GZIP",
        "x-gzip",
        "*",
        "br;q=1.0, gzip;q=0.5",
        "identity;q=0, gzip",
    ] {
        let got = get(proxy.addr(), "/doc/1", &[("accept-encoding", value)]).await;
        assert_eq!(got.status, 200, "{value}");
        assert_gzip_of(&got, &document);
    }
    for value in [
        "",
        "identity",
        "br, zstd",
        "gzip;q=0",
        "*, gzip;q=0",
        "gzip;q=0.5, identity",
        "gzip;q=2",
        "gzip;q=abc",
        "gz ip",
    ] {
        let got = get(proxy.addr(), "/doc/1", &[("accept-encoding", value)]).await;
        assert_eq!(got.status, 200, "{value}");
        assert_identity_of(&got, &document);
    }
    // Neither gzip nor identity acceptable: 406, and nothing about the entry changes.
    for value in ["identity;q=0", "*;q=0", "br, identity;q=0"] {
        let got = get(proxy.addr(), "/doc/1", &[("accept-encoding", value)]).await;
        assert_eq!(got.status, 406, "{value}");
        assert_eq!(got.header("vary"), "accept-encoding");
        assert!(got.hit(), "{}", got.cache_status());
    }
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn ranges_are_answered_over_the_identity_form() {
    let document = json_document(40);
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = serving(&document, Some("\"v1\"")).await;
    assert!(get(proxy.addr(), "/doc/1", &[]).await.stored());
    let len = document.len();
    for accept in [GZIP, ("accept-encoding", "identity")] {
        let part = get(proxy.addr(), "/doc/1", &[accept, ("range", "bytes=10-29")]).await;
        assert_eq!(part.status, 206);
        assert!(part.headers.get("content-encoding").is_none());
        assert_eq!(part.header("content-range"), format!("bytes 10-29/{len}"));
        assert_eq!(part.header("content-length"), "20");
        assert_eq!(part.body, document.slice(10..30));
        assert_eq!(part.header("etag"), "\"v1\"");
    }
    // If-Range with the identity form's tag holds; the gzip form's does not (a client that
    // holds gzip bytes cannot resume them with identity bytes): the whole gzip response.
    let resumed = get(
        proxy.addr(),
        "/doc/1",
        &[GZIP, ("range", "bytes=-5"), ("if-range", "\"v1\"")],
    )
    .await;
    assert_eq!(resumed.status, 206);
    assert_eq!(resumed.body, document.slice(len - 5..));
    let whole = get(
        proxy.addr(),
        "/doc/1",
        &[GZIP, ("range", "bytes=-5"), ("if-range", "\"v1-gzip\"")],
    )
    .await;
    assert_eq!(whole.status, 200);
    assert_gzip_of(&whole, &document);
    let beyond = get(proxy.addr(), "/doc/1", &[GZIP, ("range", "bytes=999999-")]).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), format!("bytes */{len}"));
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn each_form_has_its_own_etag_and_if_none_match_compares_with_it() {
    let document = json_document(40);
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = serving(&document, Some("\"v1\"")).await;
    let coded = get(proxy.addr(), "/doc/1", &[GZIP]).await;
    assert_eq!(coded.header("etag"), "\"v1-gzip\"");
    let identity = get(proxy.addr(), "/doc/1", &[]).await;
    assert_eq!(identity.header("etag"), "\"v1\"");

    let held = get(
        proxy.addr(),
        "/doc/1",
        &[GZIP, ("if-none-match", "\"v1-gzip\"")],
    )
    .await;
    assert_eq!(held.status, 304);
    assert_eq!(held.header("etag"), "\"v1-gzip\"");
    assert_eq!(held.header("vary"), "accept-encoding");
    assert!(held.body.is_empty());
    // The identity form's tag does not name the gzip bytes this client would get.
    let other = get(proxy.addr(), "/doc/1", &[GZIP, ("if-none-match", "\"v1\"")]).await;
    assert_eq!(other.status, 200);
    assert_gzip_of(&other, &document);
    let plain_held = get(proxy.addr(), "/doc/1", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(plain_held.status, 304);
    assert_eq!(plain_held.header("etag"), "\"v1\"");
    let plain_other = get(proxy.addr(), "/doc/1", &[("if-none-match", "\"v1-gzip\"")]).await;
    assert_eq!(plain_other.status, 200);
    assert_identity_of(&plain_other, &document);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn head_gets_the_head_get_would() {
    let document = json_document(40);
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = serving(&document, None).await;
    let coded = get(proxy.addr(), "/doc/1", &[GZIP]).await;
    let head = send(proxy.addr(), Method::HEAD, "/doc/1", &[GZIP], Bytes::new()).await;
    assert!(head.hit());
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-encoding"), "gzip");
    assert_eq!(head.header("content-length"), coded.body.len().to_string());
    assert_eq!(head.header("vary"), "accept-encoding");
    let head = send(proxy.addr(), Method::HEAD, "/doc/1", &[], Bytes::new()).await;
    assert!(head.headers.get("content-encoding").is_none());
    assert_eq!(head.header("content-length"), document.len().to_string());
    assert_eq!(head.header("vary"), "accept-encoding");
}

#[tokio::test]
async fn the_origins_own_gzip_is_stored_as_it_came_and_decoded_for_others() {
    let document = json_document(40);
    let packed = Bytes::from(gzip(&document));
    let body = packed.clone();
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ROUTES)
        .start_with(move |_, _| {
            Reply::ok(body.clone())
                .header("content-encoding", "gzip")
                .header("vary", "Accept-Encoding")
                .header("etag", "\"o1\"")
        })
        .await;
    let identity = get(proxy.addr(), "/doc/1", &[]).await;
    assert!(identity.stored(), "{}", identity.cache_status());
    assert_identity_of(&identity, &document);
    assert_eq!(identity.header("etag"), "\"o1-identity\"");
    assert_eq!(identity.header("vary"), "Accept-Encoding");
    let coded = get(proxy.addr(), "/doc/1", &[GZIP]).await;
    assert!(coded.hit());
    // The origin's bytes exactly: never compressed a second time.
    assert_eq!(coded.body, packed);
    assert_eq!(coded.header("content-encoding"), "gzip");
    assert_eq!(coded.header("etag"), "\"o1\"");
    assert_eq!(origin.count(), 1);
}

/// Another origin implementation: a raw socket that spells the coding `GZip` and sends no
/// `Vary`, the way hand-rolled servers do.
#[tokio::test]
async fn an_odd_cased_coding_from_a_raw_origin_is_recognised() {
    let document = json_document(30);
    let packed = gzip(&document);
    let answer = packed.clone();
    let origin = RawOrigin::start(move |_| {
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: GZip\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        )
        .into_bytes();
        out.extend_from_slice(&answer);
        out
    })
    .await;
    let redis = support::RedisServer::start();
    let proxy = support::start_proxy_with(origin.addr(), &redis.url(), ROUTES).await;
    let identity = get(proxy.addr(), "/doc/1", &[]).await;
    assert!(identity.stored(), "{}", identity.cache_status());
    assert_identity_of(&identity, &document);
    let coded = get(proxy.addr(), "/doc/1", &[("accept-encoding", "x-gzip")]).await;
    assert_eq!(coded.body, packed);
    assert_eq!(coded.header("content-encoding"), "gzip");
    assert_eq!(origin.count_of("/doc/1"), 1);
}

#[tokio::test]
async fn an_origin_gzip_bomb_is_not_stored() {
    let bomb = Bytes::from(gzip(&vec![b' '; 2 << 20]));
    assert!(bomb.len() < 64 << 10);
    let body = bomb.clone();
    let routes = format!("{ROUTES}max_object_size = \"1MiB\"\n");
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(&routes)
        .start_with(move |_, _| Reply::ok(body.clone()).header("content-encoding", "gzip"))
        .await;
    let got = get(proxy.addr(), "/plain/1", &[]).await;
    assert!(
        got.cache_status().contains("detail=plain/too-large"),
        "{}",
        got.cache_status()
    );
    // Passed on as it came, once, to the client that asked.
    assert_eq!(got.body, bomb);
    assert_eq!(got.header("content-encoding"), "gzip");
    assert!(redis.entries().is_empty(), "{:?}", redis.entries());
}

#[tokio::test]
async fn no_transform_images_and_small_bodies_are_left_alone() {
    let document = json_document(40);
    let image = support::pattern(8192);
    let (json, png) = (document.clone(), image.clone());
    let Stack {
        redis: _redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::builder(ROUTES)
        .start_with(move |seen, _| match seen.target.as_str() {
            "/doc/no-transform" => {
                Reply::ok(json.clone()).header("cache-control", "public, no-transform")
            }
            "/doc/image" => Reply {
                headers: vec![("content-type".into(), "image/png".into())],
                ..Reply::ok(png.clone())
            },
            _ => Reply::ok("{\"small\":true}"),
        })
        .await;
    for (path, body) in [
        ("/doc/no-transform", document.clone()),
        ("/doc/image", image.clone()),
        ("/doc/small", Bytes::from_static(b"{\"small\":true}")),
    ] {
        assert!(get(proxy.addr(), path, &[GZIP]).await.stored(), "{path}");
        let hit = get(proxy.addr(), path, &[GZIP]).await;
        assert!(hit.hit(), "{path}");
        assert_identity_of(&hit, &body);
        assert!(hit.headers.get("vary").is_none(), "{path}");
    }
}

/// The attacker's odd `Accept-Encoding` values on the fill and on hits, over raw sockets;
/// after each, the victims (no `Accept-Encoding`, and gzip) get the same answers as before.
#[tokio::test]
async fn no_accept_encoding_poisons_the_entry() {
    let document = json_document(40);
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = serving(&document, Some("\"v1\"")).await;
    let attacks = [
        "gzip;q=0",
        "identity;q=0",
        "*;q=0",
        "garbage;;q=x, \u{7f}",
        "gzip, gzip;q=0",
        "x-gzip;q=0.001",
        "identity;q=0, *;q=0",
        "deflate",
        "",
    ];
    for attack in attacks {
        let request = format!(
            "GET /doc/1 HTTP/1.1\r\nHost: {}\r\nAccept-Encoding: {attack}\r\nConnection: close\r\n\r\n",
            support::HOST
        );
        let reply = raw(proxy.addr(), request.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 "), "{attack}: {reply}");
        let victim = get(proxy.addr(), "/doc/1", &[]).await;
        assert!(victim.hit(), "{attack}: {}", victim.cache_status());
        assert_identity_of(&victim, &document);
        assert_eq!(victim.header("etag"), "\"v1\"");
        let gzip_victim = get(proxy.addr(), "/doc/1", &[GZIP]).await;
        assert!(gzip_victim.hit());
        assert_gzip_of(&gzip_victim, &document);
        assert_eq!(gzip_victim.header("etag"), "\"v1-gzip\"");
    }
    assert_eq!(origin.count(), 1, "Accept-Encoding is not in the key");
    assert_eq!(redis.entries(), ["cachalot:{doc:1}"]);
}

#[test]
fn compression_settings_are_checked_with_file_line_and_field() {
    let error = |section: &str| {
        let text =
            format!("[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[compression]\n{section}\n");
        Policy::parse(&text, "p.toml").err().unwrap().to_string()
    };
    assert_eq!(
        error("coding = \"deflate\""),
        "p.toml:5:10: compression.coding: \"deflate\" is not a stored coding; valid: \"gzip\" (the default), \"br\", \"zstd\""
    );
    assert_eq!(
        error("level = 12"),
        "p.toml:5:9: compression.level: 12 is not a gzip level; valid: 1 to 9 (default 6)"
    );
    assert_eq!(
        error("types = [\"image/*\"]"),
        "p.toml:5:9: compression.types: \"image/*\" takes image/png, which is compressed already: compressing it again costs CPU and saves nothing"
    );
    assert!(error("types = [\"json\"]").contains("is not a media type pattern"));
    assert!(error("types = []").contains("enabled = false"));
    assert!(
        error("min_size = 0").starts_with("p.toml:5:12: compression.min_size: expected a size")
    );
    assert!(error("level = \"6\"").contains("compression.level"));
    assert!(error("gzip = true").contains("unknown field"));
    let route = "[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[[route]]\nmatch = \"GET /a\"\ncache = false\ncompress = false\n";
    assert_eq!(
        Policy::parse(route, "p.toml").err().unwrap().to_string(),
        "p.toml:7:12: route[0].compress: has no effect with cache = false"
    );
    let fine = "[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[compression]\ncoding = \"zstd\"\nlevel = 19\nmin_size = \"2KiB\"\ntypes = [\"application/json\", \"text/*\", \"+xml\"]\n";
    let policy = Policy::parse(fine, "p.toml").unwrap();
    assert_eq!(policy.compression.min_size, 2048);
    assert_eq!(policy.compression.level, 19);
}

/// Requests the cache does not handle are forwarded untouched both ways: the client's
/// `Accept-Encoding` reaches the origin, and the origin's body (compressed or not) comes back
/// as it was sent, with no `Vary` added.
#[tokio::test]
async fn passes_are_untouched() {
    let document = json_document(40);
    let packed = Bytes::from(gzip(&document));
    let (json, body) = (document.clone(), packed.clone());
    let routes = "[[route]]\nname = \"pass\"\nmatch = \"GET /pass/{id}\"\ncache = false\n";
    let Stack {
        redis,
        origin,
        proxy,
        ..
    } = Stack::builder(routes)
        .start_with(move |seen, _| match seen.target.as_str() {
            "/pass/gzip" => Reply::ok(body.clone()).header("content-encoding", "gzip"),
            _ => Reply::ok(json.clone()),
        })
        .await;
    let plain = get(proxy.addr(), "/pass/1", &[GZIP]).await;
    assert_identity_of(&plain, &document);
    assert!(plain.headers.get("vary").is_none());
    assert_eq!(origin.seen()[0].headers["accept-encoding"], GZIP.1);
    let coded = get(proxy.addr(), "/pass/gzip", &[]).await;
    assert_eq!(coded.body, packed);
    assert_eq!(coded.header("content-encoding"), "gzip");
    assert!(redis.entries().is_empty());
}

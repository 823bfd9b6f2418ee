//! Criterion benches for the pieces every cached request goes through, without I/O:
//!
//! - `route/*`: path normalisation, segment split and `RouteTable::find` on a ~20-route policy
//!   built by `Policy::parse` (as a real policy file is): the first route, a deep one, a
//!   catch-all near the end of the table, and a path that matches nothing (the whole table).
//! - `key/*`: `KeyTemplate::build` for a template key, a sorted query, and a default key.
//! - `entry/*`: `Entry::encode` and `Entry::decode` of a 1 KiB body with typical headers.
//!
//! `cargo bench --bench hot_path`; `cargo bench --bench hot_path -- --quick` for a short run.
//! Only public APIs are used (cachalot::{route, key, entry, path, Policy}).

use bytes::Bytes;
use cachalot::Policy;
use cachalot::policy::route::{Action, RouteTable};
use cachalot::store::entry::Entry;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use std::hint::black_box;

/// Twenty routes in the shapes real policies use: literals, `{param}`, Flask's `<int:…>`,
/// catch-alls, method lists, pass-through routes and one write route with invalidation.
const POLICY: &str = r#"
[origin]
url = "http://127.0.0.1:5000"

[[route]]
name = "credential"
match = "GET /api/credentials/{id}"
ttl = "10m"
key = "credential:{id}"
query = "ignore"
ignore_cookies = true

[[route]]
match = "POST /api/credentials/{id}/revoke"
invalidate = ["credential:{id}"]

[[route]]
name = "user-profile"
match = "GET /api/users/{user_id}/profile"
ttl = "1m"
key = "user:{user_id}:profile"

[[route]]
name = "user-avatar"
match = "GET /api/users/<int:user_id>/avatar"
ttl = "1h"

[[route]]
name = "user-posts"
match = "GET /api/users/{user_id}/posts"
ttl = "30s"
query = ["page", "per_page"]

[[route]]
name = "org-settings"
match = "GET /api/orgs/{org}/settings"
ttl = "5m"
key = "org:{org}:settings"
tags = ["org:{org}"]

[[route]]
match = "PUT|PATCH /api/orgs/{org}/settings"
invalidate = ["org:{org}:settings"]

[[route]]
name = "org-user"
match = "GET /api/orgs/{org}/users/{id}"
ttl = "5m"
tags = ["org:{org}"]

[[route]]
name = "org-members"
match = "GET /api/orgs/{org}/members"
ttl = "2m"

[[route]]
name = "stats"
match = "GET /api/stats"
ttl = "30s"
key = "stats"
query = "sorted"

[[route]]
name = "stats-detail"
match = "GET /api/stats/{period}"
ttl = "30s"

[[route]]
name = "product"
match = "GET /api/v2/products/<int:id>"
ttl = "10m"

[[route]]
name = "product-by-slug"
match = "GET /api/v2/products/{slug}"
ttl = "10m"

[[route]]
name = "product-reviews"
match = "GET /api/v2/products/{id}/reviews"
ttl = "2m"

[[route]]
name = "category"
match = "GET /api/v2/categories/{cat}/products"
ttl = "5m"

[[route]]
name = "search"
match = "GET /api/v2/search"
ttl = "20s"
query = ["q", "page"]

[[route]]
name = "file"
match = "GET /files/{org}/{*path}"
ttl = "1h"

[[route]]
name = "static"
match = "GET /static/{*path}"
ttl = "1d"

[[route]]
name = "item"
match = "GET /item/{id}"
ttl = "60s"
key = "item:{id}"

[[route]]
name = "auth"
match = "/api/auth/{*rest}"
cache = false
"#;

fn policy() -> Policy {
    Policy::parse(POLICY, "benches/hot_path.rs").expect("the bench policy is valid")
}

/// Normalise, split and find: what routing costs a request.
fn route_of<'r>(table: &'r RouteTable, method: &Method, path: &str) -> Option<&'r str> {
    let normal = cachalot::http::path::normalize(path).ok()?;
    let segments = cachalot::http::path::segments(&normal);
    table
        .find(method, &normal, &segments)
        .map(|m| m.route.pattern.as_str())
}

fn bench_route(c: &mut Criterion) {
    let policy = policy();
    let table = &policy.routes;
    assert!(table.len() >= 20, "{} routes", table.len());
    let get = Method::GET;
    // (bench name, path, the pattern of the route it must meet, or None)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("literal", "/api/stats", Some("/api/stats")),
        (
            "credential",
            "/api/credentials/abc123",
            Some("/api/credentials/{id}"),
        ),
        (
            "deep",
            "/api/orgs/acme/users/42",
            Some("/api/orgs/{org}/users/{id}"),
        ),
        (
            "int",
            "/api/v2/products/12345",
            Some("/api/v2/products/<int:id>"),
        ),
        (
            "catch_all",
            "/files/acme/reports/2026/q3.pdf",
            Some("/files/{org}/{*path}"),
        ),
        (
            "escaped",
            "/api/credentials/%61bc%2F1",
            Some("/api/credentials/{id}"),
        ),
        ("no_match", "/nothing/here/at/all", None),
    ];
    let mut group = c.benchmark_group("route");
    for (name, path, expected) in cases {
        assert_eq!(route_of(table, &get, path), *expected, "{path}");
        group.bench_function(*name, |b| {
            b.iter(|| route_of(table, black_box(&get), black_box(path)))
        });
    }
    // find alone, on a path already normalised and split.
    let segments = cachalot::http::path::segments("/api/orgs/acme/users/42");
    group.bench_function("find_only_deep", |b| {
        b.iter(|| {
            table
                .find(
                    black_box(&get),
                    black_box("/api/orgs/acme/users/42"),
                    black_box(&segments),
                )
                .is_some()
        })
    });
    group.finish();
}

fn bench_key(c: &mut Criterion) {
    let policy = policy();
    let table = &policy.routes;
    let get = Method::GET;
    // (bench name, path, query)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("template", "/api/credentials/abc123", Some("utm_source=qr")),
        ("template_no_query", "/item/hot-1", None),
        (
            "sorted_query",
            "/api/stats",
            Some("period=week&region=eu&b=2&a=1"),
        ),
        (
            "allow_list_query",
            "/api/v2/search",
            Some("q=shoes&page=3&utm=x&sort=price"),
        ),
        ("default_named", "/api/orgs/acme/users/42", None),
        (
            "default_catch_all",
            "/files/acme/reports/2026/q3 summary.pdf",
            None,
        ),
    ];
    let mut group = c.benchmark_group("key");
    for (name, path, query) in cases {
        let segments = cachalot::http::path::segments(path);
        let matched = table
            .find(&get, path, &segments)
            .expect("the bench paths match");
        let Action::Cache(rule) = &matched.route.action else {
            panic!("{path} is not a cached route");
        };
        let params = matched.params;
        group.bench_function(*name, |b| {
            b.iter(|| {
                rule.key.build(
                    black_box(&params),
                    black_box(path),
                    black_box(*query),
                    &rule.query,
                )
            })
        });
    }
    group.finish();
}

fn entry_1k() -> Entry {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1024"));
    headers.insert(
        header::DATE,
        HeaderValue::from_static("Thu, 26 Nov 2026 15:00:00 GMT"),
    );
    headers.insert(
        header::SERVER,
        HeaderValue::from_static("Werkzeug/3.0.1 Python/3.11.7"),
    );
    headers.insert(
        header::ETAG,
        HeaderValue::from_static("\"5d41402abc4b2a76b9719d911017c592\""),
    );
    headers.insert(
        "x-request-id",
        HeaderValue::from_static("8b0c7a3e-6a1f-4f7e-9b8e-1c2d3e4f5a6b"),
    );
    let body: Vec<u8> = (0..1024)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36])
        .collect();
    Entry {
        status: StatusCode::OK,
        headers,
        body: Bytes::from(body),
        coding: None,
        coded_by_origin: false,
        stored_at_ms: 1_795_000_000_000,
        fresh_until_ms: 1_795_000_600_000,
        initial_age_ms: 0,
        generation: 7,
        stale_while_revalidate_ms: 0,
        stale_if_error_ms: 0,
        forbids_stale: false,
        fetch_ms: 20,
        selecting: Vec::new(),
    }
}

fn bench_entry(c: &mut Criterion) {
    let entry = entry_1k();
    let raw = Bytes::from(entry.encode());
    let decoded = Entry::decode(raw.clone()).expect("round trip");
    assert_eq!(decoded.body, entry.body);
    assert_eq!(decoded.headers, entry.headers);
    let mut group = c.benchmark_group("entry");
    group.throughput(criterion::Throughput::Bytes(raw.len() as u64));
    group.bench_function("encode_1k", |b| b.iter(|| black_box(&entry).encode()));
    group.bench_function("decode_1k", |b| {
        b.iter(|| Entry::decode(black_box(raw.clone())).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, bench_route, bench_key, bench_entry);
criterion_main!(benches);

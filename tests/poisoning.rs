//! Poisoning and flooding: what one client sends can shape only the entry it is keyed to.
//!
//! - `per_user = true`: requests with `Authorization` are cached per credential, keyed on a
//!   hash of it (the credential itself is never in Redis), and never served to another
//!   credential or to an anonymous request;
//! - `vary = ["X-Forwarded-Host"]`: a header the origin reflects is part of the key and
//!   reaches the origin, so a planted value only ever lands in its own variant (without
//!   `vary` it is stripped; see `hygiene.rs`);
//! - `max_variants`: random query strings cannot add entries past the limit, and entries
//!   already stored (the hot ones) keep being served;
//! - a corrupt or truncated value in Redis is a miss, never served, and the fill overwrites it.

mod support;

use support::{Origin, Reply, Stack, get};

#[tokio::test]
async fn per_user_entries_are_keyed_on_a_hash_of_the_credential() {
    let origin = Origin::start(|seen, n| {
        let who = seen
            .headers
            .get("authorization")
            .map_or("anonymous", |v| v.to_str().unwrap());
        Reply::ok(format!("profile for {who} n={n}"))
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
name = "me"
match = "GET /api/me"
ttl = "1m"
per_user = true
"#,
    )
    .origin(origin)
    .start()
    .await;
    let alice = [("authorization", "Bearer alice-secret-token")];
    let bob = [("authorization", "Bearer bob-secret-token")];

    let first = get(proxy.addr(), "/api/me", &alice).await;
    assert!(first.stored(), "{}", first.cache_status());
    assert_eq!(first.text(), "profile for Bearer alice-secret-token n=1");
    let again = get(proxy.addr(), "/api/me", &alice).await;
    assert!(again.hit());
    assert_eq!(again.body, first.body);

    // Another credential and no credential each get their own entry, never Alice's.
    let for_bob = get(proxy.addr(), "/api/me", &bob).await;
    assert_eq!(for_bob.text(), "profile for Bearer bob-secret-token n=2");
    let anonymous = get(proxy.addr(), "/api/me", &[]).await;
    assert_eq!(anonymous.text(), "profile for anonymous n=3");
    assert_eq!(origin.count(), 3);

    let keys = redis.entries();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.contains(&"cachalot:{me}".to_string()), "{keys:?}");
    for key in &keys {
        assert!(!key.contains("secret"), "a credential is readable in {key}");
    }
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("cachalot:{me}?#user="))
            .count(),
        2,
        "{keys:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_varied_header_keys_its_own_entry_and_cannot_poison_others() {
    // Like a Flask app building absolute links from X-Forwarded-Host.
    let origin = Origin::start(|seen, _| {
        let host = seen
            .headers
            .get("x-forwarded-host")
            .map_or("api.example", |v| v.to_str().unwrap());
        Reply::ok(format!("next: https://{host}/api/page?p=2")).header("vary", "X-Forwarded-Host")
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
name = "page"
match = "GET /api/page"
ttl = "1m"
vary = ["X-Forwarded-Host"]
"#,
    )
    .origin(origin)
    .start()
    .await;
    let planted = get(
        proxy.addr(),
        "/api/page",
        &[("x-forwarded-host", "evil.example")],
    )
    .await;
    assert!(planted.stored(), "{}", planted.cache_status());
    assert!(planted.text().contains("evil.example"));
    assert_eq!(origin.seen()[0].headers["x-forwarded-host"], "evil.example");

    // Everyone else gets the entry for their own (absent) header.
    for _ in 0..2 {
        let honest = get(proxy.addr(), "/api/page", &[]).await;
        assert_eq!(honest.text(), "next: https://api.example/api/page?p=2");
    }
    let again = get(
        proxy.addr(),
        "/api/page",
        &[("x-forwarded-host", "evil.example")],
    )
    .await;
    assert!(again.hit());
    assert_eq!(origin.count(), 2);
    let keys = redis.entries();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("evil")), "{keys:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn random_query_strings_stop_at_max_variants_and_hot_entries_stay() {
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::start(
        r#"
[[route]]
name = "search"
match = "GET /api/search"
ttl = "1m"
max_variants = 3
"#,
    )
    .await;
    let hot = get(proxy.addr(), "/api/search?q=hot", &[]).await;
    assert!(hot.stored());
    for i in 0..2 {
        assert!(
            get(proxy.addr(), &format!("/api/search?q={i}"), &[])
                .await
                .stored()
        );
    }
    // A flood of fresh query strings: answered, never stored.
    for i in 0..20 {
        let busted = get(proxy.addr(), &format!("/api/search?cb={i}"), &[]).await;
        assert_eq!(busted.status, 200);
        assert!(!busted.stored(), "{}", busted.cache_status());
        assert!(
            busted.cache_status().contains("too-many-variants"),
            "{}",
            busted.cache_status()
        );
    }
    // The hot entry was not pushed out; the base key itself is not a variant.
    let still = get(proxy.addr(), "/api/search?q=hot", &[]).await;
    assert!(still.hit());
    assert_eq!(still.body, hot.body);
    assert!(get(proxy.addr(), "/api/search", &[]).await.stored());
    assert_eq!(redis.entries().len(), 4, "{:?}", redis.entries());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_or_foreign_value_is_a_miss_and_is_overwritten() {
    let Stack {
        redis,
        origin: _origin,
        proxy,
        ..
    } = Stack::start(
        r#"
[[route]]
name = "item"
match = "GET /api/items/{id}"
ttl = "1m"
"#,
    )
    .await;
    let good = get(proxy.addr(), "/api/items/1", &[]).await;
    assert!(good.stored());
    // Our envelope's magic with a broken payload, a truncated one, and someone else's value.
    for (n, value) in ["CLT\u{2}\u{5}\u{ff}garbage", "CLT\u{2}", "{\"json\": true}"]
        .into_iter()
        .enumerate()
    {
        redis
            .command(&["SET", "cachalot:{item:1}", value])
            .expect("SET");
        let got = get(proxy.addr(), "/api/items/1", &[]).await;
        assert_eq!(got.status, 200);
        assert!(
            got.cache_status().contains("fwd=uri-miss"),
            "{}",
            got.cache_status()
        );
        assert!(got.stored(), "{}", got.cache_status());
        assert_eq!(
            got.text(),
            format!(r#"{{"target":"/api/items/1","n":{}}}"#, n + 2)
        );
        // Overwritten: the next request is a hit on the new entry.
        let hit = get(proxy.addr(), "/api/items/1", &[]).await;
        assert!(hit.hit());
        assert_eq!(hit.body, got.body);
    }
    proxy.shutdown().await;
}

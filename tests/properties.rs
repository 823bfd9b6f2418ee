//! Property tests (proptest; `cargo fuzz` needs nightly) over the parts that read untrusted
//! input: the policy parser, the path normaliser and router, the key builder and the
//! stored-entry decoder. Each property runs a fixed number of cases (`CASES`, a few seconds
//! in CI); `PROPTEST_CASES=100000 cargo nextest run --test properties` runs them longer.
//!
//! The promises:
//! - the policy parser never panics, and every error names a line inside the file;
//! - a normalised path is absolute, has no empty or dot segments, no encoded `/` and no
//!   lower-case escapes, and normalising it again changes nothing; the router never panics
//!   and its parameters are pieces of that path;
//! - a key never holds a raw glob, brace, space, control character or `#`, always starts
//!   with the route's own prefix, and two different parameter values never share a key;
//! - decoding any bytes never panics; a truncated entry never decodes; an entry decodes to
//!   what was encoded.

use bytes::Bytes;
use cachalot::Policy;
use cachalot::http::path;
use cachalot::policy::key::{KeyTemplate, QueryRule};
use cachalot::store::entry::Entry;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use proptest::prelude::*;

const CASES: u32 = 1000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CASES),
        // Failures are reported with their minimal input; nothing is written to the repo.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const POLICY: &str = r#"
[origin]
url = "http://127.0.0.1:5000"

[[route]]
name = "static"
match = "GET /static/{*file}"
ttl = "10m"

[[route]]
name = "user"
match = "GET /api/users/<int:id>"
ttl = "1m"

[[route]]
name = "credential"
match = "GET /api/credentials/{id}"
ttl = "10m"
key = "credential:{id}"

[[route]]
match = "/api/users/<int:id>/profile"
cache = false
"#;

/// Path-like strings: the characters that matter to normalisation, often.
fn paths() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just(";".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%5c".to_string()),
        Just("%00".to_string()),
        Just("%41".to_string()),
        Just("%3a".to_string()),
        Just("%".to_string()),
        "[a-zA-Z0-9_~-]{1,4}",
        "%[0-9a-fA-F]{2}",
        "[!$&'()*+,:=@]{1,2}",
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| format!("/{}", pieces.concat()))
}

/// Text shaped like TOML policy lines, mixed with noise.
fn policy_texts() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("[origin]".to_string()),
        Just("url = \"http://127.0.0.1:5000\"".to_string()),
        Just("[[route]]".to_string()),
        Just("[limits]".to_string()),
        Just("[listen]".to_string()),
        "match = \"(GET |POST |GET\\|HEAD )?/[a-z{}<>:*/]{0,20}\"",
        "ttl = \"[0-9]{0,3}(ms|s|m|h|x)?\"",
        "key = \"[a-z:{}*]{0,12}\"",
        "query = (\"sorted\"|\"ignore\"|\\[\"[a-z]{1,3}\"\\]|1)",
        "vary = \\[\"[A-Za-z -]{0,10}\"\\]",
        "(per_user|cache|l1|ignore_cookies) = (true|false|1)",
        "(max_variants|max_headers|max_connections) = -?[0-9]{0,7}",
        "(max_body|max_object_size) = \"[0-9]{0,4}(KiB|MiB|xb)?\"",
        "name = \"[a-z0-9_-]{0,8}\"",
        "[ -~]{0,30}",
    ];
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_policy_parser_never_panics_and_errors_point_into_the_file(text in policy_texts()) {
        if let Err(e) = Policy::parse(&text, "fuzz.toml") {
            if let Some((line, _)) = e.position {
                prop_assert!(line >= 1 && line <= text.lines().count().max(1), "{e}");
            }
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn arbitrary_bytes_as_a_policy_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Policy::parse(&String::from_utf8_lossy(&bytes), "fuzz.toml");
    }

    #[test]
    fn normalised_paths_are_canonical_and_stable(raw in paths()) {
        let Ok(normal) = path::normalize(&raw) else {
            return Ok(());
        };
        prop_assert!(normal.starts_with('/'), "{raw} -> {normal}");
        prop_assert!(!normal.contains("//"), "{raw} -> {normal}");
        for segment in path::segments(&normal) {
            let name = segment.split(';').next().unwrap_or_default();
            prop_assert!(name != "." && name != "..", "{raw} -> {normal}");
        }
        let upper = normal.to_ascii_uppercase();
        prop_assert!(!upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%2E"));
        // Escapes are upper-case hex.
        let bytes = normal.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'%' && let Some(hex) = bytes.get(i + 1..i + 3)
                && hex.iter().all(u8::is_ascii_hexdigit) {
                prop_assert!(!hex.iter().any(u8::is_ascii_lowercase), "{normal}");
            }
        }
        let again = path::normalize(&normal).expect("a normalised path is accepted");
        prop_assert_eq!(&again, &normal);
    }

    #[test]
    fn routing_never_panics_and_params_come_from_the_path(raw in paths()) {
        let policy = Policy::parse(POLICY, "p.toml").expect("valid");
        let Ok(normal) = path::normalize(&raw) else {
            return Ok(());
        };
        let segments = path::segments(&normal);
        for method in [Method::GET, Method::HEAD, Method::POST] {
            if let Some(matched) = policy.routes.find(&method, &normal, &segments) {
                // Typed values are canonical: they come from the canonical path.
                let canonical = matched
                    .route
                    .pattern
                    .canonical_path(&segments, &matched.params)
                    .unwrap_or_else(|| normal.to_string());
                for (_, value) in &matched.params {
                    prop_assert!(canonical.contains(value.as_ref()), "{value} not in {canonical}");
                    prop_assert!(!value.is_empty());
                }
            }
        }
    }

    #[test]
    fn keys_stay_in_their_namespace_and_never_collide(
        a in "\\PC{0,12}",
        b in "\\PC{0,12}",
        query in prop::option::of("[a-z=&%*{}: ]{0,16}"),
    ) {
        let template = KeyTemplate::parse("credential:{id}", &["id"]).expect("valid");
        let key_a = template.build(&[("id", a.as_str())], "/", query.as_deref(), &QueryRule::Sorted);
        prop_assert!(key_a.starts_with("credential:"), "{key_a}");
        for bad in ['*', '[', ']', '{', '}', ' ', '\n', '\r', '#', '\0'] {
            prop_assert!(!key_a.contains(bad), "{bad:?} in {key_a}");
        }
        prop_assert!(key_a.is_ascii(), "{key_a}");
        // Without escapes in the input, different values always give different keys
        // (with escapes, `a%62c` and `abc` are one resource and share one on purpose).
        if a != b && !a.contains('%') && !b.contains('%') {
            let key_b = template.build(&[("id", b.as_str())], "/", query.as_deref(), &QueryRule::Sorted);
            prop_assert_ne!(key_a, key_b);
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Entry::decode(Bytes::from(bytes.clone()));
        let mut framed = b"CLT\x01".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = Entry::decode(Bytes::from(framed));
    }

    #[test]
    fn entries_round_trip_and_truncations_never_decode(
        status in 200u16..600,
        body in prop::collection::vec(any::<u8>(), 0..256),
        values in prop::collection::vec("[ -~]{0,20}", 0..5),
        times in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let mut headers = HeaderMap::new();
        for (i, value) in values.iter().enumerate() {
            headers.append(
                HeaderName::from_bytes(format!("x-h{}", i % 3).as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let entry = Entry {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body),
            coding: (status % 3 == 0).then_some(cachalot::http::coding::Coding::Gzip),
            coded_by_origin: status % 5 == 0,
            stored_at_ms: times.0,
            fresh_until_ms: times.1,
            initial_age_ms: times.2,
            generation: times.3,
            stale_while_revalidate_ms: times.0 / 3,
            stale_if_error_ms: times.1 / 5,
            forbids_stale: status % 2 == 0,
            fetch_ms: times.2 / 7,
            selecting: values
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("x-h{i}"), (i % 2 == 0).then(|| v.clone())))
                .collect(),
        };
        let encoded = entry.encode();
        let decoded = Entry::decode(Bytes::from(encoded.clone())).expect("round trip");
        prop_assert_eq!(decoded.status, entry.status);
        prop_assert_eq!(&decoded.headers, &entry.headers);
        prop_assert_eq!(&decoded.body, &entry.body);
        prop_assert_eq!(decoded.coding, entry.coding);
        prop_assert_eq!(decoded.coded_by_origin, entry.coded_by_origin);
        prop_assert_eq!(decoded.fresh_until_ms, entry.fresh_until_ms);
        prop_assert_eq!(decoded.generation, entry.generation);
        prop_assert_eq!(&decoded.selecting, &entry.selecting);
        prop_assert_eq!(decoded.stale_if_error_ms, entry.stale_if_error_ms);

        let truncated = &encoded[..cut.index(encoded.len())];
        prop_assert!(Entry::decode(Bytes::copy_from_slice(truncated)).is_err());

        let mut flipped = encoded.clone();
        let at = flip.0.index(flipped.len());
        flipped[at] ^= flip.1.max(1);
        let _ = Entry::decode(Bytes::from(flipped));
    }
}

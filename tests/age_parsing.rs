//! How the origin's `Age` is read (RFC 9111 §5.1), case by case as the public HTTP cache test
//! suite names them (`age-parse-*`): with several values (one line or several) the first one
//! counts; a value that is not a non-negative integer is ignored; a parameter after the number
//! leaves the number in force; 2^31 and above is very old.
//!
//! A raw origin writes each `Age` exactly as given (a library would merge or reject lines);
//! each case asks twice and counts the origin's requests: 1 when the first answer was fresh
//! enough to store and reuse, 2 when it was already stale.

mod raw_origin;
mod support;

use raw_origin::{RawOrigin, ok};
use support::{RedisServer, get, start_proxy_with};

const ROUTES: &str = r#"
[[route]]
name = "age"
match = "GET /age/{case}"
ttl = "origin"
ttl_max = "1d"
"#;

/// Each case: the suite's test id, the `Age` lines, the response's `max-age`, and whether the
/// second request is a hit.
const CASES: &[(&str, &[&str], u32, bool)] = &[
    ("age-parse-nonnumeric", &["abc"], 3600, true),
    ("age-parse-negative", &["-7200"], 3600, true),
    ("age-parse-float", &["7200.0"], 3600, true),
    ("age-parse-prefix", &["0, 7200"], 3600, true),
    ("age-parse-prefix-twoline", &["0", "7200"], 3600, true),
    ("age-parse-dup-0", &["0, 0"], 3600, true),
    ("age-parse-dup-0-twoline", &["0", "0"], 3600, true),
    ("age-parse-dup-old", &["3600", "3600"], 10000, true),
    ("age-parse-suffix", &["7200, 0"], 3600, false),
    ("age-parse-suffix-twoline", &["7200", "0"], 3600, false),
    ("age-parse-parameter", &["7200;foo=bar"], 3600, false),
    (
        "age-parse-numeric-parameter",
        &["7200;foo=111"],
        3600,
        false,
    ),
    ("age-parse-large-minus-one", &["2147483647"], 3600, false),
    ("age-parse-large", &["2147483648"], 3600, false),
    ("age-parse-larger", &["2147483649"], 3600, false),
];

async fn origin() -> RawOrigin {
    RawOrigin::start(|target| {
        let id = target.rsplit('/').next().unwrap_or_default();
        let (_, ages, max_age, _) = CASES.iter().find(|case| case.0 == id).expect("a case");
        let date = format!(
            "Date: {}",
            httpdate::fmt_http_date(std::time::SystemTime::now())
        );
        let cc = format!("Cache-Control: max-age={max_age}");
        let mut lines: Vec<Vec<u8>> = vec![date.into_bytes(), cc.into_bytes()];
        lines.extend(ages.iter().map(|age| format!("Age: {age}").into_bytes()));
        let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        ok(&lines, id)
    })
    .await
}

/// Runs the cases named `ids`, each on its own path, against one proxy.
async fn check(ids: &[&str]) {
    let redis = RedisServer::start();
    let origin = origin().await;
    let proxy = start_proxy_with(origin.addr(), &redis.url(), ROUTES).await;
    for id in ids {
        let (_, ages, _, reused) = CASES.iter().find(|case| case.0 == *id).expect("a case");
        let path = format!("/age/{id}");
        let first = get(proxy.addr(), &path, &[]).await;
        assert_eq!(first.text(), *id);
        let second = get(proxy.addr(), &path, &[]).await;
        assert_eq!(
            second.hit(),
            *reused,
            "{id} (Age {ages:?}): {}",
            second.cache_status()
        );
        let expected = if *reused { 1 } else { 2 };
        assert_eq!(origin.count_of(&path), expected, "{id} (Age {ages:?})");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_age_that_is_not_a_non_negative_integer_is_ignored() {
    check(&[
        "age-parse-nonnumeric",
        "age-parse-negative",
        "age-parse-float",
    ])
    .await;
}

#[tokio::test]
async fn of_several_ages_the_first_counts() {
    check(&[
        "age-parse-prefix",
        "age-parse-prefix-twoline",
        "age-parse-dup-0",
        "age-parse-dup-0-twoline",
        "age-parse-dup-old",
        "age-parse-suffix",
        "age-parse-suffix-twoline",
    ])
    .await;
}

#[tokio::test]
async fn a_parameter_after_the_age_leaves_the_number_in_force() {
    check(&["age-parse-parameter", "age-parse-numeric-parameter"]).await;
}

#[tokio::test]
async fn ages_of_two_to_the_31_and_above_are_very_old() {
    check(&[
        "age-parse-large-minus-one",
        "age-parse-large",
        "age-parse-larger",
    ])
    .await;
}

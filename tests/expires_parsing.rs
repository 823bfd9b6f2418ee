//! How `Expires` is read, case by case as the public HTTP cache test suite names them
//! (`freshness-expires-*`): robustly, as RFC 9110 §5.6.7 encourages (names in any letter case,
//! the obsolete RFC 850 and asctime formats, a weekday that disagrees with the date), but an
//! `Expires` that is not a date in one of the three formats is no date, and the response is
//! already stale (RFC 9111 §5.3).
//!
//! Real origin (hyper: it sends the values as written), Redis and proxy; each case asks twice
//! and counts the origin's requests.

mod support;

use support::{Origin, Reply, Stack, get};

const ROUTES: &str = r#"
[[route]]
name = "expires"
match = "GET /expires/{case}"
ttl = "origin"
ttl_max = "1d"
"#;

/// Each case: the suite's test id, the `Expires` value, and whether the second request is a
/// hit.
const CASES: &[(&str, &str, bool)] = &[
    (
        "freshness-expires-32bit",
        "Tue, 19 Jan 2038 14:14:08 GMT",
        true,
    ),
    (
        "freshness-expires-far-future",
        "Sun, 21 Nov 2286 04:46:39 GMT",
        true,
    ),
    (
        "freshness-expires-rfc850",
        "Thursday, 18-Aug-50 02:01:18 GMT",
        true,
    ),
    // The suite's asctime date says Thursday; 8 August 2050 is a Monday.
    ("freshness-expires-ansi-c", "Thu Aug  8 02:01:18 2050", true),
    (
        "freshness-expires-wrong-case-weekday",
        "THU, 18 Aug 2050 02:01:18 GMT",
        true,
    ),
    (
        "freshness-expires-wrong-case-month",
        "Thu, 18 AUG 2050 02:01:18 GMT",
        true,
    ),
    (
        "freshness-expires-wrong-case-tz",
        "Thu, 18 Aug 2050 02:01:18 gMT",
        true,
    ),
    (
        "freshness-expires-invalid-utc",
        "Thu, 18 Aug 2050 02:01:18 UTC",
        false,
    ),
    (
        "freshness-expires-invalid-aest",
        "Thu, 18 Aug 2050 02:01:18 AEST",
        false,
    ),
    (
        "freshness-expires-invalid-2-digit-year",
        "Thu, 18 Aug 50 02:01:18 GMT",
        false,
    ),
    (
        "freshness-expires-invalid-no-comma",
        "Thu 18 Aug 2050 02:01:18 GMT",
        false,
    ),
    (
        "freshness-expires-invalid-multiple-spaces",
        "Thu, 18  Aug  2050 02:01:18 GMT",
        false,
    ),
    (
        "freshness-expires-invalid-date-dashes",
        "Thu, 18-Aug-2050 02:01:18 GMT",
        false,
    ),
    (
        "freshness-expires-invalid-time-periods",
        "Thu, 18 Aug 2050 02.01.18 GMT",
        false,
    ),
    (
        "freshness-expires-invalid-1-digit-hour",
        "Thu, 18 Aug 2050 2:01:18 GMT",
        false,
    ),
];

async fn check(ids: &[&str]) {
    let origin = Origin::start(|seen, n| {
        let id = seen.target.rsplit('/').next().unwrap_or_default();
        let (_, expires, _) = CASES.iter().find(|case| case.0 == id).expect("a case");
        Reply::ok(format!("{id} n={n}")).header("expires", expires)
    })
    .await;
    let Stack {
        redis: _redis,
        origin,
        proxy,
        ..
    } = Stack::builder(ROUTES).origin(origin).start().await;
    for id in ids {
        let (_, expires, reused) = CASES.iter().find(|case| case.0 == *id).expect("a case");
        let path = format!("/expires/{id}");
        get(proxy.addr(), &path, &[]).await;
        let second = get(proxy.addr(), &path, &[]).await;
        assert_eq!(
            second.hit(),
            *reused,
            "{id} (Expires: {expires}): {}",
            second.cache_status()
        );
        let expected = if *reused { 1 } else { 2 };
        assert_eq!(origin.count_of(&path), expected, "{id}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn expires_in_any_format_and_letter_case_is_a_date() {
    check(&[
        "freshness-expires-32bit",
        "freshness-expires-far-future",
        "freshness-expires-rfc850",
        "freshness-expires-ansi-c",
        "freshness-expires-wrong-case-weekday",
        "freshness-expires-wrong-case-month",
        "freshness-expires-wrong-case-tz",
    ])
    .await;
}

#[tokio::test]
async fn an_expires_that_is_no_date_means_already_stale() {
    check(&[
        "freshness-expires-invalid-utc",
        "freshness-expires-invalid-aest",
        "freshness-expires-invalid-2-digit-year",
        "freshness-expires-invalid-no-comma",
        "freshness-expires-invalid-multiple-spaces",
        "freshness-expires-invalid-date-dashes",
        "freshness-expires-invalid-time-periods",
        "freshness-expires-invalid-1-digit-hour",
    ])
    .await;
}

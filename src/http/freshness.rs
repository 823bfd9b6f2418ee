//! Freshness by RFC 9111: the `Cache-Control` directives of responses and requests, how long
//! an origin says a response stays fresh (§4.2.1), and how old a stored response is (§4.2.3).
//!
//! Routes with a fixed `ttl` decide freshness themselves (legacy origins send nothing useful);
//! routes with `ttl = "origin"` take it from here, within the route's `ttl_max`. Fields that
//! address this proxy alone (`CDN-Cache-Control`, `Cachalot-Cache-Control`) are read by
//! `targeted` and replace `Cache-Control` here.

use crate::http::targeted;
use http::{HeaderMap, StatusCode, header};
use std::time::Duration;

/// RFC 9111 §1.2.2: delta-seconds too large to represent are taken as 2^31.
pub const DELTA_MAX: u64 = 1 << 31;

/// The response header a surrogate (a reverse proxy in front of the origin) obeys first.
pub static SURROGATE_CONTROL: http::HeaderName = http::HeaderName::from_static("surrogate-control");

/// The request header a surrogate announces itself with, so that the origin can address
/// `Surrogate-Control` directives to it (`max-age=60;cachalot`).
pub static SURROGATE_CAPABILITY: http::HeaderName =
    http::HeaderName::from_static("surrogate-capability");

/// This proxy's device token in `Surrogate-Capability` and `Surrogate-Control`.
pub const SURROGATE_TOKEN: &str = "cachalot";

/// The `Cache-Control` directives the proxy acts on. A directive that appears twice counts
/// as its first occurrence; a numeric directive with an invalid value counts as 0, so the
/// response is stale rather than fresh for longer than its origin meant (§4.2.1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    /// Store only if the status code is one the cache understands (RFC 9111 §5.2.2.3).
    pub must_understand: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    /// Request only: `max-stale` (with no value: any staleness).
    pub max_stale: Option<Option<u64>>,
    /// Request only.
    pub min_fresh: Option<u64>,
    /// Request only.
    pub only_if_cached: bool,
}

impl Directives {
    /// Parses every `Cache-Control` line of `headers`. Unknown directives are ignored.
    pub fn parse(headers: &HeaderMap) -> Self {
        Self::parse_lines(
            headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    }

    /// A response's directives as a route that follows the origin reads them: the most
    /// specific field addressed to this proxy wins, and replaces the less specific ones
    /// (RFC 9213 §2.1): `Cachalot-Cache-Control`, then `Surrogate-Control` directives
    /// addressed to it (no target, or `;cachalot`; W3C Edge Architecture), then
    /// `CDN-Cache-Control`, then `Cache-Control`. `Surrogate-Control` keeps `Cache-Control`'s
    /// `private`, as it always has; the RFC 9213 fields replace `Cache-Control` whole, so a
    /// fresh `CDN-Cache-Control: max-age` is stored even with `Cache-Control: no-store` (the
    /// origin's word for browsers).
    pub fn for_proxy(headers: &HeaderMap) -> Self {
        targeted::directives(headers, &targeted::CACHALOT_CACHE_CONTROL)
            .or_else(|| Self::surrogate(headers))
            .or_else(|| targeted::directives(headers, &targeted::CDN_CACHE_CONTROL))
            .unwrap_or_else(|| Self::parse(headers))
    }

    /// A response's directives as a fixed-TTL route reads them: the policy decides freshness,
    /// so only what forbids storing counts, from `Cache-Control` and from every targeted field
    /// (a `private` or `no-store` addressed to this proxy is never overridden by the policy).
    pub fn for_fixed_ttl(headers: &HeaderMap) -> Self {
        let mut d = Self::parse(headers);
        let targeted = [
            &targeted::CACHALOT_CACHE_CONTROL,
            &targeted::CDN_CACHE_CONTROL,
        ]
        .into_iter()
        .filter_map(|name| targeted::directives(headers, name))
        .chain(Self::surrogate(headers));
        for t in targeted {
            d.no_store |= t.no_store;
            d.private |= t.private;
            d.no_cache |= t.no_cache;
        }
        d
    }

    /// `Surrogate-Control` directives addressed to this proxy, with `Cache-Control`'s
    /// `private`; `None` when there are none.
    fn surrogate(headers: &HeaderMap) -> Option<Self> {
        let mut ours = String::new();
        for line in headers.get_all(&SURROGATE_CONTROL) {
            let Ok(line) = line.to_str() else { continue };
            for item in line.split(',') {
                let (directive, target) = match item.split_once(';') {
                    Some((directive, target)) => (directive, Some(target.trim())),
                    None => (item, None),
                };
                if target.is_none_or(|t| t.eq_ignore_ascii_case(SURROGATE_TOKEN)) {
                    ours.push_str(directive);
                    ours.push(',');
                }
            }
        }
        let surrogate = Self::parse_lines([ours.as_str()]);
        if surrogate == Self::default() {
            return None;
        }
        Some(Self {
            private: Self::parse(headers).private,
            ..surrogate
        })
    }

    fn parse_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut d = Self::default();
        for line in lines {
            for (name, value) in split_directives(line) {
                let delta = || parse_delta(value);
                let first = |slot: &mut Option<u64>| {
                    if slot.is_none() {
                        *slot = Some(delta());
                    }
                };
                match name.to_ascii_lowercase().as_str() {
                    "max-age" => first(&mut d.max_age),
                    "s-maxage" => first(&mut d.s_maxage),
                    "stale-while-revalidate" => first(&mut d.stale_while_revalidate),
                    "stale-if-error" => first(&mut d.stale_if_error),
                    "min-fresh" => first(&mut d.min_fresh),
                    "max-stale" if d.max_stale.is_none() => {
                        d.max_stale = Some(value.map(|_| delta()));
                    }
                    // The qualified form (`no-cache="Set-Cookie"`) would let the rest of the
                    // response be reused; treating it as unqualified is the safe reading.
                    "no-cache" => d.no_cache = true,
                    "no-store" => d.no_store = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "must-understand" => d.must_understand = true,
                    "only-if-cached" => d.only_if_cached = true,
                    _ => {}
                }
            }
        }
        d
    }

    /// Whether a stale copy must never be served without asking the origin (§5.2.2.2,
    /// §5.2.2.8; `s-maxage` implies `proxy-revalidate`, §5.2.2.10).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.no_cache || self.s_maxage.is_some()
    }
}

/// `name[=value]` pairs of one header line; quoted values unquoted, commas inside quotes kept.
fn split_directives(line: &str) -> Vec<(&str, Option<&str>)> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let end = next_comma(rest);
        let item = rest[..end].trim();
        rest = rest.get(end + 1..).unwrap_or("");
        if item.is_empty() {
            continue;
        }
        match item.split_once('=') {
            Some((name, value)) => {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                out.push((name.trim(), Some(value)));
            }
            None => out.push((item, None)),
        }
    }
    out
}

/// The index of the first comma outside a quoted string (or the length).
fn next_comma(text: &str) -> usize {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return i,
            _ => {}
        }
    }
    text.len()
}

/// delta-seconds: digits only. Anything else (a sign, a fraction, no value) is 0.
fn parse_delta(value: Option<&str>) -> u64 {
    match value {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            v.parse::<u64>().unwrap_or(DELTA_MAX).min(DELTA_MAX)
        }
        _ => 0,
    }
}

/// Status codes RFC 9110 defines: what `must-understand` lets a cache store.
pub fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1; 206 left out:
/// the proxy never stores partial content).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The freshness lifetime the response states: `s-maxage`, else `max-age`, else `Expires`
/// minus `Date` (an `Expires` that is not a valid date means already expired). `None` when
/// it states none. `response_time_ms` stands in for a missing `Date`.
pub fn explicit_lifetime(
    headers: &HeaderMap,
    directives: &Directives,
    response_time_ms: u64,
) -> Option<Duration> {
    if let Some(seconds) = directives.s_maxage.or(directives.max_age) {
        return Some(Duration::from_secs(seconds));
    }
    let expires = headers.get(header::EXPIRES)?;
    let Some(expires) = http_date_ms(expires) else {
        return Some(Duration::ZERO);
    };
    let date = date_ms(headers).unwrap_or(response_time_ms);
    Some(Duration::from_millis(expires.saturating_sub(date)))
}

/// RFC 9111 §4.2.2: a tenth of the time since `Last-Modified`, for responses that state no
/// freshness. Only on routes that enable it.
pub fn heuristic_lifetime(headers: &HeaderMap, response_time_ms: u64) -> Option<Duration> {
    let modified = http_date_ms(headers.get(header::LAST_MODIFIED)?)?;
    let date = date_ms(headers).unwrap_or(response_time_ms);
    Some(Duration::from_millis(date.saturating_sub(modified) / 10))
}

/// RFC 9111 §4.2.3: the age a response already had when it arrived, from its `Age` and
/// `Date` and how long the request took.
pub fn corrected_initial_age(
    headers: &HeaderMap,
    request_time_ms: u64,
    response_time_ms: u64,
) -> Duration {
    let age_value = headers.get(header::AGE).and_then(age).unwrap_or(0);
    // `Date` has whole seconds: compare at that resolution, or every response would look up
    // to a second old on arrival.
    let apparent_ms = date_ms(headers).map_or(0, |date| {
        (response_time_ms / 1000 * 1000).saturating_sub(date)
    });
    let delay_ms = response_time_ms.saturating_sub(request_time_ms);
    Duration::from_millis(apparent_ms.max(age_value * 1000 + delay_ms))
}

/// The seconds an `Age` field states (RFC 9111 §5.1): of several values (a list, or several
/// lines) the first, since the rest were added by caches that could not know better; a
/// parameter after it (`7200;foo=bar`) leaves the number in force. Anything that is not a
/// non-negative integer (`abc`, `-7200`, `7200.0`) is no age at all and ignored: the apparent
/// age from `Date` still counts. Values too large to represent are 2^31, very old.
fn age(line: &http::HeaderValue) -> Option<u64> {
    let first = line.to_str().ok()?.split(',').next()?;
    let number = first.split(';').next()?.trim();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(number.parse::<u64>().unwrap_or(DELTA_MAX).min(DELTA_MAX))
}

/// Whether a `Cache-Control`, `Pragma` or `Surrogate-Control` line of the response cannot be
/// read: a byte outside visible ASCII (`ext="café"`), or a quoted string that never closes
/// (`x="a, private`). Skipping such a line could skip the `private` in it, so the response
/// is not stored (fail closed).
pub fn unreadable_directives(headers: &HeaderMap) -> bool {
    [&header::CACHE_CONTROL, &header::PRAGMA, &SURROGATE_CONTROL]
        .into_iter()
        .flat_map(|name| headers.get_all(name))
        .any(|line| line.to_str().map_or(true, |text| !quotes_closed(text)))
}

/// Whether every quoted string in `text` ends (a backslash escapes the next character).
fn quotes_closed(text: &str) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

fn date_ms(headers: &HeaderMap) -> Option<u64> {
    http_date_ms(headers.get(header::DATE)?)
}

/// An HTTP date in ms since the Unix epoch (dates before it count as the epoch).
fn http_date_ms(value: &http::HeaderValue) -> Option<u64> {
    let time = parse_http_date(value.to_str().ok()?)?;
    Some(
        time.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// An HTTP date in any of its three formats (RFC 9110 §5.6.7), read as robustly as that
/// section encourages: day, month and zone names in any letter case (`THU`, `AUG`, `gMT`),
/// and a weekday that disagrees with the date ignored (the date says which day it is).
/// Everything else must be exact: another zone (`UTC`), a two-digit year in the modern
/// format, a missing comma or an extra space is no date.
pub fn parse_http_date(text: &str) -> Option<std::time::SystemTime> {
    let text = text.trim();
    if let Ok(time) = httpdate::parse_http_date(text) {
        return Some(time);
    }
    let canonical = canonical_case(text);
    let weekday = canonical
        .bytes()
        .take_while(u8::is_ascii_alphabetic)
        .count();
    let rest = &canonical[weekday..];
    WEEKDAYS.iter().find_map(|day| {
        let day = if weekday > 3 { day } else { &day[..3] };
        httpdate::parse_http_date(&format!("{day}{rest}")).ok()
    })
}

/// `text` with each run of letters in the case HTTP dates spell names: `GMT`, else `Thu`.
fn canonical_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else {
            let mut letters = word.chars();
            out.extend(letters.next().map(|c| c.to_ascii_uppercase()));
            out.extend(letters.map(|c| c.to_ascii_lowercase()));
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// How a route decides how long a stored response is fresh.
#[derive(Debug, Clone, PartialEq)]
pub enum Ttl {
    /// `ttl = "5m"`: the policy decides; the origin's headers are not consulted.
    Fixed {
        ttl: Duration,
        /// `ttl_jitter`: each entry's lifetime is shortened by a random share up to this
        /// fraction, so keys filled together do not all expire together.
        jitter: f64,
    },
    /// `ttl = "origin"`: RFC 9111 freshness from the response, capped by `max`.
    Origin {
        max: Duration,
        /// For responses that state no freshness (`ttl_default`); none means not fresh.
        default: Option<Duration>,
        /// `ttl_heuristic = true`: RFC 9111 §4.2.2 heuristic freshness from `Last-Modified`.
        heuristic: bool,
        jitter: f64,
    },
}

/// `ttl = "origin"` with no `ttl_max`: a day, so that one wrong `max-age` cannot pin a
/// response for a year.
pub const DEFAULT_ORIGIN_TTL_MAX: Duration = Duration::from_secs(24 * 3600);

/// How long an entry with a validator is kept past its freshness, at least, so that a stale
/// copy can be revalidated with a 304 instead of fetched again.
const REVALIDATION_KEEP: Duration = Duration::from_secs(60);

impl Ttl {
    /// The freshness lifetime of a response, `None` when it has none (and may be stored only
    /// to be revalidated). `response_time_ms` stands in for a missing `Date`.
    pub fn lifetime(
        &self,
        headers: &HeaderMap,
        directives: &Directives,
        response_time_ms: u64,
    ) -> Option<Duration> {
        let (lifetime, jitter) = match self {
            Ttl::Fixed { ttl, jitter } => (Some(*ttl), *jitter),
            Ttl::Origin {
                max,
                default,
                heuristic,
                jitter,
            } => {
                let lifetime = explicit_lifetime(headers, directives, response_time_ms)
                    .or_else(|| {
                        heuristic
                            .then(|| heuristic_lifetime(headers, response_time_ms))
                            .flatten()
                    })
                    .or(*default)
                    .map(|l| l.min(*max));
                (lifetime, *jitter)
            }
        };
        lifetime.map(|l| l.mul_f64(1.0 - jitter * rand::random::<f64>()))
    }

    /// The longest a response can stay fresh on this route.
    pub fn longest(&self) -> Duration {
        match self {
            Ttl::Fixed { ttl, .. } => *ttl,
            Ttl::Origin { max, .. } => *max,
        }
    }

    pub fn is_origin(&self) -> bool {
        matches!(self, Ttl::Origin { .. })
    }
}

impl std::fmt::Display for Ttl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ttl::Fixed { ttl, .. } => write!(f, "{}", humantime::format_duration(*ttl)),
            Ttl::Origin { max, .. } => {
                write!(f, "origin (max {})", humantime::format_duration(*max))
            }
        }
    }
}

/// How long past its freshness Redis keeps an entry: the longer stale window, and for
/// entries with a validator, time to be revalidated.
pub fn keep_after_stale(stale_windows: Duration, lifetime: Duration, validators: bool) -> Duration {
    let revalidate = if validators {
        lifetime.max(REVALIDATION_KEEP)
    } else {
        Duration::ZERO
    };
    stale_windows.max(revalidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn parses_directives_with_quotes_case_and_duplicates() {
        let d = Directives::parse(&headers(&[
            ("cache-control", "Max-Age=60, no-cache=\"set-cookie, x\""),
            (
                "cache-control",
                "max-age=5, s-maxage=\"30\", stale-if-error=600",
            ),
        ]));
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert!(d.no_cache);
        assert_eq!(d.stale_if_error, Some(600));
        assert!(d.forbids_stale());
    }

    #[test]
    fn invalid_numbers_mean_stale_and_huge_ones_are_capped() {
        let d = Directives::parse(&headers(&[(
            "cache-control",
            "max-age=1.5, min-fresh=99999999999999999999",
        )]));
        assert_eq!(d.max_age, Some(0));
        assert_eq!(d.min_fresh, Some(DELTA_MAX));
        let stale = Directives::parse(&headers(&[("cache-control", "max-stale")]));
        assert_eq!(stale.max_stale, Some(None));
    }

    #[test]
    fn surrogate_control_for_us_replaces_cache_control() {
        let h = headers(&[
            ("cache-control", "no-store, private"),
            (
                "surrogate-control",
                "max-age=60;cachalot, no-store;other-cdn",
            ),
        ]);
        let d = Directives::for_proxy(&h);
        assert_eq!(d.max_age, Some(60));
        assert!(!d.no_store && d.private);
        let elsewhere = headers(&[
            ("cache-control", "max-age=5"),
            ("surrogate-control", "max-age=60;other-cdn"),
        ]);
        assert_eq!(Directives::for_proxy(&elsewhere).max_age, Some(5));
    }

    #[test]
    fn age_is_the_first_value_and_an_invalid_one_is_ignored() {
        let cases: [(&[(&'static str, &'static str)], u64); 12] = [
            (&[("age", "abc")], 0),
            (&[("age", "-7200")], 0),
            (&[("age", "7200.0")], 0),
            (&[("age", "")], 0),
            (&[("age", "0, 7200")], 0),
            (&[("age", "7200, 0")], 7200),
            (&[("age", "0"), ("age", "7200")], 0),
            (&[("age", "7200"), ("age", "0")], 7200),
            (&[("age", "3600"), ("age", "3600")], 3600),
            (&[("age", "7200;foo=bar")], 7200),
            (&[("age", "2147483648")], DELTA_MAX),
            (&[("age", "99999999999999999999")], DELTA_MAX),
        ];
        for (lines, seconds) in cases {
            let age = corrected_initial_age(&headers(lines), 0, 0);
            assert_eq!(age, Duration::from_secs(seconds), "{lines:?}");
        }
    }

    #[test]
    fn directives_that_cannot_be_read_are_found() {
        let mut odd = HeaderMap::new();
        odd.insert(
            "cache-control",
            HeaderValue::from_bytes("private, ext=\"café\"".as_bytes()).unwrap(),
        );
        assert!(unreadable_directives(&odd));
        for bad in [
            ("cache-control", "x=\"a, private"),
            ("pragma", "x=\"a\\\""),
            ("surrogate-control", "max-age=60, x=\"y"),
        ] {
            assert!(unreadable_directives(&headers(&[bad])), "{bad:?}");
        }
        for good in [
            (
                "cache-control",
                "max-age=60, no-cache=\"set-cookie, x\", x=\"a\\\"b\"",
            ),
            ("pragma", "no-cache"),
            ("cdn-cache-control", "x=\"y"),
        ] {
            assert!(!unreadable_directives(&headers(&[good])), "{good:?}");
        }
    }

    #[test]
    fn the_most_specific_targeted_field_wins() {
        let all = [
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=30"),
            ("surrogate-control", "max-age=20"),
            ("cachalot-cache-control", "max-age=10"),
        ];
        for n in (1..=all.len()).rev() {
            let d = Directives::for_proxy(&headers(&all[..n]));
            let expected = [None, Some(30), Some(20), Some(10)][n - 1];
            assert_eq!(d.max_age, expected, "{:?}", &all[..n]);
            assert_eq!(d.no_store, n == 1);
        }
        // An invalid targeted field falls back to the next one.
        let h = headers(&[
            ("cache-control", "max-age=5"),
            ("cdn-cache-control", "max-age=30"),
            ("cachalot-cache-control", "max-age=\"10\""),
        ]);
        assert_eq!(Directives::for_proxy(&h).max_age, Some(30));
        // Fixed-TTL routes take every refusal, whichever field states it.
        let h = headers(&[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "private"),
        ]);
        assert!(Directives::for_fixed_ttl(&h).private);
        assert!(
            !Directives::for_fixed_ttl(&headers(&[("cdn-cache-control", "max-age=9")])).no_store
        );
    }

    #[test]
    fn lifetime_prefers_s_maxage_then_max_age_then_expires() {
        let h = headers(&[
            ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
            ("expires", "Thu, 01 Jan 2026 00:01:40 GMT"),
        ]);
        let d = Directives::parse(&h);
        assert_eq!(explicit_lifetime(&h, &d, 0), Some(Duration::from_secs(100)));
        let bad = headers(&[("expires", "0")]);
        assert_eq!(
            explicit_lifetime(&bad, &Directives::parse(&bad), 0),
            Some(Duration::ZERO)
        );
        let none = headers(&[("content-type", "text/plain")]);
        assert_eq!(explicit_lifetime(&none, &Directives::parse(&none), 0), None);
    }

    #[test]
    fn dates_are_read_robustly_but_not_loosely() {
        let aug18 = parse_http_date("Thu, 18 Aug 2050 02:01:18 GMT").unwrap();
        for same in [
            "THU, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 AUG 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 gMT",
            "Mon, 18 Aug 2050 02:01:18 GMT",
            "Thursday, 18-Aug-50 02:01:18 GMT",
            "friday, 18-aug-50 02:01:18 gmt",
            "Thu Aug 18 02:01:18 2050",
        ] {
            assert_eq!(parse_http_date(same), Some(aug18), "{same:?}");
        }
        let aug8 = parse_http_date("Mon Aug  8 02:01:18 2050").unwrap();
        assert_eq!(parse_http_date("Thu Aug  8 02:01:18 2050"), Some(aug8));
        for bad in [
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "0",
            "",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn initial_age_takes_the_larger_of_age_and_apparent_age() {
        let date = httpdate::parse_http_date("Thu, 01 Jan 2026 00:00:00 GMT").unwrap();
        let date_ms = date
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let h = headers(&[("date", "Thu, 01 Jan 2026 00:00:00 GMT"), ("age", "30")]);
        // Arrived 10 s after its Date, after a 1 s round trip: Age + delay wins.
        let age = corrected_initial_age(&h, date_ms + 9_000, date_ms + 10_000);
        assert_eq!(age, Duration::from_secs(31));
        // Arrived 60 s after its Date: the apparent age wins.
        let age = corrected_initial_age(&h, date_ms + 59_000, date_ms + 60_000);
        assert_eq!(age, Duration::from_secs(60));
    }
}

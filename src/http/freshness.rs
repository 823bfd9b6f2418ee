//! Freshness by RFC 9111: how long an origin says a response stays fresh (§4.2.1, §4.2.2), how
//! old a stored response is (§4.2.3), and how long Redis keeps it. The directives it reads
//! are `directives`'s, the dates `date`'s.
//!
//! Routes with a fixed `ttl` decide freshness themselves (legacy origins send nothing useful);
//! routes with `ttl = "origin"` take it from here, within the route's `ttl_max`. Fields that
//! address this proxy alone (`CDN-Cache-Control`, `Cachalot-Cache-Control`) are read by
//! `targeted` and replace `Cache-Control` here.

use crate::http::date::{date_ms, http_date_ms};
use crate::http::directives::DELTA_MAX;
use crate::http::directives::Directives;
use http::{HeaderMap, StatusCode, header};
use std::time::Duration;

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

    use crate::http::directives::tests::headers;

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

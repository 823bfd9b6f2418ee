//! Byte ranges served from stored responses (RFC 9110 §14).
//!
//! Fills always ask the origin for the whole response, so a stored entry can answer any
//! single range itself: a resumed download or a video seek is a hit, not an origin request.
//! Several ranges in one request are answered with the whole response, which RFC 9110
//! allows (a server may ignore `Range`), rather than with a multipart body.

use http::{HeaderMap, header};
use std::ops::RangeInclusive;

/// What a stored representation of `len` bytes answers to the request's `Range`.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// No usable `Range` (absent, not bytes, several ranges, or `If-Range` no longer
    /// matching): the whole response.
    Whole,
    /// 206 with these bytes.
    Part(RangeInclusive<u64>),
    /// 416: no byte of the representation is in the range.
    Unsatisfiable,
}

/// Reads the request's `Range` and `If-Range` against a stored 200 with these headers.
pub fn answer(request: &HeaderMap, stored: &HeaderMap, len: u64) -> Answer {
    let Some(range) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Answer::Whole;
    };
    if let Some(condition) = request.get(header::IF_RANGE)
        && !if_range_holds(condition.as_bytes(), stored)
    {
        return Answer::Whole;
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Answer::Whole;
    };
    if spec.contains(',') {
        return Answer::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Answer::Whole;
    };
    let number = |text: &str| -> Option<u64> {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    match (number(first), first.trim().is_empty(), number(last)) {
        // bytes=-N: the last N bytes.
        (None, true, Some(suffix)) => {
            if suffix == 0 || len == 0 {
                Answer::Unsatisfiable
            } else {
                Answer::Part(len.saturating_sub(suffix)..=len - 1)
            }
        }
        // bytes=A- and bytes=A-B.
        (Some(start), false, end) if last.trim().is_empty() || end.is_some() => {
            if end.is_some_and(|end| end < start) {
                return Answer::Whole;
            }
            if start >= len {
                return Answer::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |end| end.min(len - 1));
            Answer::Part(start..=end)
        }
        _ => Answer::Whole,
    }
}

/// `If-Range`: a strong entity tag equal to the stored `ETag`, or a date equal to its
/// `Last-Modified` (RFC 9110 §13.1.5).
fn if_range_holds(condition: &[u8], stored: &HeaderMap) -> bool {
    if condition.starts_with(b"\"") {
        return stored
            .get(header::ETAG)
            .is_some_and(|etag| etag.as_bytes() == condition);
    }
    if condition.starts_with(b"W/") {
        return false;
    }
    stored
        .get(header::LAST_MODIFIED)
        .is_some_and(|modified| modified.as_bytes() == condition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ask(range: &'static str, len: u64) -> Answer {
        let mut request = HeaderMap::new();
        request.insert(header::RANGE, HeaderValue::from_static(range));
        answer(&request, &HeaderMap::new(), len)
    }

    #[test]
    fn single_ranges_are_answered_and_the_rest_is_whole() {
        assert_eq!(ask("bytes=0-4", 10), Answer::Part(0..=4));
        assert_eq!(ask("bytes=5-", 10), Answer::Part(5..=9));
        assert_eq!(ask("bytes=-3", 10), Answer::Part(7..=9));
        assert_eq!(ask("bytes=-30", 10), Answer::Part(0..=9));
        assert_eq!(ask("bytes=8-100", 10), Answer::Part(8..=9));
        assert_eq!(ask("bytes=10-", 10), Answer::Unsatisfiable);
        assert_eq!(ask("bytes=-0", 10), Answer::Unsatisfiable);
        assert_eq!(ask("bytes=0-1,4-5", 10), Answer::Whole);
        assert_eq!(ask("bytes=5-2", 10), Answer::Whole);
        assert_eq!(ask("items=0-1", 10), Answer::Whole);
        assert_eq!(ask("bytes=a-b", 10), Answer::Whole);
    }

    #[test]
    fn if_range_needs_the_same_strong_validator() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, HeaderValue::from_static("\"v2\""));
        let mut request = HeaderMap::new();
        request.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        request.insert(header::IF_RANGE, HeaderValue::from_static("\"v1\""));
        assert_eq!(answer(&request, &stored, 10), Answer::Whole);
        request.insert(header::IF_RANGE, HeaderValue::from_static("\"v2\""));
        assert_eq!(answer(&request, &stored, 10), Answer::Part(0..=1));
    }
}

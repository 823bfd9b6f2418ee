//! HTTP dates (RFC 9110 §5.6.7) as the freshness rules need them: `Date`, `Expires` and
//! `Last-Modified` in ms since the epoch, read as robustly as the RFC encourages and no
//! further.

use http::{HeaderMap, header};

/// The response's `Date` in ms since the Unix epoch.
pub(super) fn date_ms(headers: &HeaderMap) -> Option<u64> {
    http_date_ms(headers.get(header::DATE)?)
}

/// An HTTP date in ms since the Unix epoch (dates before it count as the epoch).
pub(super) fn http_date_ms(value: &http::HeaderValue) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

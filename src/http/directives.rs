//! `Cache-Control` and `Surrogate-Control` as RFC 9111 §5.2 reads them: the directives the
//! proxy acts on, how invalid values count (stale, never fresher), and which lines cannot be
//! read at all (the response is then not stored). The targeted fields that replace them
//! (`CDN-Cache-Control`, `Cachalot-Cache-Control`) are `targeted`'s, which builds on these.

use http::{HeaderMap, StatusCode, header};

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

    /// `Surrogate-Control` directives addressed to this proxy, with `Cache-Control`'s
    /// `private`; `None` when there are none.
    pub(super) fn surrogate(headers: &HeaderMap) -> Option<Self> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;

    /// A header map from name/value pairs; the tests of every module that reads directives
    /// build their responses with it.
    pub(crate) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
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
}

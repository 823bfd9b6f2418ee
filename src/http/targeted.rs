//! Targeted cache-control fields (RFC 9213): `CDN-Cache-Control`, and `Cachalot-Cache-Control`
//! for this proxy alone. An origin uses them to tell a shared cache something other than what
//! it tells browsers (`Cache-Control: no-store` for browsers, `CDN-Cache-Control: max-age=600`
//! for the cache in front of it).
//!
//! A targeted field is an RFC 8941 Dictionary. Unlike `Cache-Control`, a field that does not
//! parse is ignored as a whole (RFC 9213 §2.2), and the cache falls back to the less specific
//! fields: an origin that wrote `max-age="60"` or a stray `&&&` meant nothing reliable, and
//! `Cache-Control` still says what it means for every cache.
//!
//! Parsing is `sfv`'s (the RFC's own grammar, tested against the httpwg structured-field test
//! vectors), rather than a hand-written reader: the dictionary rules (keys, parameters, inner
//! lists, integer ranges) are exactly the kind of detail a home-made parser gets subtly wrong.

use crate::http::directives::{DELTA_MAX, Directives};
use http::{HeaderMap, HeaderName};
use sfv::{BareItem, Dictionary, ListEntry, Parser, Version};

/// The field for this proxy only: it wins over every other cache-control field.
pub static CACHALOT_CACHE_CONTROL: HeaderName = HeaderName::from_static("cachalot-cache-control");

/// The field for every CDN cache on the way (RFC 9213 §3); cachalot counts as one. It is
/// forwarded downstream unchanged, since a CDN in front of cachalot may obey it too.
pub static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The directives of targeted field `name`, or `None` when it is absent, empty or invalid
/// (then the caller falls back to a less specific field). Several lines are one dictionary.
pub fn directives(headers: &HeaderMap, name: &HeaderName) -> Option<Directives> {
    let mut text = String::new();
    for line in headers.get_all(name) {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(line.to_str().ok()?);
    }
    if text.trim().is_empty() {
        return None;
    }
    // Dictionary keys are lowercase by RFC 8941, while cache directive names are
    // case-insensitive (RFC 9111 §5.2): `MaX-aGe=60` means max-age, as the public cache test
    // suite expects. Nothing this proxy reads from the field depends on letter case.
    let text = text.to_ascii_lowercase();
    let dictionary: Dictionary = Parser::new(&text)
        .with_version(Version::Rfc8941)
        .parse()
        .ok()?;
    from_dictionary(&dictionary)
}

/// The response directives a dictionary states. A directive this proxy acts on with a value
/// of the wrong type (`max-age="60"`, `max-age=-1`) makes the whole field invalid.
fn from_dictionary(dictionary: &Dictionary) -> Option<Directives> {
    let mut d = Directives::default();
    for (key, member) in dictionary {
        let bare = match member {
            ListEntry::Item(item) => Some(&item.bare_item),
            ListEntry::InnerList(_) => None,
        };
        let seconds = || {
            let value = i64::from(bare?.as_integer()?);
            u64::try_from(value).ok().map(|v| v.min(DELTA_MAX))
        };
        // A flag is set unless it is explicitly false (`no-store=?0`); the qualified forms
        // (`private="set-cookie"`, an inner list of names) count as the unqualified one, the
        // safe reading.
        let flag = || !matches!(bare, Some(BareItem::Boolean(false)));
        match key.as_str() {
            "max-age" => d.max_age = Some(seconds()?),
            "s-maxage" => d.s_maxage = Some(seconds()?),
            "stale-while-revalidate" => d.stale_while_revalidate = Some(seconds()?),
            "stale-if-error" => d.stale_if_error = Some(seconds()?),
            "no-store" => d.no_store = flag(),
            "no-cache" => d.no_cache = flag(),
            "private" => d.private = flag(),
            "public" => d.public = flag(),
            "must-revalidate" => d.must_revalidate = flag(),
            "proxy-revalidate" => d.proxy_revalidate = flag(),
            "must-understand" => d.must_understand = flag(),
            _ => {}
        }
    }
    Some(d)
}

/// The directives that count for this proxy, where targeted fields replace or add to
/// `Cache-Control`.
impl Directives {
    /// A response's directives as a route that follows the origin reads them: the most
    /// specific field addressed to this proxy wins, and replaces the less specific ones
    /// (RFC 9213 §2.1): `Cachalot-Cache-Control`, then `Surrogate-Control` directives
    /// addressed to it (no target, or `;cachalot`; W3C Edge Architecture), then
    /// `CDN-Cache-Control`, then `Cache-Control`. `Surrogate-Control` keeps `Cache-Control`'s
    /// `private`, as it always has; the RFC 9213 fields replace `Cache-Control` whole, so a
    /// fresh `CDN-Cache-Control: max-age` is stored even with `Cache-Control: no-store` (the
    /// origin's word for browsers).
    pub fn for_proxy(headers: &HeaderMap) -> Self {
        directives(headers, &CACHALOT_CACHE_CONTROL)
            .or_else(|| Self::surrogate(headers))
            .or_else(|| directives(headers, &CDN_CACHE_CONTROL))
            .unwrap_or_else(|| Self::parse(headers))
    }

    /// A response's directives as a fixed-TTL route reads them: the policy decides freshness,
    /// so only what forbids storing counts, from `Cache-Control` and from every targeted field
    /// (a `private` or `no-store` addressed to this proxy is never overridden by the policy).
    pub fn for_fixed_ttl(headers: &HeaderMap) -> Self {
        let mut d = Self::parse(headers);
        let targeted = [&CACHALOT_CACHE_CONTROL, &CDN_CACHE_CONTROL]
            .into_iter()
            .filter_map(|name| directives(headers, name))
            .chain(Self::surrogate(headers));
        for t in targeted {
            d.no_store |= t.no_store;
            d.private |= t.private;
            d.no_cache |= t.no_cache;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    use crate::http::directives::tests::headers;

    fn cdn(lines: &[&'static str]) -> Option<Directives> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(&CDN_CACHE_CONTROL, HeaderValue::from_static(line));
        }
        directives(&headers, &CDN_CACHE_CONTROL)
    }

    #[test]
    fn reads_a_dictionary_of_directives() {
        let d = cdn(&[
            "foobar, MaX-aGe=3600",
            "private;x=1, no-cache=(\"set-cookie\")",
        ])
        .unwrap();
        assert_eq!(d.max_age, Some(3600));
        assert!(d.private && d.no_cache && !d.no_store);
        assert_eq!(
            cdn(&["max-age=99999999999"]).unwrap().max_age,
            Some(DELTA_MAX)
        );
        assert!(!cdn(&["no-store=?0"]).unwrap().no_store);
        assert_eq!(cdn(&["foo"]), Some(Directives::default()));
    }

    #[test]
    fn an_invalid_field_is_ignored_whole() {
        for bad in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age=-1",
            "max-age =100",
            "max-age= 100",
            "max-age=1.5",
            "max-age=(1)",
            "",
        ] {
            assert_eq!(cdn(&[bad]), None, "{bad:?}");
        }
        assert_eq!(cdn(&[]), None);
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
}

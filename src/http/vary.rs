//! `Vary`: one URL, several stored responses, chosen by request headers (RFC 9111 §4.1).
//!
//! The key names the URL; a response that varies is stored twice: under the key itself (the
//! latest one, so a lookup that matches costs one round trip) and under a variant key that
//! spells out the request header values it was chosen by, readable like every other key:
//! `<key>#accept-language=de`. A lookup whose headers do not match the entry under the key
//! reads the variant key its own headers name. Variants share the key's generation, so
//! invalidating the key drops every variant at once.

use super::coding::Coding;
use super::compressible::forbids_transform;
use http::{HeaderMap, HeaderName, header};
use std::fmt::Write;

/// The request header values a response was selected by: `(lower-case name, value)`.
pub type Selecting = Vec<(String, Option<String>)>;

/// The request headers a response varies on, lower-case and sorted; `None` for `Vary: *`
/// (no request can be shown to match). Left out: `Accept-Encoding` unless the body is in a
/// coding the proxy cannot remove (fills ask for `identity`; an unencoded body suits every
/// client, and a body in gzip, br or zstd is decoded for a client that does not accept it,
/// see `accept_encoding`, unless `no-transform` forbids it), headers the
/// route's key already holds (`keyed`, its `vary` list; `Host`, the authority, always), and
/// `Authorization`, whose value
/// must never appear in a key: requests with it bypass the cache, or (`per_user`) the key
/// holds a hash of it.
pub fn names(response: &HeaderMap, keyed: &[HeaderName]) -> Option<Vec<String>> {
    let encoded = response
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        && (Coding::of_response(response).is_none() || forbids_transform(response));
    let mut names = Vec::new();
    for line in response.get_all(header::VARY) {
        for name in String::from_utf8_lossy(line.as_bytes()).split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name == "*" {
                return None;
            }
            if name.is_empty()
                || (name == "accept-encoding" && !encoded)
                || name == "authorization"
                || name == "host"
                || keyed.iter().any(|k| k.as_str() == name)
            {
                continue;
            }
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// The values `names` have in `request` as the origin sees it: a header for which
/// `reaches_origin` is false counts as absent. Several field lines are combined with `, `
/// (RFC 9110 §5.3); bytes that are not visible ASCII are percent-encoded, so different values
/// never read the same.
pub fn selecting(
    names: &[String],
    request: &HeaderMap,
    reaches_origin: impl Fn(&str) -> bool,
) -> Selecting {
    names
        .iter()
        .map(|name| {
            let forwarded = reaches_origin(name);
            let mut lines = request
                .get_all(name.as_str())
                .iter()
                .filter(|_| forwarded)
                .peekable();
            let value = lines.peek().is_some().then(|| {
                let mut text = String::new();
                for (i, line) in lines.enumerate() {
                    if i > 0 {
                        text.push_str(", ");
                    }
                    for &b in line.as_bytes().trim_ascii() {
                        if (0x20..0x7f).contains(&b) && b != b'%' {
                            text.push(b as char);
                        } else {
                            let _ = write!(text, "%{b:02X}");
                        }
                    }
                }
                text
            });
            (name.clone(), value)
        })
        .collect()
}

/// Whether a stored response, whose request had the `stored` selecting headers, answers a
/// request with these headers (see [`selecting`]).
pub fn matches(
    stored: &Selecting,
    request: &HeaderMap,
    reaches_origin: impl Fn(&str) -> bool,
) -> bool {
    if stored.is_empty() {
        return true;
    }
    selecting(&stored_names(stored), request, reaches_origin) == *stored
}

/// The header names a stored response varies on.
pub fn stored_names(stored: &Selecting) -> Vec<String> {
    stored.iter().map(|(n, _)| n.clone()).collect()
}

/// The key a variant is stored under: the URL's key, `#`, then `name=value` pairs joined by
/// `&` (values percent-encoded; an absent header has no `=`). `#` never appears in a key
/// otherwise, so a variant key cannot collide with a URL's.
pub fn variant_key(key: &str, selecting: &Selecting) -> String {
    let mut out = String::with_capacity(key.len() + 32);
    out.push_str(key);
    out.push('#');
    for (i, (name, value)) in selecting.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            for &b in value.as_bytes() {
                if crate::http::escape::is_unreserved(b) {
                    out.push(b as char);
                } else {
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn names_skip_unencoded_accept_encoding_keyed_headers_and_credentials() {
        let response = map(&[
            ("vary", "Accept-Encoding, X-Team, Authorization, Host"),
            ("vary", "accept-language, x-tenant"),
        ]);
        let keyed = [HeaderName::from_static("x-tenant")];
        assert_eq!(
            names(&response, &keyed).unwrap(),
            ["accept-language", "x-team"]
        );
        let encoded = map(&[
            ("vary", "accept-encoding"),
            ("content-encoding", "compress"),
        ]);
        assert_eq!(names(&encoded, &[]).unwrap(), ["accept-encoding"]);
        let decodable = map(&[("vary", "accept-encoding"), ("content-encoding", "GZip")]);
        assert!(names(&decodable, &[]).unwrap().is_empty());
        assert_eq!(names(&map(&[("vary", "x, *")]), &[]), None);
    }

    #[test]
    fn selecting_combines_lines_and_keys_stay_distinct() {
        let names = vec!["accept-language".to_string(), "x-team".to_string()];
        let request = map(&[("accept-language", "de"), ("accept-language", "en;q=0.5")]);
        let chosen = selecting(&names, &request, |_| true);
        assert_eq!(
            chosen,
            [
                ("accept-language".into(), Some("de, en;q=0.5".into())),
                ("x-team".into(), None)
            ]
        );
        assert_eq!(
            variant_key("page:1", &chosen),
            "page:1#accept-language=de%2C%20en%3Bq%3D0.5&x-team"
        );
        let empty = selecting(&names, &map(&[("x-team", "")]), |_| true);
        let absent = selecting(&names, &map(&[]), |_| true);
        assert_ne!(variant_key("k", &empty), variant_key("k", &absent));
        let stripped = selecting(&names, &map(&[("x-team", "a")]), |n| n != "x-team");
        assert_eq!(stripped, absent);
    }
}

//! Tags (surrogate keys): names an entry carries so that one purge drops a whole group.
//!
//! A route may give tags (`tags = ["org:{org}"]`) and the origin may add its own per
//! response with `Surrogate-Key` (space separated, Fastly's convention) or `Cache-Tag`
//! (comma separated, Cloudflare's). Those headers are instructions to the cache: they are
//! removed before the response leaves the proxy unless `forward_tag_headers` says otherwise.

use crate::http::escape::escape_into;
use http::HeaderMap;
use http::header::HeaderName;

static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Characters a tag keeps as they are; anything else outside the unreserved set is
/// percent-encoded, so a tag cannot reach another namespace or break a SCAN pattern.
const TAG_KEEP: &[u8] = b":/@=+";

/// The tags an origin response names, escaped for use in Redis keys; removes the headers
/// unless `forward` is set.
pub fn from_response(headers: &mut HeaderMap, forward: bool) -> Vec<String> {
    let mut tags = Vec::new();
    for (name, separators) in [(&SURROGATE_KEY, &[' ', '\t'][..]), (&CACHE_TAG, &[','][..])] {
        for value in headers.get_all(name) {
            let Ok(text) = value.to_str() else { continue };
            for tag in text
                .split(separators)
                .map(str::trim)
                .filter(|t| !t.is_empty())
            {
                tags.push(escape(tag));
            }
        }
        if !forward {
            headers.remove(name);
        }
    }
    tags
}

/// A tag as it is stored: values from outside are escaped like key parameters.
pub fn escape(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len());
    escape_into(&mut out, tag, TAG_KEEP);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn reads_both_conventions_and_strips_them() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "surrogate-key",
            HeaderValue::from_static("org:7  credential:abc"),
        );
        headers.insert("cache-tag", HeaderValue::from_static("a, b*c"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let tags = from_response(&mut headers, false);
        assert_eq!(tags, ["org:7", "credential:abc", "a", "b%2Ac"]);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn forwarding_keeps_the_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("surrogate-key", HeaderValue::from_static("x"));
        assert_eq!(from_response(&mut headers, true), ["x"]);
        assert!(headers.contains_key("surrogate-key"));
    }
}

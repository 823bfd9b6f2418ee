//! HTTP caching rules: which requests may use the cache and which responses may be stored.
//!
//! Legacy APIs send no cache headers, so the policy's TTL decides freshness; these rules
//! decide *safety*. A shared cache that stores one user's response and serves it to another
//! is worse than no cache, so every doubt resolves to "do not store".

use crate::cache_status::Reason;
use crate::route::CacheRule;
use http::{HeaderMap, StatusCode, header};

/// Why a request on a cached route must go to the origin without touching the cache.
pub fn request_bypass(headers: &HeaderMap, rule: &CacheRule) -> Option<Reason> {
    if headers.contains_key(header::AUTHORIZATION) && !rule.per_user {
        return Some(Reason::Authorization);
    }
    if headers.contains_key(header::COOKIE) && !rule.ignore_cookies {
        return Some(Reason::Cookie);
    }
    if headers.contains_key(header::UPGRADE) {
        return Some(Reason::Upgrade);
    }
    None
}

/// Why an origin response must not be stored, if it must not.
pub fn not_storable(status: StatusCode, headers: &HeaderMap, rule: &CacheRule) -> Option<Reason> {
    if !rule.statuses.contains(&status.as_u16()) {
        return Some(Reason::Status);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Some(Reason::SetCookie);
    }
    for directive in cache_control(headers) {
        let name = directive.split('=').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("no-store") {
            return Some(Reason::NoStore);
        }
        if name.eq_ignore_ascii_case("private") {
            return Some(Reason::Private);
        }
        // Storing is allowed but every use needs revalidation, which TTL routes do not do.
        if name.eq_ignore_ascii_case("no-cache") {
            return Some(Reason::NoCache);
        }
    }
    if !vary_is_safe(headers, rule) {
        return Some(Reason::Vary);
    }
    if content_length(headers).is_some_and(|len| len > rule.max_object_size) {
        return Some(Reason::TooLarge);
    }
    None
}

/// The key holds only the request headers the route names (`vary`, and `Authorization`
/// with `per_user`), so a response that varies on any other could be served to a request
/// it does not fit. `Accept-Encoding` is fine too: fills ask for `identity`, and an encoded
/// body (which not every client can read) is never stored.
fn vary_is_safe(headers: &HeaderMap, rule: &CacheRule) -> bool {
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    !encoded
        && headers
            .get_all(header::VARY)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("*").split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .all(|name| {
                name.eq_ignore_ascii_case("accept-encoding")
                    || (rule.per_user && name.eq_ignore_ascii_case("authorization"))
                    || rule
                        .vary
                        .iter()
                        .any(|v| v.as_str().eq_ignore_ascii_case(name))
            })
}

/// Whether a client's conditional GET is answered by a 304 from a stored 200 (RFC 9110
/// §13.1): `If-None-Match` against the entry's `ETag` (weak comparison, `*` matches), else
/// `If-Modified-Since` against its `Last-Modified`.
pub fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
        let ours = opaque(etag);
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim() == "*" || opaque(tag) == ours);
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// The directives of every `Cache-Control` header, trimmed.
fn cache_control(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// A declared `Content-Length`, if valid.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyTemplate, QueryRule};
    use http::HeaderValue;
    use std::time::Duration;

    fn rule() -> CacheRule {
        CacheRule {
            ttl: Duration::from_secs(60),
            key: KeyTemplate::Default { name: None },
            query: QueryRule::Sorted,
            statuses: vec![200, 203],
            ignore_cookies: false,
            max_object_size: 100,
            tags: Vec::new(),
            l1: false,
            per_user: false,
            vary: Vec::new(),
            max_variants: 10,
        }
    }

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn private_responses_are_never_stored() {
        let r = rule();
        assert_eq!(not_storable(StatusCode::OK, &HeaderMap::new(), &r), None);
        assert_eq!(
            not_storable(StatusCode::NOT_FOUND, &HeaderMap::new(), &r),
            Some(Reason::Status)
        );
        assert_eq!(
            not_storable(StatusCode::OK, &with("set-cookie", "a=b"), &r),
            Some(Reason::SetCookie)
        );
        assert_eq!(
            not_storable(
                StatusCode::OK,
                &with("cache-control", "max-age=5, Private"),
                &r
            ),
            Some(Reason::Private)
        );
        assert_eq!(
            not_storable(StatusCode::OK, &with("cache-control", "no-store"), &r),
            Some(Reason::NoStore)
        );
        assert_eq!(
            not_storable(StatusCode::OK, &with("content-length", "101"), &r),
            Some(Reason::TooLarge)
        );
        assert_eq!(
            not_storable(StatusCode::OK, &with("vary", "Accept-Language"), &r),
            Some(Reason::Vary)
        );
        assert_eq!(
            not_storable(StatusCode::OK, &with("vary", "Accept-Encoding"), &r),
            None
        );
    }

    #[test]
    fn conditional_requests_match_validators() {
        let stored = {
            let mut h = with("etag", "W/\"v1\"");
            h.insert(
                "last-modified",
                HeaderValue::from_static("Tue, 01 Jan 2030 00:00:00 GMT"),
            );
            h
        };
        assert!(not_modified(&with("if-none-match", "\"v1\""), &stored));
        assert!(not_modified(
            &with("if-none-match", "\"v0\", W/\"v1\""),
            &stored
        ));
        assert!(not_modified(&with("if-none-match", "*"), &stored));
        assert!(!not_modified(&with("if-none-match", "\"v2\""), &stored));
        assert!(not_modified(
            &with("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT"),
            &stored
        ));
        assert!(!not_modified(
            &with("if-modified-since", "Mon, 31 Dec 2029 00:00:00 GMT"),
            &stored
        ));
        assert!(!not_modified(&HeaderMap::new(), &stored));
        // If-None-Match wins over If-Modified-Since.
        let mut both = with("if-none-match", "\"v2\"");
        both.insert(
            "if-modified-since",
            HeaderValue::from_static("Tue, 01 Jan 2030 00:00:00 GMT"),
        );
        assert!(!not_modified(&both, &stored));
    }

    #[test]
    fn credentials_bypass_unless_cookies_are_declared_irrelevant() {
        let mut r = rule();
        assert_eq!(
            request_bypass(&with("authorization", "Bearer x"), &r),
            Some(Reason::Authorization)
        );
        assert_eq!(
            request_bypass(&with("cookie", "s=1"), &r),
            Some(Reason::Cookie)
        );
        r.ignore_cookies = true;
        assert_eq!(request_bypass(&with("cookie", "s=1"), &r), None);
        assert_eq!(
            request_bypass(&with("authorization", "Bearer x"), &r),
            Some(Reason::Authorization)
        );
    }
}

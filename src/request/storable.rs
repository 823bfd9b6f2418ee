//! HTTP caching rules: which requests may use the cache and which responses may be stored.
//!
//! Legacy APIs send no cache headers, so the policy's TTL decides freshness; these rules
//! decide *safety*. A shared cache that stores one user's response and serves it to another
//! is worse than no cache, so every doubt resolves to "do not store".

use crate::http::date::parse_http_date;
use crate::http::directives::{self, Directives};
use crate::http::vary;
use crate::phase::Reason;
use crate::policy::route::CacheRule;
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

/// Why an origin response must not be stored, if it must not. `explicit` says whether the
/// response states its own freshness (which lets `ttl = "origin"` routes store more statuses).
pub fn not_storable(
    status: StatusCode,
    headers: &HeaderMap,
    directives: &Directives,
    explicit: bool,
    rule: &CacheRule,
) -> Option<Reason> {
    if !rule.statuses.allow(status, explicit)
        || (directives.must_understand && !directives::understood(status))
    {
        return Some(Reason::StatusNotStored);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Some(Reason::SetCookie);
    }
    if directives::unreadable_directives(headers) {
        return Some(Reason::UnreadableDirectives);
    }
    if directives.no_store {
        return Some(Reason::NoStore);
    }
    if directives.private {
        return Some(Reason::Private);
    }
    // Storable, but every use needs revalidation: `ttl = "origin"` routes do that; a fixed
    // TTL is the policy's promise to serve without asking, which such a response forbids.
    if directives.no_cache && !rule.ttl.is_origin() {
        return Some(Reason::NoCache);
    }
    if !vary_is_safe(headers, rule) {
        return Some(Reason::Vary);
    }
    if content_length(headers).is_some_and(|len| len > rule.max_object_size) {
        return Some(Reason::TooLarge);
    }
    None
}

/// Whether a route with default settings (a fixed `ttl` and nothing else, as `cachalot
/// report` drafts it) would store this response: the status it stores by default, no
/// `Set-Cookie`, no `private`, `no-store` or `no-cache`. Read by the same rules as a fill.
pub fn storable_by_default(status: StatusCode, headers: &HeaderMap) -> bool {
    let rule = default_rule();
    not_storable(
        status,
        headers,
        &Directives::for_fixed_ttl(headers),
        false,
        rule,
    )
    .is_none()
}

/// A cached route's rule with every default, compiled from policy text once so that it is
/// exactly what the policy compiler gives such a route.
fn default_rule() -> &'static CacheRule {
    static RULE: std::sync::OnceLock<CacheRule> = std::sync::OnceLock::new();
    RULE.get_or_init(|| {
        let text =
            "[origin]\nurl = \"http://127.0.0.1\"\n[[route]]\nmatch = \"GET /\"\nttl = \"1m\"\n";
        let policy = crate::policy::Policy::parse(text, "a default route")
            .expect("a route with default settings compiles");
        let route = policy.routes.iter().next().expect("one route");
        match &route.action {
            crate::policy::route::Action::Cache(rule) => CacheRule::clone(rule),
            crate::policy::route::Action::Pass => unreachable!("a route with a ttl caches"),
        }
    })
}

/// Variants are stored per request header values (see `vary`), except for two cases no
/// stored copy can be shown to fit: `Vary: *`, and a body in a coding the proxy cannot
/// remove that varies on `Accept-Encoding` (fills ask for `identity`, so the origin's choice
/// is unknowable; gzip, br and zstd are decoded for clients that do not accept them).
fn vary_is_safe(headers: &HeaderMap, rule: &CacheRule) -> bool {
    vary::names(headers, &rule.vary)
        .is_some_and(|names| !names.iter().any(|n| n == "accept-encoding"))
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
        .and_then(|v| parse_http_date(v.to_str().ok()?));
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| parse_http_date(v.to_str().ok()?));
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
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
    use crate::http::freshness::Ttl;
    use crate::policy::key::{KeyTemplate, QueryRule};
    use crate::policy::route::Statuses;
    use http::HeaderValue;
    use std::time::Duration;

    fn rule() -> CacheRule {
        CacheRule {
            ttl: Ttl::Fixed {
                ttl: Duration::from_secs(60),
                jitter: 0.0,
            },
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            early_refresh: false,
            honor_client_no_cache: false,
            key: KeyTemplate::Default { name: None },
            query: QueryRule::Sorted,
            statuses: Statuses::Listed(vec![200, 203]),
            ignore_cookies: false,
            max_object_size: 100,
            tags: Vec::new(),
            l1: false,
            per_user: false,
            vary: Vec::new(),
            max_variants: 10,
            forward_headers: None,
            verify: None,
            compress: true,
        }
    }

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    fn check(status: StatusCode, headers: &HeaderMap, rule: &CacheRule) -> Option<Reason> {
        let directives = Directives::parse(headers);
        not_storable(status, headers, &directives, false, rule)
    }

    #[test]
    fn private_responses_are_never_stored() {
        let r = rule();
        assert_eq!(check(StatusCode::OK, &HeaderMap::new(), &r), None);
        assert_eq!(
            check(StatusCode::NOT_FOUND, &HeaderMap::new(), &r),
            Some(Reason::StatusNotStored)
        );
        assert_eq!(
            check(StatusCode::OK, &with("set-cookie", "a=b"), &r),
            Some(Reason::SetCookie)
        );
        assert_eq!(
            check(
                StatusCode::OK,
                &with("cache-control", "max-age=5, Private"),
                &r
            ),
            Some(Reason::Private)
        );
        assert_eq!(
            check(StatusCode::OK, &with("cache-control", "no-store"), &r),
            Some(Reason::NoStore)
        );
        assert_eq!(
            check(StatusCode::OK, &with("cache-control", "x=\"a, private"), &r),
            Some(Reason::UnreadableDirectives)
        );
        assert_eq!(
            check(StatusCode::OK, &with("content-length", "101"), &r),
            Some(Reason::TooLarge)
        );
        assert_eq!(
            check(StatusCode::OK, &with("vary", "*"), &r),
            Some(Reason::Vary)
        );
        assert_eq!(
            check(StatusCode::OK, &with("vary", "Accept-Language"), &r),
            None
        );
        assert_eq!(
            check(StatusCode::OK, &with("vary", "Accept-Encoding"), &r),
            None
        );
    }

    #[test]
    fn origin_routes_store_no_cache_and_any_status_with_explicit_freshness() {
        let mut r = rule();
        assert_eq!(
            check(StatusCode::OK, &with("cache-control", "no-cache"), &r),
            Some(Reason::NoCache)
        );
        r.ttl = Ttl::Origin {
            max: Duration::from_secs(60),
            default: None,
            heuristic: false,
            jitter: 0.0,
        };
        r.statuses = Statuses::ByRfc;
        assert_eq!(
            check(StatusCode::OK, &with("cache-control", "no-cache"), &r),
            None
        );
        let headers = with("cache-control", "max-age=60");
        let d = Directives::parse(&headers);
        assert_eq!(
            not_storable(StatusCode::IM_A_TEAPOT, &headers, &d, true, &r),
            None
        );
        assert_eq!(
            check(StatusCode::IM_A_TEAPOT, &HeaderMap::new(), &r),
            Some(Reason::StatusNotStored)
        );
        assert_eq!(check(StatusCode::GONE, &HeaderMap::new(), &r), None);
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

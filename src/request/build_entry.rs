//! Turning an origin response into a stored `Entry`: its freshness under the route's TTL rule
//! (RFC 9111 §4.2), its stale windows, the variant it selects, and how long Redis keeps it;
//! and a 304's headers merged into the stored ones (§3.2). Pure functions of the response,
//! the route and the clock, so they stand apart from the fetch that calls them (the body
//! arrives in the form it is stored in, see `compress`).
use crate::http::directives::Directives;
use crate::http::freshness::{self, Ttl};
use crate::http::vary;
use crate::request::cacheable::{Cacheable, reaches_origin};
use crate::request::compress::StoredBody;
use crate::store::entry::Entry;
use http::header::{self};
use http::{HeaderMap, StatusCode};
use std::time::Duration;

/// When the fetch was sent and its response head arrived (RFC 9111 §4.2.3's
/// request_time and response_time).
#[derive(Clone, Copy)]
pub(crate) struct Times {
    pub request_ms: u64,
    pub response_ms: u64,
}

/// An entry, and how long Redis keeps it: `None` when it is not worth storing.
pub(crate) struct Built {
    pub entry: Entry,
    pub keep: Option<Duration>,
    pub fetch_started_ms: u64,
}

/// The entry for a response, with its freshness from the route (and for `ttl = "origin"`,
/// the response's own headers). Not worth storing: no freshness, no validator to revalidate
/// it with, no stale window to serve it in.
pub(crate) fn build_entry(
    request: &Cacheable,
    (status, headers, body): (StatusCode, HeaderMap, StoredBody),
    directives: &Directives,
    times: Times,
    generation: u64,
) -> Built {
    let rule = request.rule();
    let Times {
        request_ms,
        response_ms,
    } = times;
    let mut headers = headers;
    let initial_age = freshness::corrected_initial_age(&headers, request_ms, response_ms);
    // The stored copy's age is recomputed on every use (see `Entry::age`).
    headers.remove(header::AGE);
    let lifetime = rule.ttl.lifetime(&headers, directives, response_ms);
    let fresh_until_ms = match (&rule.ttl, lifetime) {
        // The policy's TTL counts from now, whatever the origin's Age says.
        (Ttl::Fixed { .. }, Some(lifetime)) => response_ms + lifetime.as_millis() as u64,
        (_, Some(lifetime)) if !directives.no_cache => (response_ms + lifetime.as_millis() as u64)
            .saturating_sub(initial_age.as_millis() as u64),
        _ => response_ms,
    };
    let forbids_stale = directives.forbids_stale();
    let window = |route: Duration, directive: Option<u64>| {
        if forbids_stale {
            return 0;
        }
        let directive = Duration::from_secs(directive.unwrap_or(0));
        route.max(directive).as_millis() as u64
    };
    let selecting = vary::names(&headers, &rule.vary)
        .map(|names| {
            vary::selecting(&names, &request.head.headers, |name: &str| {
                reaches_origin(rule, name)
            })
        })
        .unwrap_or_default();
    let entry = Entry {
        status,
        headers,
        body: body.bytes,
        coding: body.coding,
        coded_by_origin: body.coded_by_origin,
        stored_at_ms: response_ms,
        fresh_until_ms,
        initial_age_ms: initial_age.as_millis() as u64,
        generation,
        stale_while_revalidate_ms: window(
            rule.stale_while_revalidate,
            directives.stale_while_revalidate,
        ),
        stale_if_error_ms: window(rule.stale_if_error, directives.stale_if_error),
        forbids_stale,
        fetch_ms: response_ms.saturating_sub(request_ms),
        selecting,
    };
    let fresh_for = Duration::from_millis(fresh_until_ms.saturating_sub(response_ms));
    let stale_windows =
        Duration::from_millis(entry.stale_while_revalidate_ms.max(entry.stale_if_error_ms));
    let after = freshness::keep_after_stale(
        stale_windows,
        lifetime.unwrap_or_default(),
        entry.has_validator(),
    );
    let worth_storing = !(fresh_for.is_zero() && after.is_zero());
    Built {
        entry,
        keep: worth_storing.then_some(fresh_for + after),
        fetch_started_ms: request_ms,
    }
}

/// RFC 9111 §3.2: a 304's header fields replace the stored ones of the same name, except
/// those that describe the stored body itself (the 304 has none): its length, encoding,
/// range, digest and the validator it was selected by.
pub(crate) fn updated_headers(stored: &HeaderMap, fresh: HeaderMap) -> HeaderMap {
    const KEPT: [&str; 5] = [
        "content-length",
        "content-encoding",
        "content-range",
        "content-md5",
        "etag",
    ];
    let mut headers = stored.clone();
    let mut current = None;
    for (name, value) in fresh {
        if let Some(name) = name {
            current = (!KEPT.contains(&name.as_str())).then_some(name);
            if let Some(name) = &current {
                headers.remove(name);
            }
        }
        if let Some(name) = &current {
            headers.append(name.clone(), value);
        }
    }
    headers
}

//! Shadow verification: evidence that a route is safe to cache. For a share of a route's
//! fresh hits (`verify`), the origin is asked again, in the background, exactly as a fill
//! for that client's request would ask it, and its answer is compared with the entry that
//! was served. An answer that differs for the same version means the response depends on
//! something the key does not hold (a header, the time, a session).
//!
//! The client's answer is built before anything here runs and is never waited for or
//! changed. Which hit is verified is decided by a per-route counter (nothing a client sends
//! can ask for it); the request is the fill's own (`fetch::fill_request`: no credential or
//! header a fill would not send); at most `[verify] concurrency` are in flight (the rest are
//! skipped and counted), each bounded by the route's origin timeout. Nothing is stored, no
//! lock is taken, and no flight is joined.
//!
//! Only fresh hits (from Redis or the in-process tier) are sampled: a stale entry served
//! while it is refreshed, or past its freshness for a client's `max-stale`, is known to be
//! old, and a miss's answer comes from the origin already.

use crate::http::coding::Coding;
use crate::http::hop_by_hop;
use crate::observe::verify::{Difference, Verdict};
use crate::origin::{Origin, OriginBody, OriginError};
use crate::request::cacheable::Cacheable;
use crate::request::context::Stages;
use crate::request::fetch::{BodyRead, fill_request, read_body};
use crate::store::entry::Entry;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, StatusCode};
use metrics::SharedString;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// After a fresh hit was answered with `entry`: verifies it in the background when it is
/// this route's turn and a place is free.
pub(crate) fn sample(stages: &Stages, request: &Cacheable, entry: &Arc<Entry>) {
    let fraction = stages.policy.verify_fraction(&request.route);
    let verifications = &stages.verifications;
    let label = &request.route.label;
    if !verifications.picks(label, fraction) {
        return;
    }
    let Some(slot) = verifications.slot(stages.policy.verify.concurrency) else {
        verifications.record(label, request.fill_key(), &Verdict::Skipped);
        return;
    };
    let asking = Asking {
        origin: Arc::clone(&stages.origin),
        request: fill_request(stages, request),
        route: request.metric_route(),
        timeout: stages.policy.origin_timeout(Some(&request.route)),
        limit: request.rule().max_object_size,
    };
    let verifications = Arc::clone(verifications);
    let label = Arc::clone(label);
    let key = request.fill_key().to_string();
    let entry = Arc::clone(entry);
    tokio::spawn(async move {
        let verdict = match asking.ask().await {
            Ok(fresh) => compare(&entry, &fresh),
            Err(e) => Verdict::Error(e.to_string()),
        };
        verifications.record(&label, &key, &verdict);
        drop(slot);
    });
}

/// One verification request, ready to send.
struct Asking {
    origin: Arc<Origin>,
    request: Request<OriginBody>,
    route: SharedString,
    timeout: Duration,
    /// The route's `max_object_size`: a larger body is not read (it differs anyway).
    limit: u64,
}

impl Asking {
    /// The origin's answer, head and body within the route's timeout.
    async fn ask(self) -> Result<Fresh, OriginError> {
        let started = Instant::now();
        let response = self
            .origin
            .send(self.request, self.route, self.timeout)
            .await?;
        let (mut parts, body) = response.into_parts();
        hop_by_hop::strip_hop_by_hop(&mut parts.headers);
        let body = match read_body(body, self.limit, started, self.timeout).await? {
            BodyRead::Complete(bytes) => Some(bytes),
            BodyRead::TooLarge { .. } => None,
        };
        Ok(Fresh {
            status: parts.status,
            headers: parts.headers,
            body,
            limit: self.limit,
        })
    }
}

/// The origin's answer to a verification request.
pub(crate) struct Fresh {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// `None`: larger than the route's `max_object_size`.
    pub body: Option<Bytes>,
    /// The route's `max_object_size`, which bounds decoding either body too.
    pub limit: u64,
}

/// Headers compared by value: what a client does with the body (its type), where it is
/// sent next, and what the response says it varies on.
const COMPARED: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::VARY];

/// How the origin's answer compares with the entry that was served: status, body, the
/// [`COMPARED`] headers, and a `Set-Cookie` appearing (an entry never has one). When they
/// differ, the origin's validators tell a refreshed resource (another `ETag`, a later
/// `Last-Modified`) from the same version answered differently.
///
/// Every comparison is in this one function, so a change to how entries hold their bodies
/// (or anything else) changes one place.
pub(crate) fn compare(entry: &Entry, fresh: &Fresh) -> Verdict {
    let mut differences = Vec::new();
    let mut differ = |part: &'static str, detail: String| {
        differences.push(Difference { part, detail });
    };
    if entry.status != fresh.status {
        differ(
            "status",
            format!(
                "{} stored, {} now",
                entry.status.as_u16(),
                fresh.status.as_u16()
            ),
        );
    }
    // Bodies are compared as a client without `Accept-Encoding` gets them: the entry may be
    // stored compressed (by the proxy, or as the origin coded it), and the same bytes coded
    // twice need not be the same coded bytes (gzip's header holds a time).
    let stored = identity(&entry.body, entry.coding, fresh.limit);
    match (&stored, &fresh.body) {
        (None, _) => differ("body", "the stored body does not decode".to_string()),
        (Some(stored), Some(body)) => {
            match identity(body, Coding::of_response(&fresh.headers), fresh.limit) {
                Some(now) if now == *stored => {}
                Some(now) => differ(
                    "body",
                    format!("{} bytes stored, {} now", stored.len(), now.len()),
                ),
                None => differ(
                    "body",
                    format!(
                        "{} bytes stored, now one that does not decode",
                        stored.len()
                    ),
                ),
            }
        }
        (Some(stored), None) => differ(
            "body",
            format!(
                "{} bytes stored, now larger than the route stores",
                stored.len()
            ),
        ),
    }
    for name in &COMPARED {
        let (stored, now) = (values(&entry.headers, name), values(&fresh.headers, name));
        if stored == now {
            continue;
        }
        // The media type and the names a response varies on are not secret; a Location
        // may carry a token, so only that it changed is said.
        let detail = if *name == header::LOCATION {
            match (stored.is_empty(), now.is_empty()) {
                (true, _) => "none stored, one now".to_string(),
                (_, true) => "one stored, none now".to_string(),
                _ => "another target now".to_string(),
            }
        } else {
            format!("{} stored, {} now", shown(&stored), shown(&now))
        };
        differ(name.as_str(), detail);
    }
    if fresh.headers.contains_key(header::SET_COOKIE) {
        differ(
            "set-cookie",
            "the origin sets a cookie now (a response that does is never stored)".to_string(),
        );
    }
    if differences.is_empty() {
        Verdict::Match
    } else if refreshed(&entry.headers, &fresh.headers) {
        Verdict::Changed(differences)
    } else {
        Verdict::Mismatch(differences)
    }
}

/// `body` with `coding` removed (unchanged without one); `None` when it does not decode
/// within `limit` bytes.
fn identity(body: &Bytes, coding: Option<Coding>, limit: u64) -> Option<Bytes> {
    match coding {
        None => Some(body.clone()),
        Some(coding) => coding.decode(body, limit).ok().map(Bytes::from),
    }
}

/// A header's values as one comparable text: every line, `Vary`'s names in lower case.
fn values(headers: &HeaderMap, name: &HeaderName) -> String {
    let lines = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string());
    if *name == header::VARY {
        let mut names: Vec<String> = lines
            .flat_map(|line| {
                line.split(',')
                    .map(|n| n.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        return names.join(", ");
    }
    lines.collect::<Vec<_>>().join(", ")
}

/// A header value for a log line or the status page: `none` when absent, cut short when long.
fn shown(value: &str) -> String {
    const LONGEST: usize = 80;
    match value.char_indices().nth(LONGEST) {
        _ if value.is_empty() => "none".to_string(),
        Some((cut, _)) => format!("\"{}…\"", &value[..cut]),
        None => format!("\"{value}\""),
    }
}

/// Whether the origin's validators say its resource changed since the entry was stored:
/// another entity tag (compared weakly), or, without tags on both, a later `Last-Modified`.
fn refreshed(stored: &HeaderMap, fresh: &HeaderMap) -> bool {
    let tag = |headers: &HeaderMap| {
        headers.get(header::ETAG).map(|v| {
            let bytes = v.as_bytes();
            bytes.strip_prefix(b"W/").unwrap_or(bytes).to_vec()
        })
    };
    if let (Some(stored), Some(fresh)) = (tag(stored), tag(fresh)) {
        return stored != fresh;
    }
    let modified = |headers: &HeaderMap| {
        headers
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::http::date::parse_http_date)
    };
    matches!((modified(stored), modified(fresh)), (Some(stored), Some(fresh)) if fresh > stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::verify::Finding;
    use http::HeaderValue;

    fn entry(headers: &[(&'static str, &'static str)], body: &'static str) -> Entry {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        Entry::for_test(map, body)
    }

    fn fresh(headers: &[(&'static str, &'static str)], body: &'static str) -> Fresh {
        let stored = entry(headers, body);
        Fresh {
            status: stored.status,
            headers: stored.headers,
            body: Some(stored.body),
            limit: 1 << 20,
        }
    }

    fn parts(verdict: &Verdict) -> Vec<&'static str> {
        verdict.differences().iter().map(|d| d.part).collect()
    }

    #[test]
    fn the_same_answer_matches_whatever_the_headers_that_do_not_count() {
        let stored = entry(&[("content-type", "application/json"), ("date", "x")], "{}");
        let now = fresh(&[("content-type", "application/json"), ("date", "y")], "{}");
        assert_eq!(compare(&stored, &now), Verdict::Match);
        let stored = entry(&[("vary", "Accept, X-Team")], "a");
        let now = fresh(&[("vary", "x-team"), ("vary", "accept")], "a");
        assert_eq!(compare(&stored, &now), Verdict::Match);
    }

    #[test]
    fn each_part_that_counts_is_named() {
        let stored = entry(
            &[("content-type", "application/json"), ("location", "/a?t=1")],
            "{\"team\":\"crimson\"}",
        );
        let mut now = fresh(
            &[
                ("content-type", "text/html"),
                ("location", "/b?t=2"),
                ("vary", "X-Team"),
                ("set-cookie", "session=secret"),
            ],
            "{\"team\":\"azure\"}",
        );
        now.status = StatusCode::CREATED;
        let verdict = compare(&stored, &now);
        assert_eq!(verdict.finding(), Finding::Mismatch);
        assert_eq!(
            parts(&verdict),
            [
                "status",
                "body",
                "content-type",
                "location",
                "vary",
                "set-cookie"
            ]
        );
        let details: String = verdict
            .differences()
            .iter()
            .map(|d| d.detail.clone())
            .collect();
        for secret in ["secret", "session", "t=1", "t=2", "crimson", "azure"] {
            assert!(!details.contains(secret), "{secret} in {details}");
        }
        assert!(details.contains("\"application/json\" stored, \"text/html\" now"));
    }

    #[test]
    fn a_new_validator_means_changed_and_the_same_one_a_mismatch() {
        let stored = entry(&[("etag", "\"v1\"")], "old");
        assert_eq!(
            compare(&stored, &fresh(&[("etag", "\"v2\"")], "new")).finding(),
            Finding::Changed
        );
        assert_eq!(
            compare(&stored, &fresh(&[("etag", "W/\"v1\"")], "new")).finding(),
            Finding::Mismatch
        );
        assert_eq!(
            compare(&stored, &fresh(&[], "new")).finding(),
            Finding::Mismatch
        );
        let monday = "Mon, 07 Dec 2026 10:00:00 GMT";
        let tuesday = "Tue, 08 Dec 2026 10:00:00 GMT";
        let stored = entry(&[("last-modified", monday)], "old");
        assert_eq!(
            compare(&stored, &fresh(&[("last-modified", tuesday)], "new")).finding(),
            Finding::Changed
        );
        assert_eq!(
            compare(&stored, &fresh(&[("last-modified", monday)], "new")).finding(),
            Finding::Mismatch
        );
    }

    #[test]
    fn a_body_stored_compressed_is_compared_as_the_client_without_gzip_gets_it() {
        let text = "the same words, and the same words, and the same words again";
        let mut stored = entry(&[("content-type", "text/plain")], "");
        stored.body = Bytes::from(Coding::Gzip.encode(text.as_bytes(), 6));
        stored.coding = Some(Coding::Gzip);
        assert_eq!(
            compare(&stored, &fresh(&[("content-type", "text/plain")], text)),
            Verdict::Match
        );
        let other = fresh(&[("content-type", "text/plain")], "other words");
        assert_eq!(parts(&compare(&stored, &other)), ["body"]);
        // The origin coding its answer itself (at another level: other bytes) is the same body.
        let mut coded = fresh(&[("content-type", "text/plain")], "");
        coded.body = Some(Bytes::from(Coding::Gzip.encode(text.as_bytes(), 1)));
        coded
            .headers
            .insert("content-encoding", HeaderValue::from_static("gzip"));
        assert_eq!(compare(&stored, &coded), Verdict::Match);
    }

    #[test]
    fn a_body_too_large_to_read_differs() {
        let stored = entry(&[], "small");
        let mut now = fresh(&[], "small");
        now.body = None;
        assert_eq!(parts(&compare(&stored, &now)), ["body"]);
    }
}

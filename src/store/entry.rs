//! A stored response: one Redis value, so a hit is one round trip.
//!
//! The value is a small versioned envelope (`CLT` + version byte, then postcard) holding the
//! status, the end-to-end headers, the body and the content coding it is stored in, the
//! timestamps freshness needs, how stale it may be served, and for a response with `Vary`
//! the request header values it was selected by. Decoding
//! borrows from the bytes Redis returned: header values and the body are slices of that one
//! buffer, never copies.

use crate::http::coding::Coding;
use crate::http::hop_by_hop::is_hop_by_hop;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `CLT` and the envelope version. A proxy that meets another version treats it as a miss
/// (version 3 added the body's coding: entries written by an older proxy are fetched again).
const MAGIC: &[u8; 4] = b"CLT\x03";

#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    status: u16,
    stored_at_ms: u64,
    fresh_until_ms: u64,
    initial_age_ms: u64,
    generation: u64,
    stale_while_revalidate_ms: u64,
    stale_if_error_ms: u64,
    forbids_stale: bool,
    fetch_ms: u64,
    #[serde(borrow)]
    headers: Vec<StoredHeader<'a>>,
    #[serde(borrow)]
    selecting: Vec<Selecting<'a>>,
    /// 0: as stored (see `Entry::coding`), 1 gzip, 2 br, 3 zstd.
    coding: u8,
    coded_by_origin: bool,
    #[serde(borrow, with = "serde_bytes")]
    body: &'a [u8],
}

#[derive(Serialize, Deserialize)]
struct StoredHeader<'a> {
    name: &'a str,
    #[serde(borrow, with = "serde_bytes")]
    value: &'a [u8],
}

#[derive(Serialize, Deserialize)]
struct Selecting<'a> {
    name: &'a str,
    value: Option<&'a str>,
}

/// A cached response.
#[derive(Debug, Clone)]
pub struct Entry {
    pub status: StatusCode,
    /// End-to-end headers as the origin sent them (hop-by-hop ones and `Age` removed, and
    /// `Content-Encoding` when `coding` says it).
    pub headers: HeaderMap,
    /// In `coding`, when there is one.
    pub body: Bytes,
    /// The content coding of `body` when the proxy can remove it: its own compression, or
    /// the origin's gzip, br or zstd. `None`: the body is served as stored, with whatever
    /// `Content-Encoding` its headers carry.
    pub coding: Option<Coding>,
    /// Whether the origin sent the body in `coding` (its `ETag` names the coded form)
    /// rather than the proxy compressing it (the `ETag` names the identity form).
    pub coded_by_origin: bool,
    /// When the proxy stored it, in ms since the Unix epoch (shared by all instances).
    pub stored_at_ms: u64,
    /// Until when it may be served without asking the origin.
    pub fresh_until_ms: u64,
    /// The age the response already had when it arrived (RFC 9111 §4.2.3).
    pub initial_age_ms: u64,
    /// The key's invalidation generation when the fetch started: an invalidation since then
    /// bumped the generation in Redis, and the entry no longer counts (see `store`).
    pub generation: u64,
    /// How long past `fresh_until_ms` it may be served while a refresh runs.
    pub stale_while_revalidate_ms: u64,
    /// How long past `fresh_until_ms` it may be served when the origin fails.
    pub stale_if_error_ms: u64,
    /// `must-revalidate` and kin: never served stale, whatever a client or route allows.
    pub forbids_stale: bool,
    /// How long the origin took to produce it (early refresh starts that much ahead).
    pub fetch_ms: u64,
    /// For a response with `Vary`: each named request header and the value it had (`None`:
    /// absent) in the request the response answered. Empty when it does not vary.
    pub selecting: Vec<(String, Option<String>)>,
}

/// Why bytes from Redis are not an entry.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a cachalot entry, or written by another envelope version")]
    Version,
    #[error("corrupt entry: {0}")]
    Corrupt(String),
}

impl Entry {
    /// The envelope bytes to store.
    pub fn encode(&self) -> Vec<u8> {
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| StoredHeader {
                name: name.as_str(),
                value: value.as_bytes(),
            })
            .collect();
        let envelope = Envelope {
            status: self.status.as_u16(),
            stored_at_ms: self.stored_at_ms,
            fresh_until_ms: self.fresh_until_ms,
            initial_age_ms: self.initial_age_ms,
            generation: self.generation,
            stale_while_revalidate_ms: self.stale_while_revalidate_ms,
            stale_if_error_ms: self.stale_if_error_ms,
            forbids_stale: self.forbids_stale,
            fetch_ms: self.fetch_ms,
            headers,
            selecting: self
                .selecting
                .iter()
                .map(|(name, value)| Selecting {
                    name,
                    value: value.as_deref(),
                })
                .collect(),
            coding: match self.coding {
                None => 0,
                Some(Coding::Gzip) => 1,
                Some(Coding::Br) => 2,
                Some(Coding::Zstd) => 3,
            },
            coded_by_origin: self.coded_by_origin,
            body: &self.body,
        };
        let mut out = Vec::with_capacity(self.body.len() + 256);
        out.extend_from_slice(MAGIC);
        postcard::to_io(&envelope, &mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Reads an envelope; the body and header values share `raw`'s allocation.
    pub fn decode(raw: Bytes) -> Result<Self, DecodeError> {
        let payload = raw
            .strip_prefix(MAGIC.as_slice())
            .ok_or(DecodeError::Version)?;
        let envelope: Envelope<'_> =
            postcard::from_bytes(payload).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let status = StatusCode::from_u16(envelope.status)
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        let coding = match envelope.coding {
            0 => None,
            1 => Some(Coding::Gzip),
            2 => Some(Coding::Br),
            3 => Some(Coding::Zstd),
            other => return Err(DecodeError::Corrupt(format!("unknown coding {other}"))),
        };
        let mut headers = HeaderMap::with_capacity(envelope.headers.len());
        for header in &envelope.headers {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            // Bytes from Redis are untrusted: headers that frame the message or describe a
            // connection are never taken from them (the length is computed from the body
            // when the entry is served).
            if name == http::header::CONTENT_LENGTH || is_hop_by_hop(&name) {
                continue;
            }
            let value = HeaderValue::from_maybe_shared(raw.slice_ref(header.value))
                .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
            headers.append(name, value);
        }
        Ok(Self {
            status,
            headers,
            body: raw.slice_ref(envelope.body),
            coding,
            coded_by_origin: envelope.coded_by_origin,
            stored_at_ms: envelope.stored_at_ms,
            fresh_until_ms: envelope.fresh_until_ms,
            initial_age_ms: envelope.initial_age_ms,
            generation: envelope.generation,
            stale_while_revalidate_ms: envelope.stale_while_revalidate_ms,
            stale_if_error_ms: envelope.stale_if_error_ms,
            forbids_stale: envelope.forbids_stale,
            fetch_ms: envelope.fetch_ms,
            selecting: envelope
                .selecting
                .iter()
                .map(|s| (s.name.to_string(), s.value.map(str::to_string)))
                .collect(),
        })
    }

    /// Whether the entry may be served without asking the origin at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until_ms
    }

    /// The `Age` header value at `now_ms`, in whole seconds.
    pub fn age(&self, now_ms: u64) -> u64 {
        (self.initial_age_ms + now_ms.saturating_sub(self.stored_at_ms)) / 1000
    }

    /// How long ago it stopped being fresh (zero while fresh).
    pub fn staleness_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.fresh_until_ms)
    }

    /// Whether it may be served at once while a refresh runs in the background.
    pub fn within_stale_while_revalidate(&self, now_ms: u64) -> bool {
        !self.forbids_stale && now_ms < self.fresh_until_ms + self.stale_while_revalidate_ms
    }

    /// Whether it may stand in for an origin that failed.
    pub fn within_stale_if_error(&self, now_ms: u64) -> bool {
        !self.forbids_stale && now_ms < self.fresh_until_ms + self.stale_if_error_ms
    }

    /// Whether the origin can be asked "has it changed?" instead of for the whole response.
    pub fn has_validator(&self) -> bool {
        self.status == StatusCode::OK
            && (self.headers.contains_key(http::header::ETAG)
                || self.headers.contains_key(http::header::LAST_MODIFIED))
    }

    /// Seconds of freshness left (the `ttl` in `Cache-Status`), rounded up: an entry stored
    /// a moment ago with a 600 s TTL reports 600, one with 0.2 s left reports 1.
    pub fn ttl_left(&self, now_ms: u64) -> u64 {
        self.fresh_until_ms.saturating_sub(now_ms).div_ceil(1000)
    }
}

/// Milliseconds since the Unix epoch: the clock entries share across instances.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

#[cfg(test)]
impl Entry {
    /// A 200 with `headers` and `body`, stored now and fresh for a minute, every other field
    /// empty: the entry unit tests start from.
    pub(crate) fn for_test(headers: HeaderMap, body: impl Into<Bytes>) -> Self {
        let now = now_ms();
        Entry {
            status: StatusCode::OK,
            headers,
            body: body.into(),
            coding: None,
            coded_by_origin: false,
            stored_at_ms: now,
            fresh_until_ms: now + 60_000,
            initial_age_ms: 0,
            generation: 0,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 0,
            forbids_stale: false,
            fetch_ms: 0,
            selecting: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Entry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"{\"status\":\"valid\"}"),
            coding: Some(Coding::Gzip),
            coded_by_origin: true,
            stored_at_ms: 1_000,
            fresh_until_ms: 61_000,
            initial_age_ms: 3_000,
            generation: 7,
            stale_while_revalidate_ms: 30_000,
            stale_if_error_ms: 0,
            forbids_stale: false,
            fetch_ms: 20,
            selecting: vec![
                ("accept-language".into(), Some("de".into())),
                ("x-team".into(), None),
            ],
        }
    }

    #[test]
    fn round_trips_status_headers_body_and_times() {
        let entry = sample();
        let decoded = Entry::decode(Bytes::from(entry.encode())).unwrap();
        assert_eq!(decoded.status, entry.status);
        assert_eq!(decoded.headers, entry.headers);
        assert_eq!(decoded.body, entry.body);
        assert_eq!(decoded.coding, Some(Coding::Gzip));
        assert!(decoded.coded_by_origin);
        assert_eq!(decoded.fresh_until_ms, 61_000);
        assert_eq!(decoded.generation, 7);
        assert_eq!(decoded.selecting, entry.selecting);
        assert!(decoded.within_stale_while_revalidate(90_999));
        assert!(!decoded.within_stale_while_revalidate(91_000));
        assert!(!decoded.within_stale_if_error(61_000));
        assert_eq!(decoded.age(11_500), 13);
        assert_eq!(decoded.ttl_left(11_000), 50);
        assert_eq!(decoded.ttl_left(60_800), 1);
        assert!(decoded.is_fresh(60_999) && !decoded.is_fresh(61_000));
    }

    #[test]
    fn rejects_foreign_and_corrupt_values() {
        assert!(matches!(
            Entry::decode(Bytes::from_static(b"hello")),
            Err(DecodeError::Version)
        ));
        let mut bytes = sample().encode();
        bytes.truncate(10);
        assert!(matches!(
            Entry::decode(Bytes::from(bytes)),
            Err(DecodeError::Corrupt(_))
        ));
    }
}

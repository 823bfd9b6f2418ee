//! The responses the proxy builds itself: from a stored entry (with `Age`, a 304 for a
//! client that holds it, a byte range), and the short plain-text answers for refusals and
//! origin failures. Apart from the stages so that lookup, fill and forward can all answer
//! without reaching into each other.

use crate::http::accept_encoding::{self, Choice};
use crate::http::coding::{Coding, form_etag};
use crate::http::range;
use crate::net::body::ProxyBody;
use crate::origin::OriginError;
use crate::phase::Outcome;
use crate::request::admit;
use crate::request::cacheable::Cacheable;
use crate::request::storable;
use crate::store::entry::{Entry, now_ms};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A response from a stored entry: the origin's status, headers and body, plus `Age`; a 304
/// for a client that holds it already, a 206 (or 416) for a single byte range. An entry
/// stored in a content coding goes out in the form the client accepts (see
/// [`coded_entry`]). Sets the status's `ttl` to the entry's remaining freshness.
pub(crate) fn from_entry(
    entry: &Entry,
    request: &Cacheable,
    status: &mut Outcome,
) -> Response<ProxyBody> {
    let now = now_ms();
    status.ttl = Some(entry.ttl_left(now));
    match entry.coding {
        None => deliver(
            entry,
            request,
            entry.headers.clone(),
            entry.body.clone(),
            true,
            now,
        ),
        Some(coding) => coded_entry(entry, coding, request, now),
    }
}

/// An entry whose body is in `coding`: the stored bytes for a client that accepts them
/// (no work per hit), else the body decoded, within the route's `max_object_size`. Either
/// form says `Vary: Accept-Encoding`, carries its own `ETag` (RFC 9110 §8.8.3) and is what
/// `If-None-Match` is compared with. A range is answered over the identity form, so its
/// offsets mean the same to every client.
fn coded_entry(
    entry: &Entry,
    coding: Coding,
    request: &Cacheable,
    now: u64,
) -> Response<ProxyBody> {
    let asked = &request.head.headers;
    let choice = accept_encoding::choose(asked, coding);
    if choice == Choice::NotAcceptable {
        return not_acceptable(coding);
    }
    let ranged = entry.status == StatusCode::OK
        && asked.contains_key(header::RANGE)
        && accept_encoding::identity_acceptable(asked);
    let coded = || form_headers(entry, Some(coding));
    if choice == Choice::Coded && !ranged {
        return deliver(entry, request, coded(), entry.body.clone(), false, now);
    }
    let headers = form_headers(entry, None);
    if entry.status == StatusCode::OK && storable::not_modified(asked, &headers) {
        return not_modified(&headers, entry, now);
    }
    let body = match coding.decode(&entry.body, request.rule().max_object_size) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            tracing::warn!(key = %request.key, error = %e, "a stored body does not decode");
            return plain(
                StatusCode::BAD_GATEWAY,
                "cachalot: the stored response could not be decoded\n",
            );
        }
    };
    // A range this request does not get after all (several ranges, an `If-Range` that no
    // longer holds): the whole response, in the coding it accepts.
    if choice == Choice::Coded
        && range::answer(asked, &headers, body.len() as u64) == range::Answer::Whole
    {
        return deliver(entry, request, coded(), entry.body.clone(), false, now);
    }
    deliver(entry, request, headers, body, true, now)
}

/// The headers of one form of a coded entry: `Content-Encoding` when `coding` is sent,
/// `Vary: Accept-Encoding` added, and the `ETag` of that form: the origin's tag for the form
/// the origin sent, a suffixed one for the other.
fn form_headers(entry: &Entry, coding: Option<Coding>) -> HeaderMap {
    let mut headers = entry.headers.clone();
    headers.remove(header::CONTENT_ENCODING);
    if let Some(coding) = coding {
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.token()),
        );
    }
    let origin_form = coding.is_some() == entry.coded_by_origin;
    if !origin_form && let Some(etag) = headers.remove(header::ETAG) {
        let form = coding.map_or("identity", Coding::token);
        if let Some(tag) = form_etag(&etag, form) {
            headers.insert(header::ETAG, tag);
        }
    }
    let listed = headers.get_all(header::VARY).iter().any(|line| {
        line.as_bytes().split(|&b| b == b',').any(|name| {
            let name = name.trim_ascii();
            name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding")
        })
    });
    if !listed {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    headers
}

/// 406 (RFC 9110 §12.5.3, §15.5.7): the request excludes identity and does not accept the
/// coding the body is stored in. Answered per request; nothing is stored for it.
fn not_acceptable(coding: Coding) -> Response<ProxyBody> {
    let body = format!(
        "cachalot: this response is available in {} or unencoded, and the request's Accept-Encoding accepts neither\n",
        coding.token()
    );
    let mut response = text(StatusCode::NOT_ACCEPTABLE, body);
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}

/// The response for an entry with `headers` (the form sent) and `body`: a 304 when the
/// client holds it, a byte range when asked and `ranges` allows it, else the whole body.
fn deliver(
    entry: &Entry,
    request: &Cacheable,
    mut headers: HeaderMap,
    body: Bytes,
    ranges: bool,
    now: u64,
) -> Response<ProxyBody> {
    if entry.status == StatusCode::OK && storable::not_modified(&request.head.headers, &headers) {
        return not_modified(&headers, entry, now);
    }
    let len = body.len() as u64;
    let part = match entry.status {
        StatusCode::OK if ranges => range::answer(&request.head.headers, &headers, len),
        _ => range::Answer::Whole,
    };
    let (status, body) = match &part {
        range::Answer::Whole => (entry.status, body),
        range::Answer::Part(bytes) => (
            StatusCode::PARTIAL_CONTENT,
            body.slice(*bytes.start() as usize..=*bytes.end() as usize),
        ),
        range::Answer::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new()),
    };
    // A status that never has a body (RFC 9110 §6.4.1) is sent without one, whatever is stored.
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = body.len();
    headers.insert(header::AGE, HeaderValue::from(entry.age(now)));
    // The length is the body's, never a stored header's: an entry read from Redis is
    // untrusted, and a length that disagrees with the body would split the client's
    // connection (see `Entry::decode`, which drops framing headers).
    if bodiless {
        headers.remove(header::CONTENT_LENGTH);
    } else {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    match &part {
        range::Answer::Whole => {}
        range::Answer::Part(bytes) => {
            let range = format!("bytes {}-{}/{len}", bytes.start(), bytes.end());
            if let Ok(value) = HeaderValue::from_str(&range) {
                headers.insert(header::CONTENT_RANGE, value);
            }
        }
        range::Answer::Unsatisfiable => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
        }
    }
    let mut response = Response::new(if request.head_only() || bodiless {
        ProxyBody::Empty
    } else {
        ProxyBody::Full(Some(body))
    });
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A 304 for a client that already holds the representation with these `headers`: the
/// headers RFC 9110 §15.4.5 asks a 304 to repeat, and no body.
fn not_modified(headers: &HeaderMap, entry: &Entry, now: u64) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Empty);
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let sent = response.headers_mut();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::LAST_MODIFIED,
        header::VARY,
    ] {
        for value in headers.get_all(&name) {
            sent.append(name.clone(), value.clone());
        }
    }
    sent.insert(header::AGE, HeaderValue::from(entry.age(now)));
    response
}

/// A short plain-text response the proxy writes itself.
pub(crate) fn plain(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    text(status, body)
}

/// A plain-text response with `body`.
fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 400 for a request the proxy will not pass on, saying why; the connection is closed,
/// since whatever follows on it cannot be trusted to be framed as the client meant.
pub(crate) fn bad_request(body: String) -> Response<ProxyBody> {
    let mut response = text(StatusCode::BAD_REQUEST, body);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request `admit` answers itself: 400 and 421 close the connection, like `bad_request`.
pub(crate) fn local_answer(answer: admit::Answer) -> Response<ProxyBody> {
    if answer.status.is_client_error() {
        let mut response = bad_request(answer.text);
        *response.status_mut() = answer.status;
        return response;
    }
    let mut response = Response::new(ProxyBody::Empty);
    *response.status_mut() = answer.status;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    response
}

/// 413 for a body over `limits.max_body`. The connection is closed: the rest of the body
/// is not read.
pub(crate) fn body_too_large() -> Response<ProxyBody> {
    let mut response = plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        "cachalot: the request body is larger than limits.max_body\n",
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 502 or 504, with a body that says which.
pub(crate) fn error_response(error: &OriginError) -> Response<ProxyBody> {
    let text = match error {
        OriginError::Timeout(_) => "cachalot: the origin did not answer in time\n",
        OriginError::Connect(_) => "cachalot: the origin cannot be reached\n",
        OriginError::Failed(_) => "cachalot: the origin's response was broken\n",
        OriginError::AmbiguousFraming => {
            "cachalot: the origin's response had both Content-Length and Transfer-Encoding\n"
        }
        OriginError::BodyTooLarge => "cachalot: the request body is larger than limits.max_body\n",
    };
    plain(error.status(), text)
}

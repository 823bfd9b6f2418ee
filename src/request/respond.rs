//! The responses the proxy builds itself: from a stored entry (with `Age`, a 304 for a
//! client that holds it, a byte range), and the short plain-text answers for refusals and
//! origin failures. Apart from the stages so that lookup, fill and forward can all answer
//! without reaching into each other.

use crate::http::range;
use crate::net::body::ProxyBody;
use crate::origin::OriginError;
use crate::phase::Outcome;
use crate::request::admit;
use crate::request::cacheable::Cacheable;
use crate::request::storable;
use crate::store::entry::{Entry, now_ms};
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A response from a stored entry: the origin's status, headers and body, plus `Age`; a 304
/// for a client that holds it already, a 206 (or 416) for a single byte range. Sets the
/// status's `ttl` to the entry's remaining freshness.
pub(crate) fn from_entry(
    entry: &Entry,
    request: &Cacheable,
    status: &mut Outcome,
) -> Response<ProxyBody> {
    let now = now_ms();
    status.ttl = Some(entry.ttl_left(now));
    if entry.status == StatusCode::OK
        && storable::not_modified(&request.head.headers, &entry.headers)
    {
        return not_modified(entry, now);
    }
    let len = entry.body.len() as u64;
    let part = match entry.status {
        StatusCode::OK => range::answer(&request.head.headers, &entry.headers, len),
        _ => range::Answer::Whole,
    };
    let (status, body) = match &part {
        range::Answer::Whole => (entry.status, entry.body.clone()),
        range::Answer::Part(bytes) => (
            StatusCode::PARTIAL_CONTENT,
            entry
                .body
                .slice(*bytes.start() as usize..=*bytes.end() as usize),
        ),
        range::Answer::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, bytes::Bytes::new()),
    };
    // A status that never has a body (RFC 9110 §6.4.1) is sent without one, whatever is stored.
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = body.len();
    let mut response = Response::new(if request.head_only() || bodiless {
        ProxyBody::Empty
    } else {
        ProxyBody::Full(Some(body))
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.clone_from(&entry.headers);
    headers.insert(header::AGE, HeaderValue::from(entry.age(now)));
    // The length is the stored body's, never a stored header's: an entry read from Redis is
    // untrusted, and a length that disagrees with the body would split the client's
    // connection (see `Entry::decode`, which drops framing headers).
    if bodiless {
        headers.remove(header::CONTENT_LENGTH);
    } else {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let content_range = match part {
        range::Answer::Whole => return response,
        range::Answer::Part(bytes) => format!("bytes {}-{}/{len}", bytes.start(), bytes.end()),
        range::Answer::Unsatisfiable => format!("bytes */{len}"),
    };
    if let Ok(value) = HeaderValue::from_str(&content_range) {
        headers.insert(header::CONTENT_RANGE, value);
    }
    response
}

/// A 304 for a client that already holds the entry's representation: the headers RFC 9110
/// §15.4.5 asks a 304 to repeat, and no body.
fn not_modified(entry: &Entry, now: u64) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Empty);
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::LAST_MODIFIED,
        header::VARY,
    ] {
        for value in entry.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(header::AGE, HeaderValue::from(entry.age(now)));
    response
}

/// A short plain-text response the proxy writes itself.
pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 400 for a request the proxy will not pass on, saying why; the connection is closed,
/// since whatever follows on it cannot be trusted to be framed as the client meant.
pub(crate) fn bad_request(text: String) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(text));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
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

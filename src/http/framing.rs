//! Request framing checks that hyper leaves to the application.
//!
//! hyper's HTTP/1 parser already refuses what it cannot frame unambiguously: differing or
//! malformed `Content-Length`s, a `Transfer-Encoding` whose last coding is not `chunked`,
//! `Transfer-Encoding` on HTTP/1.0, obsolete line folding, bare CR and NUL (all 400, never
//! reaching the proxy). When `Content-Length` and `Transfer-Encoding` come together, it
//! frames by `Transfer-Encoding` alone, drops the `Content-Length` and closes the connection
//! after the response, as RFC 9112 §6.1 allows; the proxy then sends the origin a body it
//! framed itself, so both sides read the same request.
//!
//! What hyper accepts and a proxy should not: a `Transfer-Encoding` with codings besides
//! the one final `chunked` (`chunked, chunked`, `gzip, chunked`, several header lines).
//! Clients do not send those; a server behind the proxy could read them differently, so
//! they are refused here.

use http::{HeaderMap, header};

/// Whether the request's `Transfer-Encoding`, if any, is the one form every server frames
/// the same way: a single `chunked`.
pub fn is_unambiguous(headers: &HeaderMap) -> bool {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => true,
        (Some(only), None) => only
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked"),
        (Some(_), Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_a_single_chunked_coding_passes() {
        let mut headers = HeaderMap::new();
        assert!(is_unambiguous(&headers));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("Chunked"),
        );
        assert!(is_unambiguous(&headers));
        for value in ["chunked, chunked", "gzip, chunked", "chunked;x=1"] {
            headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static(value));
            assert!(!is_unambiguous(&headers), "{value}");
        }
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(!is_unambiguous(&headers));
    }
}

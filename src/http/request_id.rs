//! Request ids: one id follows a request through the client, the proxy's access log and the
//! origin, so a line in any of their logs can be matched with the others.
//!
//! A client (or a load balancer in front) that sends `X-Request-Id` keeps its id; otherwise
//! the proxy makes one. Only a sane token is kept: at most 128 visible ASCII characters, so
//! a client cannot forge log lines (newlines, quotes) or bloat every log line with kilobytes.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client id kept; longer ones are replaced.
const MAX_LEN: usize = 128;

/// The request's id: the client's `X-Request-Id` if it sent exactly one sane value, else a
/// new one, which replaces whatever the client sent so the origin sees the same id.
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    let mut given = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(id), None) = (given.next(), given.next())
        && is_sane(id)
    {
        return id.clone();
    }
    let id = generate();
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

fn is_sane(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// 128 random bits in hex: unique without coordination between instances.
fn generate() -> HeaderValue {
    HeaderValue::from_bytes(&hex(rand::random())).expect("hex digits are a valid header value")
}

/// `bits` as 32 lowercase hex digits, written digit by digit: this runs for nearly every
/// request, and `format!` cost more than the rest of making the id.
fn hex(bits: u128) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 32];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = DIGITS[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(&X_REQUEST_ID, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn ids_are_the_bits_in_hex() {
        for bits in [
            0,
            1,
            0xabc,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            assert_eq!(hex(bits).as_slice(), format!("{bits:032x}").as_bytes());
        }
    }

    #[test]
    fn keeps_a_sane_client_id() {
        let mut headers = with(&["req-42_a.b:c"]);
        assert_eq!(ensure(&mut headers), "req-42_a.b:c");
        assert_eq!(headers.get_all(&X_REQUEST_ID).iter().count(), 1);
    }

    #[test]
    fn replaces_missing_odd_or_repeated_ids() {
        let long = "x".repeat(MAX_LEN + 1);
        for values in [
            &[][..],
            &[""],
            &["has space"],
            &[long.as_str()],
            &["a", "b"],
        ] {
            let mut headers = with(values);
            let id = ensure(&mut headers);
            assert_eq!(id.len(), 32, "{values:?}");
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
            let sent: Vec<_> = headers.get_all(&X_REQUEST_ID).iter().collect();
            assert_eq!(sent, [&id], "the origin sees the id that is logged");
        }
        assert_ne!(ensure(&mut HeaderMap::new()), ensure(&mut HeaderMap::new()));
    }
}

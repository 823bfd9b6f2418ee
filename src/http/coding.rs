//! Content codings (RFC 9110 §8.4.1) the cache stores bodies in: compressing a body once
//! when an entry is built, and removing the coding for a client that cannot read it.
//!
//! Decoding is bounded: the caller names the largest body it accepts, so a small stored
//! body that expands to gigabytes (a "zip bomb", from the origin or from a forged Redis
//! value) fails instead of filling memory.

use http::{HeaderMap, HeaderValue, header};
use std::io::{Read, Write};

/// A content coding the proxy can both produce and remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Br,
    Zstd,
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the decoded body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the body is not valid {0}")]
    Corrupt(&'static str),
}

impl Coding {
    /// The token in `Content-Encoding` and `Accept-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// The coding a `Content-Encoding` value names, when it is exactly one coding the proxy
    /// can remove (`x-gzip` is gzip, RFC 9110 §8.4.1.3; case does not matter). `None` for
    /// `identity`, lists of codings and codings it does not know: such bodies are served as
    /// they were stored.
    pub fn from_content_encoding(value: &[u8]) -> Option<Self> {
        let token = value.trim_ascii();
        [
            (b"gzip".as_slice(), Coding::Gzip),
            (b"x-gzip", Coding::Gzip),
            (b"br", Coding::Br),
            (b"zstd", Coding::Zstd),
        ]
        .into_iter()
        .find(|(name, _)| token.eq_ignore_ascii_case(name))
        .map(|(_, coding)| coding)
    }

    /// The coding of a response's body when its `Content-Encoding` names exactly one coding
    /// the proxy can remove (see [`Coding::from_content_encoding`]).
    pub fn of_response(headers: &HeaderMap) -> Option<Self> {
        let mut lines = headers.get_all(header::CONTENT_ENCODING).iter();
        match (lines.next(), lines.next()) {
            (Some(only), None) => Self::from_content_encoding(only.as_bytes()),
            _ => None,
        }
    }

    /// Compresses `body` at `level` (the coding's own scale: gzip 1-9, br 0-11, zstd 1-22).
    pub fn encode(self, body: &[u8], level: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() / 3 + 64);
        match self {
            Coding::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(&mut out, flate2::Compression::new(level));
                encoder
                    .write_all(body)
                    .and_then(|()| encoder.finish().map(drop))
                    .expect("writing to a Vec cannot fail");
            }
            Coding::Br => {
                let params = brotli::enc::BrotliEncoderParams {
                    quality: level as i32,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &body[..], &mut out, &params)
                    .expect("writing to a Vec cannot fail");
            }
            Coding::Zstd => {
                out = zstd::bulk::compress(body, level as i32).expect("compressing in memory");
            }
        }
        out
    }

    /// The body with this coding removed, if it is valid and at most `limit` bytes.
    pub fn decode(self, body: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        // One byte past the limit tells "exactly the limit" from "more".
        let read = match self {
            Coding::Gzip => flate2::read::MultiGzDecoder::new(body)
                .take(limit + 1)
                .read_to_end(&mut out),
            Coding::Br => brotli::Decompressor::new(body, 4096)
                .take(limit + 1)
                .read_to_end(&mut out),
            Coding::Zstd => zstd::stream::read::Decoder::new(body)
                .and_then(|decoder| decoder.take(limit + 1).read_to_end(&mut out)),
        };
        match read {
            Err(_) => Err(DecodeError::Corrupt(self.token())),
            Ok(_) if out.len() as u64 > limit => Err(DecodeError::TooLarge(limit)),
            Ok(_) => Ok(out),
        }
    }
}

/// The entity tag of a form of the body other than the one the origin tagged (RFC 9110
/// §8.8.3: a strong tag names one sequence of bytes): the origin's opaque tag with
/// `-<coding>` inside the quotes, weak if it was weak. `None` for a value that is not an
/// entity tag (it is then left out rather than sent for bytes it does not name).
pub fn form_etag(origin: &HeaderValue, form: &str) -> Option<HeaderValue> {
    let text = origin.to_str().ok()?.trim();
    let (weak, opaque) = match text.strip_prefix("W/") {
        Some(rest) => ("W/", rest),
        None => ("", text),
    };
    let inner = opaque.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('"') {
        return None;
    }
    HeaderValue::from_str(&format!("{weak}\"{inner}-{form}\"")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(records: usize) -> Vec<u8> {
        let mut text = String::from("[");
        for i in 0..records {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!(
                "{{\"id\":{i},\"name\":\"user-{}\",\"score\":{}}}",
                i * 7919 % 1000,
                i * 31 % 97
            ));
        }
        text.push(']');
        text.into_bytes()
    }

    #[test]
    fn every_coding_round_trips_and_shrinks_json() {
        let body = json(500);
        for (coding, level) in [(Coding::Gzip, 6), (Coding::Br, 5), (Coding::Zstd, 3)] {
            let packed = coding.encode(&body, level);
            assert!(
                packed.len() * 3 < body.len(),
                "{coding:?}: {}",
                packed.len()
            );
            assert_eq!(coding.decode(&packed, body.len() as u64).unwrap(), body);
        }
    }

    #[test]
    fn decoding_stops_at_the_limit_and_refuses_garbage() {
        let bomb = Coding::Gzip.encode(&vec![0u8; 1 << 20], 9);
        assert!(bomb.len() < 2048);
        assert_eq!(
            Coding::Gzip.decode(&bomb, 1 << 16),
            Err(DecodeError::TooLarge(1 << 16))
        );
        assert_eq!(Coding::Gzip.decode(&bomb, 1 << 20).unwrap().len(), 1 << 20);
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            assert!(matches!(
                coding.decode(b"not compressed at all", 1000),
                Err(DecodeError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn other_forms_get_their_own_entity_tag() {
        let tag = |v: &'static str| form_etag(&HeaderValue::from_static(v), "gzip");
        assert_eq!(tag("\"v1\"").unwrap(), "\"v1-gzip\"");
        assert_eq!(tag("W/\"v1\"").unwrap(), "W/\"v1-gzip\"");
        assert_eq!(tag("v1"), None);
        assert_eq!(tag("\"a\"b\""), None);
    }

    #[test]
    fn content_encoding_names_one_known_coding() {
        assert_eq!(Coding::from_content_encoding(b"GZip"), Some(Coding::Gzip));
        assert_eq!(
            Coding::from_content_encoding(b" x-gzip "),
            Some(Coding::Gzip)
        );
        assert_eq!(Coding::from_content_encoding(b"br"), Some(Coding::Br));
        assert_eq!(Coding::from_content_encoding(b"gzip, br"), None);
        assert_eq!(Coding::from_content_encoding(b"identity"), None);
        assert_eq!(Coding::from_content_encoding(b"compress"), None);
    }
}

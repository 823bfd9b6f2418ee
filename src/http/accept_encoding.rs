//! Choosing the coding a stored body is sent in from the client's `Accept-Encoding`
//! (RFC 9110 §12.5.3): the stored coding when the client accepts it, else the identity form
//! (decoded), else nothing acceptable.
//!
//! The header is never part of the cache key: every client gets the same stored entry, and
//! this choice only picks which of its two forms goes out. A value that cannot be read gets
//! the identity form, which every client can read.

use super::coding::Coding;
use http::{HeaderMap, header};

/// Which form of an entry stored in some coding a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The stored bytes, with `Content-Encoding`.
    Coded,
    /// The body with its coding removed.
    Identity,
    /// Neither form is acceptable (`identity;q=0` or `*;q=0`, and the stored coding not
    /// listed): RFC 9110 §15.5.7, 406.
    NotAcceptable,
}

/// The form of a body stored in `stored` that this request accepts. No `Accept-Encoding`
/// gets the identity form: RFC 9110 allows any coding then, but clients that send none
/// (scripts, health checks, old libraries) are the ones least likely to decode one.
pub fn choose(request: &HeaderMap, stored: Coding) -> Choice {
    let Some(weights) = Weights::read(request, stored) else {
        return Choice::Identity;
    };
    let coded = weights.coded.or(weights.any).unwrap_or(0);
    let prefers_identity = weights.identity.is_some_and(|w| w > coded);
    if coded > 0 && !prefers_identity {
        Choice::Coded
    } else if weights.identity_acceptable() {
        Choice::Identity
    } else {
        Choice::NotAcceptable
    }
}

/// Whether the identity form is acceptable to this request (it is unless excluded).
pub fn identity_acceptable(request: &HeaderMap) -> bool {
    Weights::read(request, Coding::Gzip).is_none_or(|w| w.identity_acceptable())
}

/// The weights (thousandths) a request's `Accept-Encoding` gives the stored coding,
/// `identity` and `*`, each when listed.
struct Weights {
    coded: Option<u16>,
    identity: Option<u16>,
    any: Option<u16>,
}

impl Weights {
    /// `None` when the request has no `Accept-Encoding`, or one that cannot be read.
    fn read(request: &HeaderMap, stored: Coding) -> Option<Self> {
        let mut lines = request.get_all(header::ACCEPT_ENCODING).iter().peekable();
        lines.peek()?;
        let mut weights = Weights {
            coded: None,
            identity: None,
            any: None,
        };
        for line in lines {
            for element in line.to_str().ok()?.split(',') {
                let element = element.trim();
                if element.is_empty() {
                    continue;
                }
                let (name, weight) = parse_element(element)?;
                let slot = if name.eq_ignore_ascii_case(stored.token())
                    || (stored == Coding::Gzip && name.eq_ignore_ascii_case("x-gzip"))
                {
                    &mut weights.coded
                } else if name.eq_ignore_ascii_case("identity") {
                    &mut weights.identity
                } else if name == "*" {
                    &mut weights.any
                } else {
                    continue;
                };
                // Listed twice: the more favourable weight counts.
                *slot = Some(slot.map_or(weight, |w: u16| w.max(weight)));
            }
        }
        Some(weights)
    }

    /// Identity is acceptable unless excluded by name, or by `*;q=0` without naming it.
    fn identity_acceptable(&self) -> bool {
        self.identity
            .or(self.any.filter(|w| *w == 0))
            .unwrap_or(1000)
            > 0
    }
}

/// `coding *( OWS ";" OWS parameter )`, with its weight in thousandths (`q`, default 1).
/// `None` when it does not follow the grammar.
fn parse_element(element: &str) -> Option<(&str, u16)> {
    let mut parts = element.split(';');
    let name = parts.next()?.trim();
    let is_token = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !is_token(name) {
        return None;
    }
    let mut weight = 1000;
    for parameter in parts {
        let (key, value) = parameter.trim().split_once('=')?;
        if !is_token(key.trim_end()) {
            return None;
        }
        if key.trim_end().eq_ignore_ascii_case("q") {
            weight = qvalue(value.trim_start())?;
        }
    }
    Some((name, weight))
}

/// RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`, in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction.bytes().chain(std::iter::repeat(b'0')).take(3);
    let fraction = thousandths.fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match whole {
        "0" => Some(fraction),
        "1" if fraction == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn choose_for(values: &[&'static str], stored: Coding) -> Choice {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
        }
        choose(&headers, stored)
    }

    fn gzip(value: &'static str) -> Choice {
        choose_for(&[value], Coding::Gzip)
    }

    #[test]
    fn the_stored_coding_goes_to_clients_that_accept_it() {
        assert_eq!(gzip("gzip"), Choice::Coded);
        assert_eq!(gzip("gzip, deflate, br, zstd"), Choice::Coded);
        assert_eq!(gzip("GZIP"), Choice::Coded);
        assert_eq!(gzip("x-gzip"), Choice::Coded);
        assert_eq!(gzip("*"), Choice::Coded);
        assert_eq!(gzip("br;q=1.0, gzip;q=0.8, *;q=0.1"), Choice::Coded);
        assert_eq!(gzip("gzip ; q=0.5"), Choice::Coded);
        assert_eq!(gzip("identity;q=0, gzip"), Choice::Coded);
        assert_eq!(
            choose_for(&["deflate", "gzip"], Coding::Gzip),
            Choice::Coded
        );
        assert_eq!(choose_for(&["br"], Coding::Br), Choice::Coded);
        assert_eq!(choose_for(&["gzip"], Coding::Br), Choice::Identity);
    }

    #[test]
    fn others_get_the_identity_form() {
        assert_eq!(choose_for(&[], Coding::Gzip), Choice::Identity);
        assert_eq!(gzip(""), Choice::Identity);
        assert_eq!(gzip("identity"), Choice::Identity);
        assert_eq!(gzip("br, deflate"), Choice::Identity);
        assert_eq!(gzip("gzip;q=0"), Choice::Identity);
        assert_eq!(gzip("gzip;q=0.000"), Choice::Identity);
        assert_eq!(gzip("*;q=0, identity"), Choice::Identity);
        assert_eq!(gzip("gzip;q=0.5, identity;q=0.9"), Choice::Identity);
        assert_eq!(gzip("*, gzip;q=0"), Choice::Identity);
    }

    #[test]
    fn malformed_values_get_the_identity_form() {
        for value in [
            "gzip;q=2",
            "gzip;q=abc",
            "gzip;q=0.1234",
            "gzip;q",
            "gz ip",
            "gzip;;",
            "\"gzip\"",
            "gzip;q=1.5",
        ] {
            assert_eq!(gzip(value), Choice::Identity, "{value}");
        }
    }

    #[test]
    fn nothing_is_acceptable_when_identity_is_excluded_too() {
        assert_eq!(gzip("identity;q=0"), Choice::NotAcceptable);
        assert_eq!(gzip("*;q=0"), Choice::NotAcceptable);
        assert_eq!(gzip("br, identity;q=0"), Choice::NotAcceptable);
        assert_eq!(gzip("gzip;q=0, identity;q=0"), Choice::NotAcceptable);
        let excluded = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            !identity_acceptable(&headers)
        };
        assert!(excluded("gzip, identity;q=0") && excluded("*;q=0"));
        assert!(!excluded("gzip") && !excluded("*;q=0, identity") && !excluded("q=="));
    }
}

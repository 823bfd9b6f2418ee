//! The request's authority: which host the client asked for (RFC 9110 §7.2).
//!
//! Origins build absolute URLs and redirects from `Host` (Flask's `url_for(_external=True)`,
//! `request.url`) and pick a tenant by it, so the authority shapes the response as much as the
//! path does. The proxy therefore reads it once, strictly, and uses that one value for the
//! cache key (`#host=` after the base, see `key::append_authority`) and as the `Host` the
//! origin sees. A request whose authority cannot be read one way only is refused with 400
//! before anything is sent:
//!
//! - HTTP/1.1 without `Host`, or any request with two `Host` lines (RFC 9112 §3.2);
//! - a value that is not `host[:port]`: userinfo (`a@b`), a path (`b/x`), a list (`a, b`),
//!   spaces, a port that is not a number (`a:abc`), an unclosed IPv6 literal (`[::1`);
//! - on HTTP/2, `:authority` is the authority (RFC 9113 §8.3.1), and a `Host` that names
//!   another one is malformed.
//!
//! Stricter than RFC 3986 on purpose: a reg-name may hold sub-delimiters (`,`, `;`, `*`…) and
//! percent-escapes, but no DNS name does, and those are where servers disagree on what a
//! `Host` means (`a,b` read as a list by one, a name by another).
//!
//! The form kept is lowercased, without a trailing dot and without the default port `:80`
//! (the proxy's listener speaks plain HTTP), so `Example.COM:80` and `example.com` share
//! entries and every spelling of one host reaches the origin the same way.

use http::header::{self, HeaderMap};
use http::{Uri, Version};
use std::net::Ipv6Addr;

/// Why a request's authority was refused (the 400's text).
pub type Rejected = &'static str;

/// The request's authority in normal form, `None` when it has none (HTTP/1.0 without `Host`,
/// or an empty `Host`, which RFC 9112 §3.2 allows for a target without an authority).
pub fn of_request(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<String>, Rejected> {
    let mut lines = headers.get_all(header::HOST).iter();
    let host = lines.next();
    if lines.next().is_some() {
        return Err("more than one Host header");
    }
    let host = match host {
        Some(value) => Some(normalize(value.as_bytes())?),
        None => None,
    };
    if version == Version::HTTP_2 {
        return match uri.authority() {
            Some(authority) => {
                let authority =
                    normalize(authority.as_str().as_bytes())?.ok_or("an empty :authority")?;
                match host {
                    Some(Some(host)) if host != authority => {
                        Err("Host names another authority than :authority")
                    }
                    _ => Ok(Some(authority)),
                }
            }
            None => Ok(host.flatten()),
        };
    }
    if host.is_none() && version >= Version::HTTP_11 {
        return Err("an HTTP/1.1 request must have a Host header");
    }
    // Absolute form (`GET http://a.example/ HTTP/1.1`): the target's authority wins over Host
    // (RFC 9112 §3.2.2), which must still be valid.
    if let Some(authority) = uri.authority() {
        return normalize(authority.as_str().as_bytes())
            .map(|a| a.ok_or("an empty authority in the request target"))?
            .map(Some);
    }
    Ok(host.flatten())
}

/// `host[:port]` in normal form; `None` for an empty value; an error for anything else.
pub fn normalize(value: &[u8]) -> Result<Option<String>, Rejected> {
    const INVALID: Rejected = "the Host is not a valid host[:port]";
    if value.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(value).map_err(|_| INVALID)?;
    let (host, port) = if let Some(literal) = text.strip_prefix('[') {
        let (address, rest) = literal.split_once(']').ok_or(INVALID)?;
        let address: Ipv6Addr = address.parse().map_err(|_| INVALID)?;
        (format!("[{address}]"), rest)
    } else {
        let end = text.find(':').unwrap_or(text.len());
        let name = text[..end].strip_suffix('.').unwrap_or(&text[..end]);
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !valid {
            return Err(INVALID);
        }
        (name.to_ascii_lowercase(), &text[end..])
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        None => return Err(INVALID),
        // `host:` is allowed by RFC 3986 (an empty port means the default).
        Some("") => None,
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some(digits.parse::<u16>().map_err(|_| INVALID)?)
        }
        Some(_) => return Err(INVALID),
    };
    Ok(Some(match port {
        None | Some(80) => host,
        Some(port) => format!("{host}:{port}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn norm(text: &str) -> Result<Option<String>, Rejected> {
        normalize(text.as_bytes())
    }

    #[test]
    fn one_host_has_one_spelling() {
        for (given, kept) in [
            ("Example.COM", "example.com"),
            ("example.com:80", "example.com"),
            ("example.com.:80", "example.com"),
            ("example.com:", "example.com"),
            ("example.com:8080", "example.com:8080"),
            ("[::1]", "[::1]"),
            ("[0:0::1]:8080", "[::1]:8080"),
            ("10.0.0.1:80", "10.0.0.1"),
        ] {
            assert_eq!(norm(given).unwrap().as_deref(), Some(kept), "{given}");
        }
        assert_eq!(norm("").unwrap(), None);
    }

    #[test]
    fn refuses_what_is_not_host_and_port() {
        for bad in [
            "a@b",
            "b/x",
            "a b",
            "a:abc",
            "[::1",
            "a, b",
            "a,b",
            "a;b",
            "a%41",
            ":80",
            ".",
            "a:99999",
            "[v1.x]",
            "a:80:80",
            "é.example",
            "[::1]x",
        ] {
            assert!(norm(bad).is_err(), "{bad}");
        }
    }

    fn headers(hosts: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for host in hosts {
            map.append(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        map
    }

    #[test]
    fn reads_the_authority_as_each_version_carries_it() {
        let origin_form: Uri = "/x".parse().unwrap();
        let h11 = Version::HTTP_11;
        assert_eq!(
            of_request(h11, &origin_form, &headers(&["A.example"])).unwrap(),
            Some("a.example".into())
        );
        assert!(of_request(h11, &origin_form, &headers(&[])).is_err());
        assert!(of_request(h11, &origin_form, &headers(&["a", "a"])).is_err());
        assert_eq!(
            of_request(Version::HTTP_10, &origin_form, &headers(&[])).unwrap(),
            None
        );
        let absolute: Uri = "http://b.example/x".parse().unwrap();
        assert_eq!(
            of_request(h11, &absolute, &headers(&["a.example"])).unwrap(),
            Some("b.example".into())
        );
        let h2 = Version::HTTP_2;
        assert_eq!(
            of_request(h2, &absolute, &headers(&[])).unwrap(),
            Some("b.example".into())
        );
        assert!(of_request(h2, &absolute, &headers(&["a.example"])).is_err());
        assert!(of_request(h2, &"http://u@b.example/".parse().unwrap(), &headers(&[])).is_err());
        assert_eq!(
            of_request(h2, &origin_form, &headers(&["a.example"])).unwrap(),
            Some("a.example".into())
        );
    }
}

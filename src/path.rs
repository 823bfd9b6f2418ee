//! Request path normalisation, done once before routing.
//!
//! Percent-escapes of unreserved characters are decoded (`/api/%61bc` is `/api/abc`) and the
//! remaining escapes are upper-cased, as RFC 3986 §6.2.2 allows, so that one resource
//! always meets the same route and key. Escapes of reserved characters (`%2F`) stay escaped:
//! they are data, not structure.

use crate::key::is_unreserved;
use std::borrow::Cow;

/// The normalised form of a request path.
pub fn normalize(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(value) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            if is_unreserved(value) {
                out.push(value as char);
            } else {
                out.push('%');
                out.push_str(&format!("{value:02X}"));
            }
            i += 3;
            continue;
        }
        // Paths are ASCII in a valid request-target; copy byte runs through as characters.
        let start = i;
        i += 1;
        while i < bytes.len() && bytes[i] != b'%' {
            i += 1;
        }
        out.push_str(&path[start..i]);
    }
    Cow::Owned(out)
}

/// The `/`-separated segments after the leading slash (`/` gives one empty segment).
pub fn segments(path: &str) -> Vec<&str> {
    path.strip_prefix('/').unwrap_or(path).split('/').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_unreserved_and_uppercases_the_rest() {
        assert_eq!(normalize("/api/%61bc%2f%7E"), "/api/abc%2F~");
        assert_eq!(normalize("/plain/path"), "/plain/path");
        assert!(matches!(normalize("/plain"), Cow::Borrowed(_)));
        assert_eq!(normalize("/bad%zz"), "/bad%zz");
    }

    #[test]
    fn splits_segments() {
        assert_eq!(segments("/"), [""]);
        assert_eq!(segments("/a/b/"), ["a", "b", ""]);
    }
}

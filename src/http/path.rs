//! Request path normalisation, done once before routing; the origin receives the result.
//!
//! Web cache deception works when the cache and the origin read one path two ways: the
//! cache sees `/static/%2e%2e/api/users/42/profile` as a static file, the origin serves the
//! private profile, and the cache stores it for everyone. So the proxy decides what a path
//! means, routes and keys on that, and sends exactly that path to the origin:
//!
//! - percent-escapes of unreserved characters are decoded (`%61` is `a`, `%2e` is `.`) and
//!   the remaining escapes upper-cased (RFC 3986 §6.2.2); a `%` that starts no escape
//!   becomes `%25`, so no decoding step (here or at the origin) can build a new escape;
//! - runs of `/` become one (`//api` is `/api`), as Werkzeug and most servers merge them;
//! - dot segments are resolved (RFC 3986 §5.2.4), including `%2e%2e` and the `..;x` form
//!   that Java servers read as `..`; a path cannot climb above `/`;
//! - an encoded `/` or `\` (`%2F`, `%5C`) is rejected: WSGI servers decode `%2F` into a real
//!   slash before Flask routes, so the origin would see segments the proxy did not;
//!   encoded control characters (`%00`–`%1F`, `%7F`) are rejected too;
//! - everything else is data: `;` inside a segment, trailing dots (`profile.`), and case
//!   (`/API` is not `/api`, as in Flask) match routes exactly as written and reach the origin
//!   unchanged, so they can only ever meet the route the origin will also use.

use crate::http::escape::is_unreserved;
use http::Uri;
use http::uri::PathAndQuery;
use std::borrow::Cow;

/// Why a request path is refused (400) instead of normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("an encoded '/' or '\\' (%2F, %5C) in the path")]
    EncodedSeparator,
    #[error("an encoded control character in the path")]
    ControlCharacter,
    #[error("a '\\' in the path")]
    Backslash,
}

/// The normalised form of a request path (see the module documentation).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, Rejected> {
    if path.contains('\\') {
        return Err(Rejected::Backslash);
    }
    let decoded = decode_unreserved(path)?;
    if !needs_segment_work(&decoded) {
        return Ok(decoded);
    }
    Ok(Cow::Owned(resolve_segments(&decoded)))
}

/// The request URI with its path normalised and the rest (scheme, authority, query) kept;
/// `None` when the path is normal already (most requests: nothing is copied for them).
pub fn normalize_uri(uri: &Uri) -> Result<Option<Uri>, Rejected> {
    let path = normalize(uri.path())?;
    if path == uri.path() {
        return Ok(None);
    }
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.into_owned(),
    };
    let mut parts = uri.clone().into_parts();
    // The normalised path is made of the original's characters and '/', so it parses.
    parts.path_and_query =
        Some(PathAndQuery::try_from(target).expect("a normalised path is a valid request target"));
    Ok(Some(Uri::from_parts(parts).expect("only the path changed")))
}

/// The `/`-separated segments after the leading slash (`/` gives one empty segment).
pub fn segments(path: &str) -> Vec<&str> {
    path.strip_prefix('/').unwrap_or(path).split('/').collect()
}

/// Decodes unreserved escapes, upper-cases the others, refuses the ones that would change
/// the path's structure at the origin.
fn decode_unreserved(path: &str) -> Result<Cow<'_, str>, Rejected> {
    if !path.contains('%') {
        return Ok(Cow::Borrowed(path));
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
            match value {
                b'/' | b'\\' => return Err(Rejected::EncodedSeparator),
                0..=0x1F | 0x7F => return Err(Rejected::ControlCharacter),
                _ if is_unreserved(value) => out.push(value as char),
                _ => {
                    out.push('%');
                    out.push_str(&format!("{value:02X}"));
                }
            }
            i += 3;
            continue;
        }
        if bytes[i] == b'%' {
            // A '%' that starts no escape is data: escaped, so that `%4%41` cannot become
            // the escape `%4A` here and be decoded once more by the origin.
            out.push_str("%25");
            i += 1;
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
    Ok(Cow::Owned(out))
}

/// Whether the path has empty or dot segments to resolve (cheap check for the common case).
/// Targets that are not paths (`*` of `OPTIONS *`, CONNECT's authority) are left alone.
fn needs_segment_work(path: &str) -> bool {
    path.starts_with('/') && (path.contains("//") || path.split('/').any(is_dot_segment))
}

/// `.`, `..`, and the `.;x` / `..;x` forms some servers read as them.
fn is_dot_segment(segment: &str) -> bool {
    let name = segment.split_once(';').map_or(segment, |(name, _)| name);
    name == "." || name == ".."
}

/// Merges empty segments and resolves dot segments; the result starts with `/`, and ends
/// with `/` when the input did or when its last segment was a dot segment.
fn resolve_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let pieces: Vec<&str> = path.split('/').collect();
    let mut trailing_slash = false;
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        if piece.is_empty() {
            trailing_slash = last && i > 0;
            continue;
        }
        trailing_slash = false;
        if is_dot_segment(piece) {
            if piece.split(';').next() == Some("..") {
                kept.pop();
            }
            trailing_slash = last;
            continue;
        }
        kept.push(piece);
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> String {
        normalize(path).unwrap().into_owned()
    }

    #[test]
    fn decodes_unreserved_and_uppercases_the_rest() {
        assert_eq!(norm("/api/%61bc%3a%7E"), "/api/abc%3A~");
        assert_eq!(norm("/plain/path"), "/plain/path");
        assert!(matches!(normalize("/plain"), Ok(Cow::Borrowed(_))));
        assert_eq!(norm("/bad%zz"), "/bad%25zz");
        // A stray '%' never combines with what follows into a new escape.
        assert_eq!(norm("/%4%41"), "/%254A");
        assert_eq!(normalize("/x%2%46y"), Ok(Cow::Owned("/x%252Fy".into())));
    }

    #[test]
    fn resolves_dot_segments_and_merges_slashes() {
        assert_eq!(norm("/static/../api/users/42"), "/api/users/42");
        assert_eq!(norm("/static/%2e%2e/api/%2E/users"), "/api/users");
        assert_eq!(norm("/static/..;x/api"), "/api");
        assert_eq!(norm("/../../etc"), "/etc");
        assert_eq!(norm("//api//users///42"), "/api/users/42");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/"), "/a/b/");
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/a/..."), "/a/...");
        assert_eq!(norm("/a/profile."), "/a/profile.");
        assert_eq!(norm("/a/x;y"), "/a/x;y");
        assert_eq!(norm("/API/Users"), "/API/Users");
    }

    #[test]
    fn refuses_encoded_separators_and_controls() {
        assert_eq!(normalize("/a%2Fb"), Err(Rejected::EncodedSeparator));
        assert_eq!(normalize("/a%2fb"), Err(Rejected::EncodedSeparator));
        assert_eq!(normalize("/a%5Cb"), Err(Rejected::EncodedSeparator));
        assert_eq!(normalize("/a%00b"), Err(Rejected::ControlCharacter));
        assert_eq!(normalize("/a%0d%0a"), Err(Rejected::ControlCharacter));
        assert_eq!(normalize("/a\\b"), Err(Rejected::Backslash));
    }

    #[test]
    fn keeps_the_query_and_authority() {
        let uri: Uri = "http://h:1//a/./b?x=%2F".parse().unwrap();
        assert_eq!(
            normalize_uri(&uri).unwrap().unwrap().to_string(),
            "http://h:1/a/b?x=%2F"
        );
        let normal: Uri = "/a/b?x=1".parse().unwrap();
        assert_eq!(normalize_uri(&normal), Ok(None));
    }

    #[test]
    fn splits_segments() {
        assert_eq!(segments("/"), [""]);
        assert_eq!(segments("/a/b/"), ["a", "b", ""]);
    }
}

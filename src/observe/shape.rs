//! The shape of a request path: its ids folded into typed parameters, so that
//! `/users/42/orders/9b2e…` and `/users/7/orders/51aa…` count as one kind of request,
//! `/users/<int>/orders/<uuid>`, and the shape can become a route pattern.
//!
//! Only the path is read, never the query: query values are where tokens, e-mail addresses
//! and search terms live, and the shape is shown to anyone who can read the status page. For
//! the same reason any segment that is not plainly a word (long, percent-encoded, mixing
//! many digits into letters) is folded into `<token>` rather than echoed.

/// Segments kept; a longer path ends in `<rest>` (and becomes `<path:rest>` in a pattern).
pub const MAX_SEGMENTS: usize = 12;

/// A segment this long is an opaque value, whatever its characters.
const LONG_TOKEN: usize = 20;

/// One folded segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    Int,
    Float,
    Uuid,
    Hex,
    Token,
}

impl Fold {
    /// How the shape shows it.
    pub fn placeholder(self) -> &'static str {
        match self {
            Fold::Int => "<int>",
            Fold::Float => "<float>",
            Fold::Uuid => "<uuid>",
            Fold::Hex => "<hex>",
            Fold::Token => "<token>",
        }
    }
}

/// The shape of a (normalised) path: `/users/<int>/orders/<uuid>`.
pub fn of(path: &str) -> String {
    let mut shape = String::with_capacity(path.len().min(128));
    let segments = path.strip_prefix('/').unwrap_or(path).split('/');
    for (i, segment) in segments.enumerate() {
        shape.push('/');
        if i == MAX_SEGMENTS {
            shape.push_str("<rest>");
            break;
        }
        match fold(segment) {
            Some(fold) => shape.push_str(fold.placeholder()),
            None => shape.push_str(segment),
        }
    }
    shape
}

/// What a segment is folded into, or `None` for a word kept as it is.
pub fn fold(segment: &str) -> Option<Fold> {
    if segment.is_empty() {
        return None;
    }
    let bytes = segment.as_bytes();
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    if digits == bytes.len() {
        return Some(Fold::Int);
    }
    if let Some((whole, fraction)) = segment.split_once('.')
        && [whole, fraction]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(Fold::Float);
    }
    if is_uuid(bytes) {
        return Some(Fold::Uuid);
    }
    if bytes.len() >= 8 && digits > 0 && bytes.iter().all(u8::is_ascii_hexdigit) {
        return Some(Fold::Hex);
    }
    let wordlike = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
    if !wordlike || bytes.len() >= LONG_TOKEN || digits >= 3 {
        return Some(Fold::Token);
    }
    None
}

/// 8-4-4-4-12 hex digits, either case (what Werkzeug's `uuid` converter takes).
fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_fold_into_typed_parameters() {
        assert_eq!(
            of("/users/42/orders/9B2E1C3A-0000-4000-8000-00000000002A"),
            "/users/<int>/orders/<uuid>"
        );
        assert_eq!(of("/blobs/5f3a9c0d1e2b"), "/blobs/<hex>");
        assert_eq!(of("/prices/12.50"), "/prices/<float>");
        assert_eq!(of("/api/v2/items/"), "/api/v2/items/");
        assert_eq!(of("/"), "/");
        assert_eq!(of("/static/app.min.js"), "/static/app.min.js");
    }

    #[test]
    fn opaque_and_encoded_segments_are_never_echoed() {
        for secret in [
            "/reset/eyJhbGciOiJIUzI1NiJ9abc",
            "/users/alice%40example.com",
            "/tokens/ab12xy34",
            "/a/x@y",
        ] {
            let shape = of(secret);
            assert!(shape.ends_with("<token>"), "{secret}: {shape}");
        }
    }

    #[test]
    fn long_paths_end_in_rest() {
        let path = "/a".repeat(40);
        let shape = of(&path);
        assert_eq!(shape, format!("{}/<rest>", "/a".repeat(MAX_SEGMENTS)));
    }
}

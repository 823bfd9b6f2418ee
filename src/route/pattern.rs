//! Path patterns: `/api/credentials/{id}`, `/files/{*rest}`, and Flask's `<int:id>`.
//!
//! Patterns are matched segment by segment against a normalised request path. Each segment
//! has a rank (static beats `int`, which beats a plain parameter, which beats a catch-all);
//! comparing patterns by their ranks, left to right, is what "the most specific route wins"
//! means here, whatever order the routes appear in the file.

use std::cmp::Ordering;
use std::fmt;

/// One `/`-separated piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text that must equal the request's segment.
    Static(String),
    /// `{name}`, `<name>`, `<string:name>`: any one non-empty segment.
    Param { name: String },
    /// `<int:name>`: one segment of ASCII digits only, as Flask's `int` converter.
    Int { name: String },
    /// `{*name}`, `<path:name>`: the rest of the path (one or more segments), last only.
    CatchAll { name: String },
}

impl Segment {
    /// Lower is more specific.
    fn rank(&self) -> u8 {
        match self {
            Segment::Static(_) => 0,
            Segment::Int { .. } => 1,
            Segment::Param { .. } => 2,
            Segment::CatchAll { .. } => 3,
        }
    }

    fn param_name(&self) -> Option<&str> {
        match self {
            Segment::Static(_) => None,
            Segment::Param { name } | Segment::Int { name } | Segment::CatchAll { name } => {
                Some(name)
            }
        }
    }
}

/// A parsed path pattern.
#[derive(Debug, Clone)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
}

/// Parameters captured by a match, in pattern order; values borrow the request path.
pub type Params<'p> = Vec<(&'p str, &'p str)>;

impl PathPattern {
    /// Parses the path part of a route's `match`. The error says what would be valid.
    pub fn parse(source: &str) -> Result<Self, String> {
        let Some(rest) = source.strip_prefix('/') else {
            return Err(format!("path {source:?} must start with '/'"));
        };
        let mut segments = Vec::new();
        let pieces: Vec<&str> = rest.split('/').collect();
        for (i, piece) in pieces.iter().enumerate() {
            let segment = parse_segment(piece)?;
            if matches!(segment, Segment::CatchAll { .. }) && i + 1 != pieces.len() {
                return Err(format!(
                    "catch-all {piece:?} must be the last segment of {source:?}"
                ));
            }
            if let Some(name) = segment.param_name()
                && segments
                    .iter()
                    .any(|s: &Segment| s.param_name() == Some(name))
            {
                return Err(format!("parameter {name:?} appears twice in {source:?}"));
            }
            segments.push(segment);
        }
        Ok(Self {
            source: source.to_string(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The segments, in order (`cachalot check --flask-routes` compares them with Flask's).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Parameter names, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(Segment::param_name)
    }

    /// Matches the segments of a normalised request path (see [`crate::path`]).
    pub fn matches<'p>(&'p self, path: &'p str, segments: &[&'p str]) -> Option<Params<'p>> {
        let mut params = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::CatchAll { name } => {
                    let first = segments.get(i)?;
                    // The rest of the path, as one slice of the original string.
                    let start = first.as_ptr() as usize - path.as_ptr() as usize;
                    let rest = &path[start..];
                    if rest.is_empty() {
                        return None;
                    }
                    params.push((name.as_str(), rest));
                    return Some(params);
                }
                Segment::Static(text) => {
                    if segments.get(i)? != text {
                        return None;
                    }
                }
                Segment::Param { name } => {
                    let value = segments.get(i)?;
                    if value.is_empty() {
                        return None;
                    }
                    params.push((name.as_str(), *value));
                }
                Segment::Int { name } => {
                    let value = segments.get(i)?;
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    params.push((name.as_str(), *value));
                }
            }
        }
        (segments.len() == self.segments.len()).then_some(params)
    }

    /// Orders patterns from most to least specific.
    pub fn specificity(&self, other: &Self) -> Ordering {
        let mine = self.segments.iter().map(Segment::rank);
        let theirs = other.segments.iter().map(Segment::rank);
        mine.cmp(theirs)
    }

    /// True when both patterns match exactly the same paths (names of parameters aside).
    pub fn same_shape(&self, other: &Self) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Segment::Static(x), Segment::Static(y)) => x == y,
                    _ => a.rank() == b.rank() && !matches!(a, Segment::Static(_)),
                })
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_segment(piece: &str) -> Result<Segment, String> {
    if let Some(inner) = piece.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        return match inner.strip_prefix('*') {
            Some(name) => Ok(Segment::CatchAll {
                name: param_name(name, piece)?,
            }),
            None => Ok(Segment::Param {
                name: param_name(inner, piece)?,
            }),
        };
    }
    if let Some(inner) = piece.strip_prefix('<').and_then(|p| p.strip_suffix('>')) {
        let (converter, name) = inner.split_once(':').unwrap_or(("string", inner));
        let name = param_name(name, piece)?;
        return match converter {
            "string" => Ok(Segment::Param { name }),
            "int" => Ok(Segment::Int { name }),
            "path" => Ok(Segment::CatchAll { name }),
            other => Err(format!(
                "unknown converter {other:?} in {piece:?}; valid: <name>, <string:name>, <int:name>, <path:name>"
            )),
        };
    }
    if piece.contains(['{', '}', '<', '>']) {
        return Err(format!(
            "segment {piece:?}: a parameter must be a whole segment, as {{name}}, {{*name}}, <name>, <int:name> or <path:name>"
        ));
    }
    Ok(Segment::Static(piece.to_string()))
}

fn param_name(name: &str, piece: &str) -> Result<String, String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "parameter name {name:?} in {piece:?} must be letters, digits and '_', not starting with a digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<&str> {
        path[1..].split('/').collect()
    }

    #[test]
    fn parses_openapi_and_flask_forms() {
        let p = PathPattern::parse("/api/<int:user>/files/{*rest}").unwrap();
        assert_eq!(p.param_names().collect::<Vec<_>>(), ["user", "rest"]);
        let path = "/api/42/files/a/b.txt";
        assert_eq!(
            p.matches(path, &segs(path)).unwrap(),
            [("user", "42"), ("rest", "a/b.txt")]
        );
        let path = "/api/x42/files/a";
        assert!(p.matches(path, &segs(path)).is_none());
    }

    #[test]
    fn catch_all_needs_at_least_something() {
        let p = PathPattern::parse("/auth/{*rest}").unwrap();
        for path in ["/auth", "/auth/"] {
            assert!(p.matches(path, &segs(path)).is_none(), "{path}");
        }
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in [
            "api/x",
            "/a/{*rest}/b",
            "/a/{id}/{id}",
            "/a/file.{ext}",
            "/a/<float:x>",
            "/a/{1x}",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn static_beats_int_beats_param_beats_catch_all() {
        let order = ["/a/b", "/a/<int:x>", "/a/{x}", "/a/{*x}"];
        let parsed: Vec<_> = order
            .iter()
            .map(|p| PathPattern::parse(p).unwrap())
            .collect();
        for pair in parsed.windows(2) {
            assert_eq!(pair[0].specificity(&pair[1]), Ordering::Less);
        }
    }
}

//! Path patterns: `/api/credentials/{id}`, `/files/{*rest}`, and Flask's `<int:id>`.
//!
//! Patterns are matched segment by segment against a normalised request path. Each segment
//! has a rank (static beats a typed converter, which beats a plain parameter, which beats a
//! catch-all); comparing patterns by their ranks, left to right, is what "the most specific
//! route wins" means here, whatever order the routes appear in the file.
//!
//! Typed parameters accept what Werkzeug's converters accept, and no more: a value the
//! converter would refuse is not a match (Flask would try its next rule, then 404). What
//! they accept has many spellings of one value (`42`, `0042`, fullwidth `４２` are all
//! `int 42` to the view), so a match yields the value in one canonical form (see
//! [`crate::policy::route::canonical`]): keys, tags and invalidations built from it are the same
//! for every alias, and the origin is asked for the canonical path, so what is stored
//! under a key is the origin's answer for exactly that key.

use super::canonical::{self, Converter};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

/// One `/`-separated piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text that must equal the request's segment.
    Static(String),
    /// `{name}`, `<name>`, `<string:name>`: any one non-empty segment; with `case_insensitive`
    /// (the route's `params.<name>.case = "insensitive"`) its value is lower-cased.
    Param {
        name: String,
        case_insensitive: bool,
    },
    /// `<int:name>`, `<float:name>`, `<uuid:name>`: one segment the converter accepts.
    Typed { name: String, converter: Converter },
    /// `{*name}`, `<path:name>`: the rest of the path (one or more segments), last only.
    CatchAll { name: String },
}

impl Segment {
    /// Lower is more specific.
    fn rank(&self) -> u8 {
        match self {
            Segment::Static(_) => 0,
            Segment::Typed { .. } => 1,
            Segment::Param { .. } => 2,
            Segment::CatchAll { .. } => 3,
        }
    }

    fn param_name(&self) -> Option<&str> {
        match self {
            Segment::Static(_) => None,
            Segment::Param { name, .. }
            | Segment::Typed { name, .. }
            | Segment::CatchAll { name } => Some(name),
        }
    }
}

/// A parsed path pattern.
#[derive(Debug, Clone)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
}

/// Parameters captured by a match, in pattern order, each in its canonical form: borrowed
/// from the request path when it is canonical already (the usual case), owned when not.
pub type Params<'p> = Vec<(&'p str, Cow<'p, str>)>;

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

    /// The segment that captures parameter `name`.
    pub fn param(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.param_name() == Some(name))
    }

    /// Makes a string parameter case-insensitive; false if `name` is not one.
    pub fn fold_case(&mut self, name: &str) -> bool {
        self.segments.iter_mut().any(|segment| match segment {
            Segment::Param {
                name: n,
                case_insensitive,
            } if n == name => {
                *case_insensitive = true;
                true
            }
            _ => false,
        })
    }

    /// The request path with every parameter in its canonical form, or `None` when it is
    /// canonical already (checked first, without building anything: that is every request
    /// but an alias's). `params` are this pattern's match of `segments`.
    pub fn canonical_path(&self, segments: &[&str], params: &Params<'_>) -> Option<String> {
        let single = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Segment::Param { .. } | Segment::Typed { .. }));
        let changed = single
            .zip(params)
            .any(|((i, _), (_, value))| segments.get(i) != Some(&value.as_ref()));
        if !changed {
            return None;
        }
        let mut out = String::new();
        let mut values = params.iter().map(|(_, v)| v.as_ref());
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Static(text) => out.push_str(text),
                Segment::Param { .. } | Segment::Typed { .. } | Segment::CatchAll { .. } => {
                    out.push_str(values.next()?);
                }
            }
        }
        Some(out)
    }

    /// Matches the segments of a normalised request path (see [`crate::http::path`]).
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
                    params.push((name.as_str(), Cow::Borrowed(rest)));
                    return Some(params);
                }
                Segment::Static(text) => {
                    if segments.get(i)? != text {
                        return None;
                    }
                }
                Segment::Param {
                    name,
                    case_insensitive,
                } => {
                    let value = segments.get(i)?;
                    if value.is_empty() {
                        return None;
                    }
                    let value = if *case_insensitive {
                        canonical::lowercase(value)
                    } else {
                        Cow::Borrowed(*value)
                    };
                    params.push((name.as_str(), value));
                }
                Segment::Typed { name, converter } => {
                    let value = converter.canonical(segments.get(i)?)?;
                    params.push((name.as_str(), value));
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
                    // Converters accept disjoint sets of segments (int has no '.', float
                    // has one, uuid has '-'): two of them only overlap when they are one.
                    (Segment::Typed { converter: x, .. }, Segment::Typed { converter: y, .. }) => {
                        x == y
                    }
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
                case_insensitive: false,
            }),
        };
    }
    if let Some(inner) = piece.strip_prefix('<').and_then(|p| p.strip_suffix('>')) {
        let (converter, name) = inner.split_once(':').unwrap_or(("string", inner));
        let name = param_name(name, piece)?;
        return match converter {
            "string" => Ok(Segment::Param {
                name,
                case_insensitive: false,
            }),
            "path" => Ok(Segment::CatchAll { name }),
            other => match Converter::named(other) {
                Some(converter) => Ok(Segment::Typed { name, converter }),
                None => Err(format!(
                    "unknown converter {other:?} in {piece:?}; valid: <name>, <string:name>, <int:name>, <float:name>, <uuid:name>, <path:name> (converter arguments such as <int(signed=True):x> are not supported)"
                )),
            },
        };
    }
    if piece.contains(['{', '}', '<', '>']) {
        return Err(format!(
            "segment {piece:?}: a parameter must be a whole segment, as {{name}}, {{*name}}, <name>, <int:name>, <float:name>, <uuid:name> or <path:name>"
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
            [("user", Cow::from("42")), ("rest", Cow::from("a/b.txt"))]
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
            "/a/<decimal:x>",
            "/a/<int(signed=True):x>",
            "/a/{1x}",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn static_beats_int_beats_param_beats_catch_all() {
        let order = ["/a/b", "/a/<uuid:x>", "/a/{x}", "/a/{*x}"];
        let parsed: Vec<_> = order
            .iter()
            .map(|p| PathPattern::parse(p).unwrap())
            .collect();
        for pair in parsed.windows(2) {
            assert_eq!(pair[0].specificity(&pair[1]), Ordering::Less);
        }
    }

    #[test]
    fn aliases_match_with_their_canonical_value_and_path() {
        let p = PathPattern::parse("/api/orders/<int:id>/items/<uuid:item>").unwrap();
        let path =
            "/api/orders/%EF%BC%90%EF%BC%94%EF%BC%92/items/0E8400E2-29B4-41D4-A716-446655440000";
        let segments = segs(path);
        let params = p.matches(path, &segments).unwrap();
        assert_eq!(params[0].1, "42");
        assert_eq!(params[1].1, "0e8400e2-29b4-41d4-a716-446655440000");
        assert_eq!(
            p.canonical_path(&segments, &params).as_deref(),
            Some("/api/orders/42/items/0e8400e2-29b4-41d4-a716-446655440000")
        );
        let path = "/api/orders/42/items/0e8400e2-29b4-41d4-a716-446655440000";
        let segments = segs(path);
        let params = p.matches(path, &segments).unwrap();
        assert_eq!(p.canonical_path(&segments, &params), None);
    }

    #[test]
    fn case_insensitive_params_fold_and_others_do_not() {
        let mut p = PathPattern::parse("/u/{login}/{*rest}").unwrap();
        assert!(p.fold_case("login"));
        assert!(!p.fold_case("rest"));
        let path = "/u/Alice%C3%84/X";
        let segments = segs(path);
        let params = p.matches(path, &segments).unwrap();
        assert_eq!(params[0].1, "alice%C3%A4");
        assert_eq!(params[1].1, "X");
        assert_eq!(
            p.canonical_path(&segments, &params).as_deref(),
            Some("/u/alice%C3%A4/X")
        );
    }
}

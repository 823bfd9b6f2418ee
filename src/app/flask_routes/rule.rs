//! Werkzeug URL rules (`/api/<int:id>/files/<path:rest>`): what cachalot can say of them.
//!
//! Two questions are asked of a rule. Which cachalot pattern matches exactly the same paths
//! (`init`), and can a policy route match any path the rule matches (`check --flask-routes`).
//! The first must be exact or nothing: a pattern wider than the rule (a `<uuid:id>` written
//! as `<id>`) would let a cached route catch paths Flask answers with another view or a 404,
//! so such rules are only offered, commented, with the reason. The second is answered with
//! the converters' real syntax, so a literal `/api/items/new` is not taken for `<int:id>`.

use crate::policy::route::{PathPattern, Segment};

/// A piece of one `/`-separated segment of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Static(String),
    Var {
        converter: String,
        args: Option<String>,
        name: String,
    },
}

/// A parsed rule: its segments, each a sequence of parts (`<name>.<ext>` is two vars).
#[derive(Debug, Clone)]
pub struct Rule {
    segments: Vec<Vec<Part>>,
}

/// What cachalot can make of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Translation {
    /// A pattern matching exactly the rule's paths.
    Exact(String),
    /// No exact pattern; why, and the nearest wider one if each segment has one.
    Inexact {
        reason: String,
        nearest: Option<String>,
    },
}

impl Rule {
    /// Parses Werkzeug's syntax: `<name>`, `<converter:name>`, `<converter(args):name>`.
    pub fn parse(rule: &str) -> Result<Self, String> {
        let Some(rest) = rule.strip_prefix('/') else {
            return Err(format!("rule {rule:?} must start with '/'"));
        };
        let mut segments = vec![Vec::new()];
        let mut text = rest;
        while !text.is_empty() {
            if let Some(inner) = text.strip_prefix('<') {
                let end = inner
                    .find('>')
                    .ok_or_else(|| format!("unclosed '<' in rule {rule:?}"))?;
                let var = parse_var(&inner[..end]).ok_or_else(|| {
                    format!(
                        "{:?} in rule {rule:?} is not a Werkzeug variable",
                        &text[..end + 2]
                    )
                })?;
                segments.last_mut().expect("never empty").push(var);
                text = &inner[end + 1..];
                continue;
            }
            let end = text.find(['<', '/']).unwrap_or(text.len());
            if end > 0 {
                segments
                    .last_mut()
                    .expect("never empty")
                    .push(Part::Static(text[..end].to_string()));
            }
            text = &text[end..];
            if let Some(after) = text.strip_prefix('/') {
                segments.push(Vec::new());
                text = after;
            }
        }
        Ok(Self { segments })
    }

    /// The cachalot pattern for the rule, or why there is none.
    pub fn translate(&self) -> Translation {
        let mut exact = Vec::new();
        let mut nearest = Some(Vec::new());
        let mut reasons = Vec::new();
        let last = self.segments.len() - 1;
        for (i, segment) in self.segments.iter().enumerate() {
            match segment.as_slice() {
                [] => push_both(&mut exact, &mut nearest, String::new()),
                [Part::Static(text)] if !text.contains(['{', '}', '<', '>']) => {
                    push_both(&mut exact, &mut nearest, text.clone())
                }
                [Part::Static(text)] => {
                    reasons.push(format!(
                        "the literal {text:?} holds a bracket cachalot reads as a parameter"
                    ));
                    nearest = None;
                }
                [
                    Part::Var {
                        converter,
                        args,
                        name,
                    },
                ] => {
                    let written = var_text(converter, args, name);
                    match (converter.as_str(), args) {
                        ("default" | "string", None) => {
                            push_both(&mut exact, &mut nearest, format!("<{name}>"))
                        }
                        ("int" | "float" | "uuid", None) => {
                            push_both(&mut exact, &mut nearest, format!("<{converter}:{name}>"))
                        }
                        ("path", None) if i == last => {
                            push_both(&mut exact, &mut nearest, format!("<path:{name}>"))
                        }
                        ("path", _) => {
                            reasons.push(format!("{written}: cachalot takes a path parameter only as the last segment, without arguments"));
                            nearest = None;
                        }
                        _ => {
                            reasons.push(format!("{written}: cachalot has <name>, <int:name>, <float:name>, <uuid:name> and <path:name> only, without arguments"));
                            if let Some(n) = nearest.as_mut() {
                                n.push(format!("<{name}>"));
                            }
                        }
                    }
                }
                parts => {
                    let written: String = parts.iter().map(part_text).collect();
                    reasons.push(format!(
                        "{written:?}: cachalot takes a parameter only as a whole segment"
                    ));
                    nearest = None;
                }
            }
        }
        if reasons.is_empty() {
            let pattern = format!("/{}", exact.join("/"));
            // Names Werkzeug accepts and cachalot does not (non-ASCII) end up here too.
            return match PathPattern::parse(&pattern) {
                Ok(_) => Translation::Exact(pattern),
                Err(reason) => Translation::Inexact {
                    reason,
                    nearest: None,
                },
            };
        }
        Translation::Inexact {
            reason: reasons.join("; "),
            nearest: nearest
                .map(|n| format!("/{}", n.join("/")))
                .filter(|p| PathPattern::parse(p).is_ok()),
        }
    }

    /// Whether some path is matched both by the rule and by `pattern`.
    pub fn overlaps(&self, pattern: &PathPattern) -> bool {
        overlap(pattern.segments(), &self.segments)
    }
}

fn push_both(exact: &mut Vec<String>, nearest: &mut Option<Vec<String>>, text: String) {
    if let Some(n) = nearest.as_mut() {
        n.push(text.clone());
    }
    exact.push(text);
}

fn parse_var(inner: &str) -> Option<Part> {
    let (converter, args, name) = match inner.rsplit_once(':') {
        None => ("default", None, inner),
        Some((spec, name)) => match spec.split_once('(') {
            None => (spec, None, name),
            Some((converter, args)) => (converter, Some(args.strip_suffix(')')?), name),
        },
    };
    let identifier = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_')
    };
    (identifier(converter) && identifier(name)).then(|| Part::Var {
        converter: converter.to_string(),
        args: args.map(str::to_string),
        name: name.to_string(),
    })
}

fn var_text(converter: &str, args: &Option<String>, name: &str) -> String {
    match args {
        Some(args) => format!("<{converter}({args}):{name}>"),
        None if converter == "default" => format!("<{name}>"),
        None => format!("<{converter}:{name}>"),
    }
}

fn part_text(part: &Part) -> String {
    match part {
        Part::Static(text) => text.clone(),
        Part::Var {
            converter,
            args,
            name,
        } => var_text(converter, args, name),
    }
}

/// A segment holding a `path` variable can span several of the request's segments.
fn spans_segments(segment: &[Part]) -> bool {
    segment
        .iter()
        .any(|p| matches!(p, Part::Var { converter, .. } if converter == "path"))
}

fn overlap(policy: &[Segment], rule: &[Vec<Part>]) -> bool {
    match (policy.first(), rule.first()) {
        (None, None) => true,
        (Some(Segment::CatchAll { .. }), Some(_)) => {
            // The rest of the request path, at least one character.
            !(rule.len() == 1 && rule[0].is_empty())
        }
        (Some(_), Some(first)) if spans_segments(first) => (1..=policy.len()).any(|taken| {
            policy[..taken]
                .iter()
                .any(|s| matches!(s, Segment::CatchAll { .. }))
                || overlap(&policy[taken..], &rule[1..])
        }),
        (Some(segment), Some(first)) => {
            segment_overlaps(segment, first) && overlap(&policy[1..], &rule[1..])
        }
        _ => false,
    }
}

fn segment_overlaps(segment: &Segment, parts: &[Part]) -> bool {
    match segment {
        Segment::Static(text) => matches_text(parts, text),
        Segment::Param { .. } | Segment::CatchAll { .. } => parts
            .iter()
            .any(|p| !matches!(p, Part::Static(s) if s.is_empty())),
        Segment::Typed { converter, .. } => {
            let accepts = |text: &str| !text.is_empty() && converter.canonical(text).is_some();
            !parts.is_empty()
                && parts.iter().all(|p| match p {
                    Part::Static(s) => accepts(s),
                    Part::Var {
                        converter: theirs,
                        args,
                        ..
                    } => match theirs.as_str() {
                        "any" => choices(args).iter().any(|c| accepts(c)),
                        // Another typed converter's values are never this one's.
                        "int" | "float" | "uuid" => theirs == converter.as_str(),
                        _ => true,
                    },
                })
        }
    }
}

/// `any(a, b, "c")` → ["a", "b", "c"].
fn choices(args: &Option<String>) -> Vec<String> {
    args.as_deref()
        .unwrap_or("")
        .split(',')
        .map(|c| c.trim().trim_matches(['"', '\'']).to_string())
        .collect()
}

/// Whether the parts of one rule segment can produce exactly `text`.
fn matches_text(parts: &[Part], text: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return text.is_empty();
    };
    match first {
        Part::Static(s) => text
            .strip_prefix(s.as_str())
            .is_some_and(|after| matches_text(rest, after)),
        Part::Var {
            converter, args, ..
        } => (1..=text.len())
            .filter(|&end| text.is_char_boundary(end))
            .any(|end| {
                var_accepts(converter, args, &text[..end]) && matches_text(rest, &text[end..])
            }),
    }
}

/// Whether a variable's converter accepts `value` (one segment, non-empty).
fn var_accepts(converter: &str, args: &Option<String>, value: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match converter {
        "int" => {
            let signed = args.as_deref().is_some_and(|a| a.contains("signed=True"));
            digits(value.strip_prefix('-').filter(|_| signed).unwrap_or(value))
        }
        "float" => value
            .split_once('.')
            .is_some_and(|(a, b)| digits(a.strip_prefix('-').unwrap_or(a)) && digits(b)),
        "uuid" => {
            let groups: Vec<&str> = value.split('-').collect();
            groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
                && groups
                    .iter()
                    .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        "any" => choices(args).iter().any(|c| c == value),
        // string, path and custom converters: anything non-empty (custom ones cannot be known).
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(rule: &str) -> Option<String> {
        match Rule::parse(rule).unwrap().translate() {
            Translation::Exact(p) => Some(p),
            Translation::Inexact { .. } => None,
        }
    }

    #[test]
    fn translates_what_cachalot_can_say() {
        assert_eq!(exact("/"), Some("/".into()));
        assert_eq!(exact("/a/<id>/"), Some("/a/<id>/".into()));
        assert_eq!(exact("/a/<int:id>"), Some("/a/<int:id>".into()));
        assert_eq!(exact("/f/<path:rest>"), Some("/f/<path:rest>".into()));
        assert_eq!(exact("/a/<float:x>"), Some("/a/<float:x>".into()));
        assert_eq!(exact("/a/<uuid:x>"), Some("/a/<uuid:x>".into()));
        for rule in [
            "/a/<float(signed=True):x>",
            "/a/<any(x, y):kind>",
            "/a/<int(min=1):x>",
            "/a/<string(length=2):x>",
            "/a/<path:p>/edit",
            "/a/<name>.<ext>",
            "/a/<slug:x>",
        ] {
            assert_eq!(exact(rule), None, "{rule}");
        }
    }

    #[test]
    fn overlaps_by_converter_syntax() {
        let o = |rule: &str, pattern: &str| {
            Rule::parse(rule)
                .unwrap()
                .overlaps(&PathPattern::parse(pattern).unwrap())
        };
        assert!(o("/a/<int:id>", "/a/42"));
        assert!(!o("/a/<int:id>", "/a/new"));
        assert!(o("/a/<uuid:id>", "/a/{id}"));
        assert!(!o("/a/<uuid:id>", "/a/<int:id>"));
        assert!(o("/a/<any(x, y):k>", "/a/y"));
        assert!(!o("/a/<any(x, y):k>", "/a/z"));
        assert!(o("/f/<path:p>/edit", "/f/a/b/edit"));
        assert!(o("/f/<path:p>", "/f/{*rest}"));
        assert!(!o("/f/<path:p>", "/g/{*rest}"));
        assert!(o("/d/<name>.<ext>", "/d/x.txt"));
        assert!(!o("/d/<name>.<ext>", "/d/xtxt"));
        assert!(!o("/a/<id>", "/a/<id>/b"));
    }
}

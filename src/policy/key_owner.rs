//! Which route a stored key belongs to, read back from the key's text: what lets the
//! memory sampler say how much of Redis each route takes without storing anything extra
//! per entry.
//!
//! A key is its route's template with each parameter's value percent-encoded (letters,
//! digits, `-._~`, `/` and `%XX` only, see `key`), so a template is read back as a pattern:
//! literals match themselves, a parameter matches a run of those characters. The first
//! cached route (most specific first) whose template can build the key owns it. Two
//! templates that can build the same text (`item:{id}` on one route, a route named `item`
//! with one parameter on another) share their keys in Redis too; the more specific route is
//! credited with them.

use crate::http::path;
use crate::policy::Policy;
use crate::policy::key::{KeyPart, KeyTemplate};
use crate::policy::route::{Action, Route};
use std::sync::Arc;

impl Policy {
    /// The cached route whose key template builds `base` (a key without its variant part).
    pub fn route_of_base(&self, base: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|route| match &route.action {
            Action::Cache(rule) => builds(&rule.key, route, base),
            Action::Pass => false,
        })
    }
}

/// Whether `template` on `route` can build `base`.
fn builds(template: &KeyTemplate, route: &Route, base: &str) -> bool {
    match template {
        KeyTemplate::Template(parts) => matches(parts, base),
        KeyTemplate::Default { name: Some(name) } => {
            let mut parts = vec![KeyPart::Literal(name.clone())];
            for param in route.pattern.param_names() {
                parts.push(KeyPart::Literal(":".into()));
                parts.push(KeyPart::Param(param.to_string()));
            }
            matches(&parts, base)
        }
        // An unnamed route without `key` is keyed on its (canonical) path.
        KeyTemplate::Default { name: None } => {
            route.pattern.matches(base, &path::segments(base)).is_some()
        }
    }
}

/// Characters an escaped parameter value is made of.
fn in_value(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~/%".contains(&b)
}

/// Literals match themselves, parameters any run of value characters (backtracking: a
/// literal may hold value characters, as `.` in `v1.{id}.json`).
fn matches(parts: &[KeyPart], text: &str) -> bool {
    match parts.split_first() {
        None => text.is_empty(),
        Some((KeyPart::Literal(literal), rest)) => text
            .strip_prefix(literal.as_str())
            .is_some_and(|after| matches(rest, after)),
        Some((KeyPart::Param(_), rest)) => {
            let run = text.bytes().take_while(|b| in_value(*b)).count();
            (0..=run).rev().any(|taken| matches(rest, &text[taken..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::Policy;

    const POLICY: &str = r#"
[origin]
url = "http://127.0.0.1"

[[route]]
name = "credential"
match = "GET /api/credentials/{id}"
ttl = "1m"
key = "credential:{id}"

[[route]]
name = "file"
match = "GET /files/{org}/{*path}"
ttl = "1m"

[[route]]
match = "GET /api/stats"
ttl = "1m"

[[route]]
name = "doc"
match = "GET /docs/{a}/{b}"
ttl = "1m"
key = "doc.{a}.{b}.v1"

[[route]]
match = "GET /passed/{id}"
cache = false
"#;

    fn owner(base: &str) -> Option<String> {
        let policy = Policy::parse(POLICY, "test.toml").unwrap();
        policy.route_of_base(base).map(|r| r.label.to_string())
    }

    #[test]
    fn keys_are_read_back_to_their_routes() {
        assert_eq!(owner("credential:abc%3A1").as_deref(), Some("credential"));
        assert_eq!(owner("file:o1:a/b.txt").as_deref(), Some("file"));
        assert_eq!(owner("/api/stats").as_deref(), Some("GET /api/stats"));
        assert_eq!(owner("doc.x.y.z.v1").as_deref(), Some("doc"));
        assert_eq!(owner("credential:"), Some("credential".into()));
        assert_eq!(owner("credential:a:b"), None);
        assert_eq!(owner("/passed/1"), None);
        assert_eq!(owner("nothing"), None);
    }
}

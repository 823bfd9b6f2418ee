//! The route table `cachalot check` prints: one line per route with its match, TTL and the
//! key it builds, so an operator sees what the policy does without reading the TOML.

use super::Policy;
use super::settings::redact;
use crate::policy::key::{KeyTemplate, QueryRule};
use crate::policy::route::{Action, InvalidateRule, PathPattern};
use std::fmt::Write;

impl Policy {
    /// The route table as `check` prints it.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "listen {}  admin {}  origin {}{}  redis {} (prefix \"{}\")",
            self.listen.addr,
            self.listen.admin,
            self.origin.url,
            match (&self.origin.tls, &self.origin.tls_ca_file) {
                (None, _) => String::new(),
                (Some(_), None) => " (TLS, system roots)".into(),
                (Some(_), Some(ca)) => format!(" (TLS, CA {})", ca.display()),
            },
            redact(&self.redis.url),
            self.redis.prefix
        );
        if !self.from_environment.is_empty() {
            let _ = writeln!(
                out,
                "from the environment (wins over the file): {}",
                self.from_environment.join(", ")
            );
        }
        // Each row: line, name, match, ttl, and the key (for a write route, what it drops).
        let rows: Vec<[String; 5]> = self
            .routes
            .iter()
            .map(|route| {
                let (ttl, key) = match &route.action {
                    Action::Pass => ("pass".to_string(), describe_drops(&route.invalidate)),
                    Action::Cache(rule) => (
                        rule.ttl.to_string(),
                        describe_key(&rule.key, &route.pattern, &rule.query),
                    ),
                };
                [
                    route.line.to_string(),
                    route.name.as_deref().unwrap_or("-").to_string(),
                    format!("{} {}", route.methods, route.pattern),
                    ttl,
                    key,
                ]
            })
            .collect();
        let header = ["LINE", "NAME", "MATCH", "TTL", "KEY"].map(String::from);
        let widths: Vec<usize> = (0..4)
            .map(|i| {
                std::iter::once(&header)
                    .chain(&rows)
                    .map(|row| row[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&header).chain(&rows) {
            for (cell, width) in row.iter().zip(&widths) {
                let _ = write!(out, "{cell:<width$}  ");
            }
            let _ = writeln!(out, "{}", row[4]);
        }
        out
    }
}

/// What a route's successful writes drop besides their own URL: `drops key1, tag:t`, or `-`.
fn describe_drops(rule: &InvalidateRule) -> String {
    let keys = rule.keys.iter().map(|k| describe_template(k, None));
    let tags = rule
        .tags
        .iter()
        .map(|t| format!("tag:{}", describe_template(t, None)));
    let named: Vec<String> = keys.chain(tags).collect();
    if named.is_empty() {
        "-".into()
    } else {
        format!("drops {}", named.join(", "))
    }
}

/// A key template as written; a default one as the key it builds (`name:{id}`).
fn describe_template(key: &KeyTemplate, pattern: Option<&PathPattern>) -> String {
    match key {
        KeyTemplate::Default { name: Some(name) } => {
            let mut text = name.clone();
            for param in pattern.into_iter().flat_map(PathPattern::param_names) {
                let _ = write!(text, ":{{{param}}}");
            }
            text
        }
        KeyTemplate::Default { name: None } => "<path>".into(),
        KeyTemplate::Template(parts) => parts
            .iter()
            .map(|p| match p {
                crate::policy::key::KeyPart::Literal(t) => t.clone(),
                crate::policy::key::KeyPart::Param(n) => format!("{{{n}}}"),
            })
            .collect(),
    }
}

fn describe_key(key: &KeyTemplate, pattern: &PathPattern, query: &QueryRule) -> String {
    let base = describe_template(key, Some(pattern));
    match query {
        QueryRule::Sorted => format!("{base}[?sorted query]"),
        QueryRule::Ignore => base,
        QueryRule::Allow(names) => format!("{base}[?{}]", names.join(",")),
    }
}

//! `cachalot init --flask-routes`: a commented policy drafted from the app's own rules.
//!
//! The draft caches nothing. How stale an answer may be is a product decision per route (the
//! rule in docs/policy.md), so every GET rule becomes a `cache = false` route naming the decision to
//! make; every write rule becomes a route whose `invalidate` is written out, commented, with
//! the keys of the GET routes it probably changes. Rules cachalot cannot match exactly stay
//! comments, with the reason and the nearest pattern, so the draft never catches a path Flask
//! answers differently.

use super::rule::{Rule, Translation};
use super::table::FlaskRule;
use crate::app::route_name;
use crate::policy::route::{PathPattern, Segment};
use std::collections::HashSet;
use std::fmt::Write;

const WRITES: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

const HEADER: &str = r#"# cachalot policy drafted by `cachalot init --flask-routes` from the app's `flask routes`.
#
# Nothing is cached yet. Every GET rule is a route with `cache = false`: forwarded untouched,
# as if it were not written. To cache one, ask "if this answer is X old, what is the worst that
# happens?", then replace its `cache = false` line by the ttl line under it (docs/policy.md,
# "The policy file"). Write routes carry a commented `invalidate` naming the GET routes they probably
# change; uncomment it once those are cached.
#
# Check it, and later that it still fits the app:
#   cachalot check --config THIS_FILE --flask-routes ROUTES_FILE

[listen]
addr  = "127.0.0.1:8080"   # where clients connect: "0.0.0.0:8080" in a container
admin = "127.0.0.1:9901"   # /healthz, metrics; never expose it as the public port

[origin]
url = "http://127.0.0.1:5000"   # the Flask app: `flask run` listens on 5000, gunicorn on 8000
timeout = "30s"                 # an origin request taking longer fails with 504

[redis]
url = "redis://127.0.0.1:6379"  # REDIS_URL in the environment wins over this
prefix = "cachalot"             # every key written starts with "cachalot:"
"#;

/// A route of the draft, before it is written out.
struct Draft<'a> {
    flask: &'a FlaskRule,
    name: String,
    methods: Vec<&'a str>,
    translation: Translation,
    /// Set when an earlier route already matches the same paths and methods.
    shadowed_by: Option<String>,
}

impl Draft<'_> {
    fn is_read(&self) -> bool {
        self.methods == ["GET"]
    }

    fn pattern(&self) -> Option<PathPattern> {
        match &self.translation {
            Translation::Exact(p) if self.shadowed_by.is_none() => PathPattern::parse(p).ok(),
            _ => None,
        }
    }
}

/// The policy text for the app's rules (in the table's order, reads before writes of a rule).
pub fn draft(rules: &[(FlaskRule, Rule)]) -> String {
    let mut names = HashSet::new();
    let mut drafts: Vec<Draft<'_>> = Vec::new();
    for (flask, rule) in rules {
        let reads = flask.methods.iter().any(|m| m == "GET");
        let writes: Vec<&str> = WRITES
            .into_iter()
            .filter(|w| flask.methods.iter().any(|m| m == w))
            .collect();
        let translation = rule.translate();
        if reads {
            drafts.push(Draft {
                flask,
                name: route_name::unique(&flask.endpoint, &mut names),
                methods: vec!["GET"],
                translation: translation.clone(),
                shadowed_by: None,
            });
        }
        if !writes.is_empty() {
            let base = if reads {
                format!("{}-write", flask.endpoint)
            } else {
                flask.endpoint.clone()
            };
            drafts.push(Draft {
                flask,
                name: route_name::unique(&base, &mut names),
                methods: writes,
                translation,
                shadowed_by: None,
            });
        }
    }
    mark_shadowed(&mut drafts);

    let mut out = String::from(HEADER);
    let expressible = drafts.iter().filter(|d| d.pattern().is_some()).count();
    let _ = writeln!(
        out,
        "\n# --- Routes: {} rules from `flask routes`, {expressible} routes below ---------------",
        rules.len()
    );
    for draft in &drafts {
        out.push('\n');
        write_route(&mut out, draft, &drafts);
    }
    let skipped: Vec<&FlaskRule> = rules
        .iter()
        .map(|(f, _)| f)
        .filter(|f| {
            !f.methods
                .iter()
                .any(|m| m == "GET" || WRITES.contains(&m.as_str()))
        })
        .collect();
    if !skipped.is_empty() {
        out.push_str("\n# Rules without GET or a write method (nothing to cache or invalidate):\n");
        for f in skipped {
            let _ = writeln!(
                out,
                "#   {} {} ({})",
                f.methods.join("|"),
                f.rule,
                f.endpoint
            );
        }
    }
    out
}

/// Flask answers a path with the first rule that matches; two rules cachalot would see as the
/// same route make the policy ambiguous, so the later one stays a comment.
fn mark_shadowed(drafts: &mut [Draft<'_>]) {
    for i in 0..drafts.len() {
        let Some(mine) = drafts[i].pattern() else {
            continue;
        };
        let earlier = drafts[..i].iter().find(|d| {
            d.pattern().is_some_and(|p| p.same_shape(&mine))
                && d.methods.iter().any(|m| drafts[i].methods.contains(m))
        });
        if let Some(earlier) = earlier {
            drafts[i].shadowed_by = Some(earlier.name.clone());
        }
    }
}

fn write_route(out: &mut String, draft: &Draft<'_>, all: &[Draft<'_>]) {
    let flask = draft.flask;
    let methods = draft.methods.join("|");
    let _ = writeln!(
        out,
        "# {}: {} {} (line {} of the routes)",
        flask.endpoint, methods, flask.rule, flask.line
    );
    if let Some(domain) = &flask.domain {
        let _ = writeln!(
            out,
            "# Flask serves it on {domain:?} only; cachalot routes by path, on every host."
        );
    }
    let is_static = flask.endpoint == "static" || flask.endpoint.ends_with(".static");
    let pattern = match (&draft.translation, &draft.shadowed_by) {
        (Translation::Exact(pattern), None) => pattern.clone(),
        (Translation::Exact(pattern), Some(earlier)) => {
            let _ = writeln!(
                out,
                "# Not written: route {earlier:?} already matches the same paths, and Flask answers them with the first rule."
            );
            let _ = writeln!(
                out,
                "# match = {}",
                toml_string(&format!("{methods} {pattern}"))
            );
            return;
        }
        (Translation::Inexact { reason, nearest }, _) => {
            let _ = writeln!(out, "# Not written: {reason}.");
            if let Some(nearest) = nearest {
                let _ = writeln!(
                    out,
                    "# The nearest route also matches paths this rule refuses (Flask answers them with\n# another view or a 404), so check those before using it:\n# [[route]]\n# name = \"{}\"\n# match = {}",
                    draft.name,
                    toml_string(&format!("{methods} {nearest}"))
                );
                if draft.is_read() {
                    out.push_str("# cache = false\n");
                }
            }
            return;
        }
    };
    out.push_str("[[route]]\n");
    let _ = writeln!(out, "name = \"{}\"", draft.name);
    let _ = writeln!(
        out,
        "match = {}",
        toml_string(&format!("{methods} {pattern}"))
    );
    if draft.is_read() {
        out.push_str("cache = false   # forwarded, not cached; to cache, replace this line by:\n");
        if is_static {
            out.push_str("# ttl = \"origin\"   # Flask's static files carry ETag, Last-Modified and SEND_FILE_MAX_AGE_DEFAULT\n");
        } else {
            out.push_str("# ttl = \"\"   # fill in how stale it may be: \"30s\", \"5m\", \"1h\", or \"origin\" for its Cache-Control\n");
        }
        return;
    }
    let pattern = PathPattern::parse(&pattern).expect("exact translations parse");
    let reads: Vec<&Draft<'_>> = all.iter().filter(|d| d.is_read()).collect();
    // A GET of the write's own URL is dropped by the write itself (RFC 9111 §4.4).
    if let Some(own) = reads
        .iter()
        .find(|d| d.pattern().is_some_and(|p| p.same_shape(&pattern)))
    {
        let _ = writeln!(
            out,
            "# A success drops route {:?} (a GET of the same URL) by itself, RFC 9111 §4.4.",
            own.name
        );
    }
    let targets: Vec<(String, &Draft<'_>)> = reads
        .iter()
        .filter(|d| !d.pattern().is_some_and(|p| p.same_shape(&pattern)))
        .filter_map(|d| Some((invalidation_key(d, &pattern)?, *d)))
        .collect();
    if targets.is_empty() {
        out.push_str("# No other GET route shares its path prefix; if it changes one, name its key:\n# invalidate = [\"...\"]\n");
        return;
    }
    out.push_str("# It probably changes these GET routes (same path prefix). Once they are cached,\n# invalidate their keys (a route's key is name:param:..., unless it sets `key`):\n");
    let keys: Vec<String> = targets.iter().map(|(k, _)| format!("\"{k}\"")).collect();
    let _ = writeln!(out, "# invalidate = [{}]", keys.join(", "));
    for (key, read) in &targets {
        let _ = writeln!(out, "#   {key}: GET {}", read.flask.rule);
    }
}

/// A TOML basic string: a Flask literal may hold `"` or `\\`, which must not end the value.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The default key of the GET route `read`, written with the write route's parameters, when
/// the read's path is a prefix of the write's (a trailing slash aside).
fn invalidation_key(read: &Draft<'_>, write: &PathPattern) -> Option<String> {
    let read_pattern = read.pattern()?;
    let mut segments = read_pattern.segments();
    if let [rest @ .., Segment::Static(last)] = segments
        && last.is_empty()
        && !rest.is_empty()
    {
        segments = rest;
    }
    let theirs = write.segments();
    if segments.len() > theirs.len() {
        return None;
    }
    let mut key = read.name.clone();
    for (mine, theirs) in segments.iter().zip(theirs) {
        match (mine, theirs) {
            (Segment::Static(a), Segment::Static(b)) if a == b => {}
            // Same kinds only: `/users/<username>` is not keyed by `/users/<int:id>`'s value.
            (Segment::Param { .. }, Segment::Param { name, .. })
            | (Segment::CatchAll { .. }, Segment::CatchAll { name }) => {
                let _ = write!(key, ":{{{name}}}");
            }
            (Segment::Typed { converter: a, .. }, Segment::Typed { name, converter: b })
                if a == b =>
            {
                let _ = write!(key, ":{{{name}}}");
            }
            _ => return None,
        }
    }
    Some(key)
}

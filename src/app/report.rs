//! `cachalot report`: what to cache next, read from a running proxy.
//!
//! The proxy groups the GET and HEAD requests no cached route answered (see
//! `observe::uncached`) and serves them in `/status.json` on its admin listener; this command
//! reads them there, prints them ranked by the origin time they cost, and drafts routes for
//! the top rows in the policy file's own syntax. Like `init`, the draft caches nothing until
//! a person writes each TTL: how stale an answer may be is a product decision.

use crate::app::{health, route_name};
use crate::observe::uncached::{UncachedReport, UncachedRow};
use crate::policy::Policy;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt::Write;
use std::process::ExitCode;
use std::time::Duration;

/// The whole exchange with the admin listener, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The part of `/status.json` the report reads.
#[derive(Deserialize)]
struct Status {
    uptime_s: f64,
    uncached: UncachedReport,
}

/// Where the admin listener is: `--admin` as given (`http://host:port` or `host:port`).
pub fn authority(admin: &str) -> Result<String, String> {
    let rest = admin.strip_prefix("http://").unwrap_or(admin);
    if admin.starts_with("https://") {
        return Err(format!(
            "{admin}: the admin listener speaks plain HTTP; use http://HOST:PORT"
        ));
    }
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        return Err(format!(
            "{admin}: expected the admin listener as http://HOST:PORT (as [listen] admin)"
        ));
    }
    Ok(authority.to_string())
}

/// Reads `/status.json` at `authority` and prints the table and a draft for `top` rows.
pub fn report(authority: &str, top: usize) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fetched = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, health::get(authority, "/status.json"))
            .await
            .unwrap_or_else(|_| Err(format!("{authority} did not answer within {TIMEOUT:?}")))
    });
    let status: Status = match fetched {
        Ok((code, body)) if code.is_success() => match serde_json::from_slice(&body) {
            Ok(status) => status,
            Err(e) => {
                eprintln!(
                    "error: {authority}/status.json is not a cachalot status (an older cachalot, or not the admin listener?): {e}"
                );
                return ExitCode::FAILURE;
            }
        },
        Ok((code, _)) => {
            eprintln!("error: {authority}/status.json answered {code}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", table(&status.uncached, status.uptime_s));
    let draft = draft(&status.uncached.rows, top);
    // The draft is promised to pass `check`; refuse to print one that would not.
    let checked = format!("[origin]\nurl = \"http://127.0.0.1\"\n{draft}");
    if let Err(e) = Policy::parse(&checked, "the drafted routes") {
        eprintln!(
            "error: cachalot drafted routes it rejects itself (a bug, please report it): {e}"
        );
        return ExitCode::FAILURE;
    }
    print!("{draft}");
    ExitCode::SUCCESS
}

/// The ranked table, as text.
fn table(report: &UncachedReport, uptime_s: f64) -> String {
    let mut out = format!(
        "What to cache next: GET and HEAD requests no cached route answered, by origin time (last {}).\n\n",
        humantime::format_duration(Duration::from_secs(uptime_s as u64))
    );
    if report.rows.is_empty() {
        out.push_str(
            "No such requests yet: every GET and HEAD so far was answered by a cached route.\n",
        );
        return out;
    }
    let width = report
        .rows
        .iter()
        .map(|r| r.shape.len())
        .max()
        .unwrap_or(0)
        .clamp(10, 60);
    let _ = writeln!(
        out,
        "{:<6} {:<width$} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "method", "path shape or route", "requests", "origin", "p50", "p99", "storable"
    );
    let rows = report.rows.iter().chain(report.other.as_ref());
    for row in rows {
        let shape = match &row.route {
            Some(route) => format!("route {route}"),
            None => row.shape.clone(),
        };
        let _ = writeln!(
            out,
            "{:<6} {:<width$} {:>9} {:>10} {:>9} {:>9} {:>9}",
            row.method,
            shape,
            row.requests,
            format!("{:.2} s", row.origin_total_s),
            ms(row.p50_ms),
            ms(row.p99_ms),
            row.storable_share
                .map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0)),
        );
    }
    if report.folded > 0 {
        let _ = writeln!(
            out,
            "\n(other): {} groups folded together to keep the table at {} groups.",
            report.folded,
            crate::observe::uncached::MAX_GROUPS
        );
    }
    out.push_str("\norigin: the origin's time to a response head, summed; storable: the share a route with\ndefault settings would have stored (status 200 or 203, no Set-Cookie, private, no-store or no-cache).\n");
    out
}

fn ms(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.1} ms"))
}

/// Routes for the top `top` rows, in the policy file's syntax: each `cache = false` with
/// the `ttl` line to replace it by, as `cachalot init` writes them.
pub fn draft(rows: &[UncachedRow], top: usize) -> String {
    let mut out = String::from(
        "\n# Routes for the top rows: append them to the policy. Each caches nothing until you\n# replace its `cache = false` by a ttl (how stale may this answer be?), see docs/policy.md.\n# The converters are what the traffic showed (<int:...> took only digits); use the app's own rule\n# where it differs.\n",
    );
    let mut names = HashSet::new();
    let mut drafted = HashSet::new();
    for row in rows.iter().take(top) {
        let summary = format!(
            "# {} {}: {} requests, {:.2} s at the origin, p99 {}, {} storable",
            row.method,
            row.shape,
            row.requests,
            row.origin_total_s,
            ms(row.p99_ms),
            row.storable_share
                .map_or("-".to_string(), |s| format!("{:.0}%", s * 100.0)),
        );
        out.push('\n');
        out.push_str(&summary);
        out.push('\n');
        if let Some(route) = &row.route {
            let _ = writeln!(
                out,
                "# Already the route {route:?} (cache = false): to cache it, replace its `cache = false` by a ttl."
            );
            continue;
        }
        if row.storable == 0 {
            out.push_str("# Not drafted: none of its responses could be stored (status, Set-Cookie, private, no-store).\n");
            continue;
        }
        let (words, pattern) = route_for(&row.shape);
        // GET and HEAD of one shape are one route (a GET route takes HEAD), and shapes
        // that differ only in how an id looked share one pattern.
        if !drafted.insert(pattern.clone()) {
            let _ = writeln!(out, "# Drafted above: GET {pattern} takes these too.");
            continue;
        }
        let name = route_name::unique(&words, &mut names);
        let _ = writeln!(out, "[[route]]\nname = \"{name}\"");
        let _ = writeln!(out, "match = {}", toml_string(&format!("GET {pattern}")));
        out.push_str("cache = false   # forwarded, not cached; to cache, replace this line by:\n");
        out.push_str("# ttl = \"\"   # fill in how stale it may be: \"30s\", \"5m\", \"1h\", or \"origin\" for its Cache-Control\n");
    }
    out
}

/// Words for a route name and a path pattern for a shape: `/users/<int>/orders/<uuid>` →
/// `users-orders`, `/users/<int:user>/orders/<uuid:order>`.
fn route_for(shape: &str) -> (String, String) {
    let mut pattern = String::new();
    let mut literals: Vec<String> = Vec::new();
    let mut params = HashSet::new();
    let mut previous = String::new();
    for segment in shape.strip_prefix('/').unwrap_or(shape).split('/') {
        pattern.push('/');
        let converter = match segment {
            "<int>" => Some("int:"),
            "<float>" => Some("float:"),
            "<uuid>" => Some("uuid:"),
            "<hex>" | "<token>" => Some(""),
            "<rest>" => Some("path:"),
            _ => None,
        };
        match converter {
            Some(converter) => {
                let name = param_name(&previous, &mut params);
                let _ = write!(pattern, "<{converter}{name}>");
            }
            None => {
                pattern.push_str(segment);
                if !segment.is_empty() {
                    literals.push(segment.to_string());
                }
                previous = segment.to_string();
            }
        }
    }
    let words = if literals.is_empty() {
        "root".to_string()
    } else {
        literals.join("-")
    };
    (words, pattern)
}

/// A parameter named after the segment before it (`orders` → `order`), unique in the path.
fn param_name(previous: &str, taken: &mut HashSet<String>) -> String {
    let mut base: String = previous
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if base.len() > 3 && base.ends_with('s') && !base.ends_with("ss") {
        base.pop();
    }
    if !base.starts_with(|c: char| c.is_ascii_alphabetic()) {
        base.insert_str(0, "id");
    }
    let mut name = base.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}{n}");
        n += 1;
    }
    name
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_become_patterns_with_named_parameters() {
        let pattern = |shape: &str| route_for(shape).1;
        assert_eq!(
            route_for("/users/<int>/orders/<uuid>"),
            (
                "users-orders".to_string(),
                "/users/<int:user>/orders/<uuid:order>".to_string()
            )
        );
        assert_eq!(
            route_for("/<hex>/<hex>"),
            ("root".to_string(), "/<id>/<id2>".to_string())
        );
        assert_eq!(pattern("/a/b/<rest>"), "/a/b/<path:b>");
    }

    #[test]
    fn the_admin_listener_is_plain_http_host_and_port() {
        assert_eq!(
            authority("http://127.0.0.1:9901/").unwrap(),
            "127.0.0.1:9901"
        );
        assert_eq!(authority("localhost:9901").unwrap(), "localhost:9901");
        assert!(authority("https://x:1").is_err());
        assert!(authority("127.0.0.1").is_err());
        assert!(authority("http://x:1/status.json").is_err());
    }

    #[test]
    fn drafts_only_storable_shapes_and_each_pattern_once() {
        let row = |method: &str, shape: &str, storable| UncachedRow {
            method: method.into(),
            shape: shape.into(),
            route: None,
            requests: 4,
            origin_total_s: 1.0,
            p50_ms: Some(10.0),
            p99_ms: Some(20.0),
            storable,
            storable_share: Some(storable as f64 / 4.0),
        };
        let rows = [
            row("GET", "/users/<int>", 4),
            row("HEAD", "/users/<int>", 4),
            row("GET", "/session", 0),
            row("GET", "/files/<hex>", 2),
            row("GET", "/files/<token>", 2),
        ];
        let text = draft(&rows, 10);
        assert_eq!(text.matches("[[route]]").count(), 2, "{text}");
        assert!(text.contains("match = \"GET /users/<int:user>\""), "{text}");
        assert!(text.contains("match = \"GET /files/<file>\""), "{text}");
        assert!(!text.contains("GET /session\""), "{text}");
        let policy = format!("[origin]\nurl = \"http://127.0.0.1\"\n{text}");
        Policy::parse(&policy, "draft").unwrap();
    }
}

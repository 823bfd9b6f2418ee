//! `cachalot explain`: what the proxy would do with one request, without sending it.
//!
//! A policy author asks "which route takes `GET /api/credentials/abc?x=1`, under which Redis
//! key, for how long, and what does a revoke there drop?". The answer is the proxy's own
//! decision (`decide::decide`), so what `explain` prints is what the proxy does.

use crate::http::path;
use crate::phase::Reason;
use crate::policy::Policy;
use crate::policy::key::QueryRule;
use crate::policy::key::base_key;
use crate::policy::route::{Action, CacheRule, Route};
use crate::request::decide::{self, Decision};
use crate::store::keyspace::Keyspace;
use http::{HeaderMap, Method, Uri};
use std::fmt::Write;

/// A request as `explain` takes it: `"GET /path?query"`, or `"/path"` for a GET. A request
/// line copied from a log (`GET /path HTTP/1.1`) works too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub method: Method,
    pub uri: Uri,
}

impl Probe {
    /// Parses the request; the error says what would be valid.
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage =
            "expected \"METHOD /path?query\" or \"/path\", e.g. \"GET /api/credentials/abc?x=1\"";
        let words: Vec<&str> = text.split_whitespace().collect();
        let (method, target) = match words.as_slice() {
            [target] => (Method::GET, *target),
            [method, target] => (parse_method(method)?, *target),
            [method, target, version] if version.starts_with("HTTP/") => {
                (parse_method(method)?, *target)
            }
            [] => return Err(format!("no request given; {usage}")),
            _ => return Err(format!("{text:?} is not one request; {usage}")),
        };
        if !target.starts_with('/') && !target.contains("://") {
            return Err(format!("{target:?}: the path must start with '/'; {usage}"));
        }
        let uri: Uri = target
            .parse()
            .map_err(|e| format!("{target:?} is not a request target ({e}); {usage}"))?;
        Ok(Self { method, uri })
    }

    /// Path and query, as a client sends them to the proxy.
    fn target(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }
}

fn parse_method(text: &str) -> Result<Method, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "method {text:?}: HTTP methods are upper case, e.g. GET, POST, DELETE"
        ));
    }
    Method::from_bytes(text.as_bytes()).map_err(|e| format!("method {text:?}: {e}"))
}

/// What the proxy does with `probe` under `policy`, as lines of `label  value`. The answer
/// is the proxy's own [`decide::decide`], so it cannot disagree with what it does.
pub fn explain(policy: &Policy, probe: &Probe) -> String {
    explain_live(policy, probe, None)
}

/// As [`explain`], with what a running proxy's `/status.json` says (`explain --live`): for a
/// cached route, how often its hits were verified and what that found.
pub fn explain_live(policy: &Policy, probe: &Probe, status: Option<&serde_json::Value>) -> String {
    let mut out = Lines::default();
    let method = &probe.method;
    out.line("request", format!("{method} {}", probe.target()));

    let uri = match path::normalize_uri(&probe.uri) {
        Ok(uri) => uri.unwrap_or_else(|| probe.uri.clone()),
        Err(rejected) => {
            out.line("action", format!("refused with 400: {rejected}"));
            return out.text;
        }
    };
    let path = uri.path();
    let segments = path::segments(path);
    let matched = policy.routes.find(method, path, &segments);
    match &matched {
        None => out.line("route", format!("none: no route takes {method} {path}")),
        Some(m) => {
            out.line("route", describe_route(m.route, &policy.file));
            if !m.params.is_empty() {
                let params: Vec<String> =
                    m.params.iter().map(|(n, v)| format!("{n}={v}")).collect();
                out.line("params", params.join(" "));
            }
        }
    }

    // The authority ends the key (`#host=`): the probe's own (`http://a.example/x`), else the
    // first of `[listen] hosts`, else a placeholder saying where it comes from.
    let authority = match probe.uri.authority() {
        Some(given) => match crate::http::authority::normalize(given.as_str().as_bytes()) {
            Ok(Some(authority)) => authority,
            _ => {
                out.line(
                    "action",
                    format!("refused with 400: {given} is not a valid host"),
                );
                return out.text;
            }
        },
        None => policy
            .listen
            .hosts
            .first()
            .cloned()
            .unwrap_or_else(|| "<the request's Host>".into()),
    };
    if !policy.listen.hosts.is_empty() && !policy.listen.hosts.contains(&authority) {
        out.line(
            "action",
            format!("refused with 421: [listen] hosts does not name {authority}"),
        );
        return out.text;
    }
    match decide::decide(policy, method, &uri, &HeaderMap::new(), Some(&authority)) {
        Decision::Cache(plan) => {
            let Action::Cache(rule) = &plan.route.action else {
                unreachable!("a cache plan comes from a cached route")
            };
            let head = if *method == Method::HEAD {
                " (HEAD is answered from the GET entry)"
            } else {
                ""
            };
            out.line(
                "action",
                format!("cached: a hit is served from Redis, a miss is fetched from the origin once and stored{head}"),
            );
            out.line("key", Keyspace::new(&policy.redis.prefix).entry(&plan.key));
            out.line("ttl", ttl_line(rule));
            out.line("tags", tags_line(&plan.tags));
            out.line(
                "origin",
                format!(
                    "GET {}{}",
                    decide::origin_target(plan.canonical_uri.as_ref().unwrap_or(&uri), &rule.query),
                    query_note(&rule.query, probe.uri.query())
                ),
            );
            out.line("timeout", timeout_line(policy, Some(&plan.route)));
            out.line("bypass", bypass_line(rule));
            out.line("compress", compress_line(policy, rule));
            out.line("verify", verify_line(policy, &plan.route, rule));
            if let Some(status) = status {
                out.line("verified", verified_line(status, &plan.route.label));
            }
        }
        Decision::Forward(decide::Forward {
            status, invalidate, ..
        }) => {
            let why = match status.phase.reason() {
                Some(Reason::NoRoute) => "no route matches".to_string(),
                Some(Reason::Method) => format!("only GET and HEAD are cached, this is {method}"),
                Some(Reason::RoutePass)
                    if matched
                        .as_ref()
                        .is_some_and(|m| !m.route.methods.allows_reads()) =>
                {
                    "the route takes only writes".to_string()
                }
                Some(Reason::RoutePass) => "the route says cache = false".to_string(),
                Some(other) => format!("this request may not use the cache ({})", other.as_str()),
                None => "forwarded".to_string(),
            };
            out.line(
                "action",
                format!(
                    "forwarded, not cached: {why} (Cache-Status detail {})",
                    status.phase.reason().map_or("-", Reason::as_str)
                ),
            );
            let target = uri.path_and_query().map_or("/", |p| p.as_str());
            out.line("origin", format!("{method} {target} (untouched)"));
            out.line(
                "timeout",
                timeout_line(policy, matched.as_ref().map(|m| m.route.as_ref())),
            );
            if let Some(invalidation) = invalidate {
                out.line(
                    "on 2xx/3xx",
                    "before the response reaches the client, drops:".into(),
                );
                let own = decide::key_for_get(policy, path, &segments, probe.uri.query());
                for key in &invalidation.keys {
                    let source = if own.as_ref() == Some(key) {
                        "RFC 9111 §4.4: a GET of the same URI"
                    } else {
                        "invalidate"
                    };
                    let key = Keyspace::new(&policy.redis.prefix).entry(base_key(key));
                    out.line("  key", format!("{key} and its variants ({source})"));
                }
                for tag in &invalidation.tags {
                    out.line(
                        "  tag",
                        format!("{tag}: every entry carrying it (invalidate_tags)"),
                    );
                }
                if invalidation.is_empty() {
                    out.line(
                        "  nothing",
                        format!("no invalidate rule, and no cached route takes GET {path}"),
                    );
                }
                out.line(
                    "  also",
                    "the entry for the response's Location or Content-Location, if on the same host and cached".into(),
                );
            }
        }
    }
    out.text
}

fn describe_route(route: &Route, file: &str) -> String {
    let name = route
        .name
        .as_deref()
        .map_or(String::new(), |n| format!("{n}: "));
    format!(
        "{name}\"{} {}\" ({file}:{})",
        route.methods, route.pattern, route.line
    )
}

fn ttl_line(rule: &CacheRule) -> String {
    let mut stale = String::new();
    for (name, window) in [
        ("stale-while-revalidate", rule.stale_while_revalidate),
        ("stale-if-error", rule.stale_if_error),
    ] {
        if !window.is_zero() {
            let _ = write!(stale, "; {name} {}", humantime::format_duration(window));
        }
    }
    format!(
        "{}{stale} (stores statuses {}; bodies up to {})",
        rule.ttl,
        rule.statuses,
        bytesize::ByteSize::b(rule.max_object_size)
    )
}

fn tags_line(tags: &[String]) -> String {
    let extra = "the origin may add more with Surrogate-Key or Cache-Tag";
    if tags.is_empty() {
        format!("none from the route; {extra}")
    } else {
        format!("{}; {extra}", tags.join(", "))
    }
}

fn query_note(rule: &QueryRule, query: Option<&str>) -> &'static str {
    match (rule, query) {
        (_, None) | (QueryRule::Sorted, _) => "",
        (QueryRule::Ignore, Some(_)) => {
            "  (query = \"ignore\": the query is neither sent nor part of the key)"
        }
        (QueryRule::Allow(_), Some(_)) => {
            "  (query lists parameters: only those are sent and keyed)"
        }
    }
}

/// How long the origin may take here, and which setting says so.
fn timeout_line(policy: &Policy, route: Option<&Route>) -> String {
    let timeout = humantime::format_duration(policy.origin_timeout(route));
    match route.and_then(|r| r.timeout) {
        Some(_) => format!("{timeout} (the route's timeout), then 504"),
        None => format!("{timeout} ([origin] timeout), then 504"),
    }
}

fn bypass_line(rule: &CacheRule) -> String {
    let mut bypassing = vec!["Upgrade"];
    if !rule.per_user {
        bypassing.insert(0, "Authorization");
    }
    if !rule.ignore_cookies {
        bypassing.insert(bypassing.len() - 1, "Cookie");
    }
    let mut line = match bypassing.as_slice() {
        [one] => format!("a request with {one} goes to the origin uncached"),
        [init @ .., last] => format!(
            "a request with {} or {last} goes to the origin uncached",
            init.join(", ")
        ),
        [] => unreachable!("Upgrade always bypasses"),
    };
    if rule.ignore_cookies {
        line.push_str("; Cookie is stripped (ignore_cookies)");
    }
    if rule.per_user {
        line.push_str("; Authorization is cached per credential, keyed on its hash (per_user)");
    }
    if !rule.vary.is_empty() {
        let names: Vec<&str> = rule.vary.iter().map(|n| n.as_str()).collect();
        line.push_str(&format!("; the key holds {} (vary)", names.join(", ")));
    }
    line
}

/// Whether and how the route's bodies are stored compressed (`[compression]`, `compress`).
fn compress_line(policy: &Policy, rule: &CacheRule) -> String {
    let settings = &policy.compression;
    if !settings.enabled {
        return "off ([compression] enabled = false): bodies are stored as the origin sends them"
            .into();
    }
    if !rule.compress {
        return "off for this route (compress = false): bodies are stored as the origin sends them"
            .into();
    }
    let coding = settings.coding.token();
    format!(
        "bodies of [compression] types from {} up are stored {coding}-compressed (level {}) when that is smaller; clients accepting {coding} get the stored bytes, others the body decoded; a body the origin encoded is stored as it came",
        bytesize::ByteSize(settings.min_size),
        settings.level,
    )
}

/// The route's shadow verification setting, and where it comes from.
fn verify_line(policy: &Policy, route: &Route, rule: &CacheRule) -> String {
    let fraction = policy.verify_fraction(route);
    let from = if rule.verify.is_some() {
        "the route's verify"
    } else {
        "[verify] fraction"
    };
    if fraction.is_off() {
        return format!("off ({from} is 0)");
    }
    format!(
        "{fraction} of fresh hits are asked of the origin again in the background and compared ({from}; at most {} at a time, [verify] concurrency)",
        policy.verify.concurrency
    )
}

/// "verified N times, M mismatches" from a running proxy's `/status.json`.
fn verified_line(status: &serde_json::Value, label: &str) -> String {
    let found = status["verify"]["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["route"] == label));
    let Some(route) = found else {
        return "not yet on the running proxy".to_string();
    };
    let n = |field: &str| route[field].as_u64().unwrap_or(0);
    format!(
        "verified {} times, {} mismatches, {} changed since stored ({} errors, {} skipped) on the running proxy since it started",
        n("verified"),
        n("mismatches"),
        n("changed"),
        n("errors"),
        n("skipped")
    )
}

/// Aligned `label  value` lines.
#[derive(Default)]
struct Lines {
    text: String,
}

impl Lines {
    fn line(&mut self, label: &str, value: String) {
        let _ = writeln!(self.text, "{label:<11} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_people_type() {
        let probe = Probe::parse("GET /api/x?y=1").unwrap();
        assert_eq!(
            (&probe.method, probe.target()),
            (&Method::GET, "/api/x?y=1")
        );
        assert_eq!(Probe::parse("/a").unwrap().method, Method::GET);
        assert_eq!(
            Probe::parse("DELETE /a HTTP/1.1").unwrap().method,
            Method::DELETE
        );
        assert_eq!(Probe::parse("http://host/a?b").unwrap().target(), "/a?b");
        for bad in [
            "",
            "get /a",
            "GET",
            "GET a",
            "GET /a b c",
            "GET /a\u{7f}",
            "GET /a HTTP/1.1 x",
        ] {
            assert!(Probe::parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! What a cached route keys on and sends to the origin: path parameter case, the `vary`
//! headers, the `forward_headers` a fill passes on. Each list is refused when it would let
//! one client's request shape an entry others are served.

use super::PolicyError;
use super::error::Locator;
use super::file::{ParamSection, QuerySetting, RouteSection};
use crate::http::hop_by_hop::is_hop_by_hop;
use crate::policy::key::{KeyTemplate, QueryRule};
use crate::policy::route::{PathPattern, Segment};
use std::collections::BTreeMap;
use toml::Spanned;

/// `params.<name>.case`: a string parameter whose values the origin compares without case
/// (a MySQL `_ci` collation) is keyed, and asked of the origin, in lower case, so `Alice`
/// and `alice` are one entry that one invalidation drops.
pub(super) fn param_settings(
    pattern: &mut PathPattern,
    settings: &BTreeMap<String, Spanned<ParamSection>>,
    field: &dyn Fn(&str) -> String,
    locate: &Locator<'_>,
) -> Result<(), PolicyError> {
    for (name, setting) in settings {
        let here = field(&format!("params.{name}"));
        let Some(segment) = pattern.param(name).cloned() else {
            let names: Vec<String> = pattern.param_names().map(|n| format!("{{{n}}}")).collect();
            let has = if names.is_empty() {
                "no parameters".to_string()
            } else {
                names.join(", ")
            };
            return Err(locate.at(
                Some(setting.span()),
                here,
                format!("the route's path has no parameter {name:?}; it has {has}"),
            ));
        };
        let Some(case) = &setting.get_ref().case else {
            return Err(locate.at(
                Some(setting.span()),
                here,
                "say how the parameter compares: case = \"insensitive\" or \"sensitive\"",
            ));
        };
        let here = format!("{here}.case");
        match case.get_ref().as_str() {
            "sensitive" => {}
            "insensitive" if pattern.fold_case(name) => {}
            "insensitive" => {
                let why = match segment {
                    Segment::Typed { converter, .. } => format!(
                        "<{}:{name}> values have one canonical form already (see docs/policy.md, \"One value, one key\")",
                        converter.as_str()
                    ),
                    _ => format!("a catch-all ({{*{name}}}, <path:{name}>) spans several segments"),
                };
                return Err(locate.at(
                    Some(case.span()),
                    here,
                    format!(
                        "{why}; only a string parameter ({{{name}}}, <{name}>, <string:{name}>) can be case-insensitive"
                    ),
                ));
            }
            other => {
                return Err(locate.at(
                    Some(case.span()),
                    here,
                    format!(
                        "{other:?} is not a case rule; valid: \"sensitive\" (the default: compared exactly, as Flask does) \
                         or \"insensitive\" (the origin ignores case, e.g. a MySQL _ci collation: keys and origin requests use lower case)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A route's `vary` list: header names, each once, that can be part of a key.
pub(super) fn vary_names(list: &Spanned<Vec<String>>) -> Result<Vec<http::HeaderName>, String> {
    let mut names: Vec<http::HeaderName> = Vec::new();
    for text in list.get_ref() {
        let name = http::HeaderName::from_bytes(text.as_bytes())
            .map_err(|_| format!("{text:?} is not a header name"))?;
        if name == http::header::AUTHORIZATION || name == http::header::COOKIE {
            return Err(format!(
                "{text:?} cannot be in vary: for per-credential entries use per_user = true \
                 (keys on a hash of Authorization); cookies bypass the cache unless ignore_cookies = true"
            ));
        }
        if is_hop_by_hop(&name) {
            return Err(format!(
                "{text:?} is a hop-by-hop header: it never reaches the origin, so it cannot shape a response"
            ));
        }
        if names.contains(&name) {
            return Err(format!("{text:?} is listed twice"));
        }
        names.push(name);
    }
    Ok(names)
}

/// A route's `forward_headers`: header names a fill may pass to the origin. Refused: names
/// the fill sets itself or that never reach it, and credentials (use `per_user`).
pub(super) fn forwarded_names(
    list: &Spanned<Vec<String>>,
) -> Result<Vec<http::HeaderName>, String> {
    use http::header;
    let mut names: Vec<http::HeaderName> = Vec::new();
    for text in list.get_ref() {
        let name = http::HeaderName::from_bytes(text.as_bytes())
            .map_err(|_| format!("{text:?} is not a header name"))?;
        if name.as_str().contains('_') {
            return Err(format!(
                "{text:?} has '_': such names are dropped before any route sees them (see [listen] underscores_in_headers)"
            ));
        }
        if name == header::AUTHORIZATION || name == header::COOKIE {
            return Err(format!(
                "{text:?} cannot be forwarded on a shared fill: use per_user = true for Authorization; cookies are stripped from fills"
            ));
        }
        if name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT
            || name == header::ACCEPT_ENCODING
            || name == header::RANGE
            || name.as_str().starts_with("if-")
            || is_hop_by_hop(&name)
        {
            return Err(format!(
                "{text:?} is set by the proxy itself on fills (or never forwarded); it cannot be listed"
            ));
        }
        if reshapes_urls(name.as_str()) {
            return Err(format!(
                "{text:?} tells origins which host, scheme, port or path to build URLs from; forwarded unkeyed it would poison the entry for everyone. Key on it with vary = [{text:?}] instead"
            ));
        }
        if names.contains(&name) {
            return Err(format!("{text:?} is listed twice"));
        }
        names.push(name);
    }
    Ok(names)
}

/// Headers proxies and frameworks use to override the URL an origin builds (host, scheme,
/// port, path, method): never forwarded unkeyed.
fn reshapes_urls(name: &str) -> bool {
    [
        "x-forwarded-",
        "x-original-",
        "x-rewrite-",
        "x-http-method",
        "x-method-",
    ]
    .iter()
    .any(|start| name.starts_with(start))
        || [
            "forwarded",
            "front-end-https",
            "x-url-scheme",
            "x-host",
            "x-scheme",
        ]
        .contains(&name)
}

/// `key`: a template over the path's parameters, or the default built from the route's
/// name; a parameter the template leaves out is a warning, since its values share one entry.
pub(super) fn cache_key(
    section: &RouteSection,
    name: &Option<String>,
    params: &[&str],
    line: usize,
    field: &dyn Fn(&str) -> String,
    locate: &Locator<'_>,
    warnings: &mut Vec<String>,
) -> Result<KeyTemplate, PolicyError> {
    let key = match &section.key {
        None => KeyTemplate::Default { name: name.clone() },
        Some(k) => KeyTemplate::parse(k.get_ref(), params)
            .map_err(|m| locate.at(Some(k.span()), field("key"), m))?,
    };
    for unused in key.unused_params(params) {
        warnings.push(format!(
            "{}:{line}: route {:?}: key leaves out {{{unused}}}: requests that differ only in it share one entry",
            locate.file(),
            section.pattern.get_ref()
        ));
    }
    Ok(key)
}

/// `query`: the whole query sorted, ignored, or only the listed parameters.
pub(super) fn query_rule(
    section: &RouteSection,
    field: &dyn Fn(&str) -> String,
    locate: &Locator<'_>,
) -> Result<QueryRule, PolicyError> {
    let query = match &section.query {
        None => QueryRule::Sorted,
        Some(q) => match q.get_ref() {
            QuerySetting::Mode(mode) if mode == "sorted" => QueryRule::Sorted,
            QuerySetting::Mode(mode) if mode == "ignore" => QueryRule::Ignore,
            QuerySetting::Allow(names) if !names.is_empty() => QueryRule::Allow(names.clone()),
            _ => {
                return Err(locate.at(
                    Some(q.span()),
                    field("query"),
                    "valid: \"sorted\" (the whole query, sorted, is part of the key), \"ignore\" \
                     (dropped from key and origin request) or a list of parameter names to keep",
                ));
            }
        },
    };
    Ok(query)
}

//! One `[[route]]` compiled into a [`Route`], in named steps: what it matches, its name,
//! what its writes invalidate, whether it caches at all, and, for a cached route, the
//! cache rule. The key's and the TTL's own rules are in `compile_key` and `ttl`.

use super::compile_key::{cache_key, forwarded_names, param_settings, query_rule, vary_names};
use super::error::Locator;
use super::file::RouteSection;
use super::ttl::compile_ttl;
use super::values::{flag, parse_duration, size};
use super::{DEFAULT_MAX_OBJECT_SIZE, DEFAULT_MAX_VARIANTS, DEFAULT_STATUSES, PolicyError};
use crate::policy::key::KeyTemplate;
use crate::policy::route::{
    Action, CacheRule, InvalidateRule, MethodSet, PathPattern, Route, Statuses,
};
use http::Method;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Route `index` of the file; `names` collects the names taken so far, `warnings` what is
/// valid but probably not meant.
pub(super) fn compile_route(
    index: usize,
    section: &RouteSection,
    locate: &Locator<'_>,
    names: &mut HashSet<String>,
    warnings: &mut Vec<String>,
) -> Result<Route, PolicyError> {
    let field = |name: &str| format!("route[{index}].{name}");
    let line = locate.line_col(section.pattern.span().start).0;

    let (methods, pattern) = route_match(section, &field, locate)?;
    let name = route_name(section, &field, locate, names)?;
    let params: Vec<&str> = pattern.param_names().collect();
    let invalidate = invalidate_rule(section, &methods, &params, &field, locate)?;

    let websocket = match &section.upgrades {
        None => true,
        Some(list) => {
            upgrades(list).map_err(|m| locate.at(Some(list.span()), field("upgrades"), m))?
        }
    };
    let timeout = section
        .timeout
        .as_ref()
        .map(|t| parse_duration(t, &field("timeout"), locate))
        .transpose()?;
    let cache = section.cache.as_ref().is_none_or(|c| *c.get_ref());
    if let Some(reason) = pass_reason(cache, &methods) {
        refuse_cache_settings(section, reason, &field, locate)?;
        return Ok(Route {
            label: route_label(name.as_deref(), section.pattern.get_ref()),
            name: name.map(Arc::from),
            methods,
            pattern,
            action: Action::Pass,
            invalidate,
            websocket,
            timeout,
            line,
        });
    }

    let rule = cache_rule(section, &name, &params, line, &field, locate, warnings)?;
    Ok(Route {
        label: route_label(name.as_deref(), section.pattern.get_ref()),
        name: name.map(Arc::from),
        methods,
        pattern,
        line,
        websocket,
        timeout,
        action: Action::Cache(Box::new(rule)),
        invalidate,
    })
}

/// `match = "GET|HEAD /path"` with its `params` settings applied.
fn route_match(
    section: &RouteSection,
    field: &dyn Fn(&str) -> String,
    locate: &Locator<'_>,
) -> Result<(MethodSet, PathPattern), PolicyError> {
    let (methods, mut pattern) = parse_match(section.pattern.get_ref())
        .map_err(|m| locate.at(Some(section.pattern.span()), field("match"), m))?;
    if let Some(settings) = &section.params {
        param_settings(&mut pattern, settings, field, locate)?;
    }
    Ok((methods, pattern))
}

/// `name`: letters, digits, `_` and `-`, not a reserved namespace, and not another route's.
fn route_name(
    section: &RouteSection,
    field: &dyn Fn(&str) -> String,
    locate: &Locator<'_>,
    names: &mut HashSet<String>,
) -> Result<Option<String>, PolicyError> {
    let name = match &section.name {
        None => None,
        Some(n) => {
            let text = n.get_ref();
            let mut chars = text.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(locate.at(
                    Some(n.span()),
                    field("name"),
                    format!("name {text:?} must start with a letter and use letters, digits, '_' and '-'"),
                ));
            }
            if crate::policy::key::RESERVED_NAMESPACES.contains(&text.as_str()) {
                return Err(locate.at(
                    Some(n.span()),
                    field("name"),
                    format!(
                        "{text:?} is reserved: keys starting with \"{text}:\" hold the proxy's own data ({})",
                        crate::policy::key::RESERVED_NAMESPACES.join(", ")
                    ),
                ));
            }
            if !names.insert(text.clone()) {
                return Err(locate.at(
                    Some(n.span()),
                    field("name"),
                    format!("another route is already named {text:?}"),
                ));
            }
            Some(text.clone())
        }
    };
    Ok(name)
}

/// `invalidate` and `invalidate_tags`: what a successful write drops, refused on a route
/// that takes no writes.
fn invalidate_rule(
    section: &RouteSection,
    methods: &MethodSet,
    params: &[&str],
    field: &dyn Fn(&str) -> String,
    locate: &Locator<'_>,
) -> Result<InvalidateRule, PolicyError> {
    let invalidate = InvalidateRule {
        keys: templates(
            section.invalidate.as_ref(),
            params,
            &field("invalidate"),
            locate,
        )?,
        tags: templates(
            section.invalidate_tags.as_ref(),
            params,
            &field("invalidate_tags"),
            locate,
        )?,
    };
    if !methods.allows_writes() {
        for (name, list) in [
            ("invalidate", &section.invalidate),
            ("invalidate_tags", &section.invalidate_tags),
        ] {
            if let Some(list) = list {
                return Err(locate.at(
                    Some(list.span()),
                    field(name),
                    format!("has no effect: only successful writes invalidate, and this route takes only {methods}"),
                ));
            }
        }
    }
    Ok(invalidate)
}

/// Why a route never caches (`cache = false`, or no GET or HEAD), if it does not.
fn pass_reason(cache: bool, methods: &MethodSet) -> Option<String> {
    if !cache {
        Some("has no effect with cache = false".to_string())
    } else if !methods.allows_reads() {
        Some(format!(
            "has no effect: only GET and HEAD are cached, and this route takes {methods}"
        ))
    } else {
        None
    }
}

/// A cache setting on a route that never caches is refused: it would look like it does
/// something.
fn refuse_cache_settings(
    section: &RouteSection,
    reason: String,
    field: &dyn Fn(&str) -> String,
    locate: &Locator<'_>,
) -> Result<(), PolicyError> {
    let cache_fields: [(&str, Option<std::ops::Range<usize>>); 22] = [
        ("per_user", section.per_user.as_ref().map(Spanned::span)),
        (
            "forward_headers",
            section.forward_headers.as_ref().map(Spanned::span),
        ),
        ("vary", section.vary.as_ref().map(Spanned::span)),
        (
            "max_variants",
            section.max_variants.as_ref().map(Spanned::span),
        ),
        ("l1", section.l1.as_ref().map(Spanned::span)),
        ("tags", section.tags.as_ref().map(Spanned::span)),
        ("ttl", section.ttl.as_ref().map(Spanned::span)),
        ("ttl_max", section.ttl_max.as_ref().map(Spanned::span)),
        (
            "ttl_default",
            section.ttl_default.as_ref().map(Spanned::span),
        ),
        (
            "ttl_heuristic",
            section.ttl_heuristic.as_ref().map(Spanned::span),
        ),
        ("ttl_jitter", section.ttl_jitter.as_ref().map(Spanned::span)),
        (
            "stale_while_revalidate",
            section.stale_while_revalidate.as_ref().map(Spanned::span),
        ),
        (
            "stale_if_error",
            section.stale_if_error.as_ref().map(Spanned::span),
        ),
        (
            "early_refresh",
            section.early_refresh.as_ref().map(Spanned::span),
        ),
        (
            "honor_client_no_cache",
            section.honor_client_no_cache.as_ref().map(Spanned::span),
        ),
        ("key", section.key.as_ref().map(Spanned::span)),
        ("query", section.query.as_ref().map(Spanned::span)),
        ("statuses", section.statuses.as_ref().map(Spanned::span)),
        (
            "max_object_size",
            section.max_object_size.as_ref().map(Spanned::span),
        ),
        ("verify", section.verify.as_ref().map(Spanned::span)),
        ("compress", section.compress.as_ref().map(Spanned::span)),
        ("ignore_cookies", None),
    ];
    for (name, span) in cache_fields {
        let present =
            span.is_some() || (name == "ignore_cookies" && section.ignore_cookies.is_some());
        if present {
            let span = span.or_else(|| Some(section.pattern.span()));
            return Err(locate.at(span, field(name), reason));
        }
    }
    Ok(())
}

/// A cached route's rule: freshness, key, what is stored, and how many variants.
fn cache_rule(
    section: &RouteSection,
    name: &Option<String>,
    params: &[&str],
    line: usize,
    field: &dyn Fn(&str) -> String,
    locate: &Locator<'_>,
    warnings: &mut Vec<String>,
) -> Result<CacheRule, PolicyError> {
    let ttl = compile_ttl(section, field, locate)?;
    let window = |setting: &Option<Spanned<String>>, name: &str| {
        setting.as_ref().map_or(Ok(Duration::ZERO), |d| {
            parse_duration(d, &field(name), locate)
        })
    };
    let stale_while_revalidate = window(&section.stale_while_revalidate, "stale_while_revalidate")?;
    let stale_if_error = window(&section.stale_if_error, "stale_if_error")?;

    let key = cache_key(section, name, params, line, field, locate, warnings)?;
    let query = query_rule(section, field, locate)?;

    let statuses = match &section.statuses {
        None if ttl.is_origin() => Statuses::ByRfc,
        None => Statuses::Listed(DEFAULT_STATUSES.to_vec()),
        Some(list) => {
            let bad = list
                .get_ref()
                .iter()
                .find(|s| !(200..=599).contains(*s) || **s == 206 || **s == 304);
            if let Some(bad) = bad {
                return Err(locate.at(
                    Some(list.span()),
                    field("statuses"),
                    format!("status {bad} cannot be stored; valid: complete responses 200-599 other than 206 and 304"),
                ));
            }
            if list.get_ref().is_empty() {
                return Err(locate.at(
                    Some(list.span()),
                    field("statuses"),
                    "list at least one status, e.g. [200]",
                ));
            }
            Statuses::Listed(list.get_ref().clone())
        }
    };

    let max_object_size = match &section.max_object_size {
        None => DEFAULT_MAX_OBJECT_SIZE,
        Some(setting) => size(setting, &field("max_object_size"), locate)?,
    };
    let tags = templates(section.tags.as_ref(), params, &field("tags"), locate)?;
    let vary = match &section.vary {
        None => Vec::new(),
        Some(list) => {
            vary_names(list).map_err(|m| locate.at(Some(list.span()), field("vary"), m))?
        }
    };
    let max_variants = match &section.max_variants {
        None => DEFAULT_MAX_VARIANTS,
        Some(n) if *n.get_ref() >= 1 => *n.get_ref(),
        Some(n) => {
            return Err(locate.at(
                Some(n.span()),
                field("max_variants"),
                "must be at least 1 (the number of distinct query/header/user variants one key may have)",
            ));
        }
    };
    let forward_headers = match &section.forward_headers {
        None => None,
        Some(list) => Some(
            forwarded_names(list)
                .map_err(|m| locate.at(Some(list.span()), field("forward_headers"), m))?,
        ),
    };
    let verify = section
        .verify
        .as_ref()
        .map(|setting| super::verify::fraction(setting, &field("verify"), locate))
        .transpose()?;
    Ok(CacheRule {
        ttl,
        stale_while_revalidate,
        stale_if_error,
        early_refresh: flag(&section.early_refresh),
        honor_client_no_cache: flag(&section.honor_client_no_cache),
        key,
        query,
        statuses,
        ignore_cookies: section.ignore_cookies.unwrap_or(false),
        max_object_size,
        tags,
        l1: flag(&section.l1),
        per_user: flag(&section.per_user),
        vary,
        max_variants,
        forward_headers,
        verify,
        compress: section.compress.as_ref().is_none_or(|c| *c.get_ref()),
    })
}

/// `upgrades = ["websocket"]` or `[]`: whether the route tunnels WebSocket. Nothing else
/// can be listed: after a 101 the connection is a raw tunnel past every check the proxy makes.
fn upgrades(list: &Spanned<Vec<String>>) -> Result<bool, String> {
    let mut websocket = false;
    for protocol in list.get_ref() {
        let name = protocol.split('/').next().unwrap_or_default();
        if name.eq_ignore_ascii_case("websocket") {
            websocket = true;
        } else if name.eq_ignore_ascii_case("h2c") {
            return Err("h2c is never tunnelled: after the switch every HTTP/2 request would reach the origin past the proxy's checks (clients fall back to HTTP/1.1 when no 101 comes)".into());
        } else {
            return Err(format!(
                "{protocol:?} cannot be tunnelled; valid: [\"websocket\"] (the default) or [] (no upgrades)"
            ));
        }
    }
    Ok(websocket)
}

/// The route's label in logs and metrics: its name, else its `match` text.
fn route_label(name: Option<&str>, pattern: &str) -> Arc<str> {
    Arc::from(name.unwrap_or(pattern))
}

/// A list of key or tag templates over the route's path parameters.
fn templates(
    list: Option<&Spanned<Vec<String>>>,
    params: &[&str],
    field: &str,
    locate: &Locator<'_>,
) -> Result<Vec<KeyTemplate>, PolicyError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.get_ref()
        .iter()
        .map(|text| {
            KeyTemplate::parse(text, params).map_err(|m| locate.at(Some(list.span()), field, m))
        })
        .collect()
}

/// `"GET|HEAD /path"` or `"/path"`.
fn parse_match(text: &str) -> Result<(MethodSet, PathPattern), String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let (methods, path) = match parts.as_slice() {
        [path] => (MethodSet::Any, *path),
        [methods, path] => {
            let mut list = Vec::new();
            for name in methods.split('|') {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(format!(
                        "method {name:?} in {text:?}: write methods in upper case, separated by '|', e.g. \"GET|HEAD /path\""
                    ));
                }
                let method = Method::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                if !list.contains(&method) {
                    list.push(method);
                }
            }
            (MethodSet::Only(list), *path)
        }
        _ => {
            return Err(format!(
                "{text:?}: expected \"[METHOD[|METHOD]] /path\", e.g. \"GET /api/items/{{id}}\""
            ));
        }
    };
    Ok((methods, PathPattern::parse(path)?))
}

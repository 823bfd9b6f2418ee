//! The whole file compiled into a [`Policy`]: listeners, origin, Redis, invalidation,
//! collapsing, limits and the route table, each checked with the span of what is wrong.
//! Routes one by one are `compile_route`'s.

use super::compile_route::compile_route;
use super::env::{read_password, read_signing_key};
use super::error::Locator;
use super::file::PolicyFile;
use super::settings::{
    CollapseSettings, InvalidationSettings, ListenSettings, OriginSettings, RedisSettings,
};
use super::urls::{check_redis_url, check_tls_scheme, origin_tls, origin_url};
use super::values::{duration, size};
use super::{Policy, PolicyError, limits};
use crate::http::freshness::Ttl;
use crate::net::tls::TlsFiles;
use crate::policy::route::{Action, Route, RouteTable};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

pub(super) fn compile(
    raw: PolicyFile,
    file: &str,
    locate: &Locator<'_>,
) -> Result<Policy, PolicyError> {
    let addr = socket_addr(
        raw.listen.addr.as_ref(),
        "listen.addr",
        "127.0.0.1:8080",
        locate,
    )?;
    let admin = socket_addr(
        raw.listen.admin.as_ref(),
        "listen.admin",
        "127.0.0.1:9901",
        locate,
    )?;
    if addr == admin && addr.port() != 0 {
        return Err(locate.at(
            raw.listen.admin.as_ref().map(Spanned::span),
            "listen.admin",
            "the admin listener must not share the proxy's address: health and purge never belong on the public port",
        ));
    }

    let origin_url = origin_url(&raw.origin.url, locate)?;
    let origin_ca = raw
        .origin
        .tls_ca_file
        .as_ref()
        .map(|f| PathBuf::from(f.get_ref()));
    let origin_tls = origin_tls(&origin_url, origin_ca.as_deref()).map_err(|m| {
        let span = raw.origin.tls_ca_file.as_ref().map(|f| f.span());
        locate.at(
            span.or(Some(raw.origin.url.span())),
            "origin.tls_ca_file",
            m,
        )
    })?;
    let origin = OriginSettings {
        url: origin_url,
        tls_ca_file: origin_ca,
        tls: origin_tls,
        timeout: duration(
            raw.origin.timeout.as_ref(),
            "origin.timeout",
            Duration::from_secs(30),
            locate,
        )?,
    };

    let redis_url = raw.redis.url.as_ref().map_or_else(
        || "redis://127.0.0.1:6379".to_string(),
        |u| u.get_ref().clone(),
    );
    if let Some(url) = &raw.redis.url {
        check_redis_url(url.get_ref()).map_err(|m| locate.at(Some(url.span()), "redis.url", m))?;
    }
    let prefix = match &raw.redis.prefix {
        None => "cachalot".to_string(),
        Some(p) => {
            let text = p.get_ref();
            let valid = !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
                && !text.ends_with(':');
            if !valid {
                return Err(locate.at(
                    Some(p.span()),
                    "redis.prefix",
                    format!("prefix {text:?} must be non-empty letters, digits and _ - . : (not ending in ':')"),
                ));
            }
            text.clone()
        }
    };
    let tls = TlsFiles {
        ca_file: raw.redis.tls_ca_file.as_ref().map(|f| f.get_ref().into()),
        cert_file: raw.redis.tls_cert_file.as_ref().map(|f| f.get_ref().into()),
        key_file: raw.redis.tls_key_file.as_ref().map(|f| f.get_ref().into()),
    };
    let tls_span = [
        &raw.redis.tls_ca_file,
        &raw.redis.tls_cert_file,
        &raw.redis.tls_key_file,
    ]
    .into_iter()
    .flatten()
    .next()
    .map(Spanned::span);
    // Without a URL in the file, REDIS_URL or REDIS_HOST + REDIS_SSL supply it: the scheme
    // is checked against the TLS files once the environment is applied.
    if let Some(url) = &raw.redis.url {
        check_tls_scheme(url.get_ref(), &tls)
            .map_err(|m| locate.at(Some(url.span()), "redis.url", m))?;
    }
    if !tls.is_empty() {
        tls.client_config()
            .map_err(|m| locate.at(tls_span, "redis", m))?;
    }
    let password = match &raw.redis.password_file {
        None => None,
        Some(path) => Some(
            read_password(path.get_ref())
                .map_err(|m| locate.at(Some(path.span()), "redis.password_file", m))?,
        ),
    };
    let redis = RedisSettings {
        url: redis_url,
        prefix,
        timeout: duration(
            raw.redis.timeout.as_ref(),
            "redis.timeout",
            Duration::from_secs(2),
            locate,
        )?,
        password,
        tls,
        memory_sample_interval: duration(
            raw.redis.memory_sample_interval.as_ref(),
            "redis.memory_sample_interval",
            Duration::from_secs(10),
            locate,
        )?,
    };
    let collapse = CollapseSettings {
        lock_ttl: duration(
            raw.collapse.lock_ttl.as_ref(),
            "collapse.lock_ttl",
            Duration::from_secs(10),
            locate,
        )?,
        wait: duration(
            raw.collapse.wait.as_ref(),
            "collapse.wait",
            Duration::from_secs(5),
            locate,
        )?,
    };

    let invalidation = InvalidationSettings {
        channel: match &raw.invalidation.channel {
            None => "cache:invalidate".to_string(),
            Some(channel) if !channel.get_ref().trim().is_empty() => channel.get_ref().clone(),
            Some(channel) => {
                return Err(locate.at(
                    Some(channel.span()),
                    "invalidation.channel",
                    "the channel name must not be empty (default \"cache:invalidate\")",
                ));
            }
        },
        forward_tag_headers: raw.invalidation.forward_tag_headers.unwrap_or(false),
        secret: match &raw.invalidation.secret_file {
            None => None,
            Some(path) => Some(
                read_signing_key(path.get_ref())
                    .map_err(|m| locate.at(Some(path.span()), "invalidation.secret_file", m))?,
            ),
        },
    };

    let l1 = match &raw.l1 {
        None => None,
        Some(section) => Some(size(&section.size, "l1.size", locate)?),
    };

    let limits = limits::compile(&raw.limits, locate)?;
    let verify = super::verify::compile(&raw.verify, locate)?;
    let compression = super::compression::compile(&raw.compression, locate)?;
    let hosts = match &raw.listen.hosts {
        None => Vec::new(),
        Some(list) => {
            served_hosts(list).map_err(|m| locate.at(Some(list.span()), "listen.hosts", m))?
        }
    };

    let mut warnings = Vec::new();
    let mut names = HashSet::new();
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (index, section) in raw.routes.iter().enumerate() {
        let route = compile_route(index, section, locate, &mut names, &mut warnings)?;
        if l1.is_none()
            && let Some(flag) = section.l1.as_ref().filter(|flag| *flag.get_ref())
        {
            return Err(locate.at(
                Some(flag.span()),
                format!("route[{index}].l1"),
                "the in-process tier is off: size it first with [l1] size = \"64MiB\"",
            ));
        }
        routes.push(route);
    }
    warn_on_uniform_ttl(&routes, &mut warnings);
    let routes = RouteTable::new(routes).map_err(|(line, message)| PolicyError {
        file: file.to_string(),
        position: Some((line, 1)),
        field: "route.match".into(),
        message,
    })?;

    Ok(Policy {
        file: file.to_string(),
        listen: ListenSettings {
            addr,
            admin,
            hosts,
            underscores_in_headers: raw.listen.underscores_in_headers.unwrap_or(false),
        },
        origin,
        redis,
        collapse,
        routes,
        invalidation,
        l1,
        limits,
        verify,
        compression,
        warnings,
        from_environment: Vec::new(),
        source_digest: [0; 32],
    })
}

/// `[listen] hosts`: each a valid `host[:port]`, kept in the normal form requests are
/// compared in (so `Example.com:80` in the file matches `Host: example.com`).
fn served_hosts(list: &Spanned<Vec<String>>) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for text in list.get_ref() {
        let host = crate::http::authority::normalize(text.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| format!("{text:?} is not a host name, host:port or [IPv6] literal"))?;
        if hosts.contains(&host) {
            return Err(format!("{text:?} is listed twice (as {host:?})"));
        }
        hosts.push(host);
    }
    if hosts.is_empty() {
        return Err("an empty list would refuse every request; leave hosts out to serve any host (each keyed apart)".into());
    }
    Ok(hosts)
}

fn warn_on_uniform_ttl(routes: &[Route], warnings: &mut Vec<String>) {
    let mut by_ttl: BTreeMap<Duration, usize> = BTreeMap::new();
    for route in routes {
        if let Action::Cache(rule) = &route.action
            && let Ttl::Fixed { ttl, .. } = rule.ttl
        {
            *by_ttl.entry(ttl).or_default() += 1;
        }
    }
    if by_ttl.len() == 1
        && let Some((ttl, count)) = by_ttl.iter().next()
        && *count >= 3
    {
        warnings.push(format!(
            "all {count} cached routes use ttl = \"{}\": TTL is a product decision per kind of data \
             (how stale may a credential, a profile, a statistic be?); check that one value fits them all",
            humantime::format_duration(*ttl)
        ));
    }
}

fn socket_addr(
    value: Option<&Spanned<String>>,
    field: &str,
    default: &str,
    locate: &Locator<'_>,
) -> Result<SocketAddr, PolicyError> {
    let Some(value) = value else {
        return Ok(default.parse().expect("default address is valid"));
    };
    value.get_ref().parse().map_err(|_| {
        locate.at(
            Some(value.span()),
            field,
            format!(
                "{:?} is not an address; expected IP:PORT such as \"{default}\"",
                value.get_ref()
            ),
        )
    })
}

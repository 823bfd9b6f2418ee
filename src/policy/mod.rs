//! The policy: one TOML file that says which routes are cached, for how long, under which
//! Redis key. It is parsed and validated up front into a [`Policy`]; nothing unchecked
//! reaches the request path, and a policy that does not validate never runs.

mod error;
mod file;
pub mod generation;
pub mod key;
mod limits;
pub mod route;
mod schema;

pub use error::PolicyError;
pub use limits::Limits;
pub use schema::schema;

use crate::http::freshness::{DEFAULT_ORIGIN_TTL_MAX, Ttl};
use crate::net::tls::TlsFiles;
use crate::policy::key::{KeyTemplate, QueryRule};
use crate::policy::route::{
    Action, CacheRule, InvalidateRule, MethodSet, PathPattern, Route, RouteTable, Segment, Statuses,
};
use crate::store::message::{MIN_SECRET_LEN, SigningKey};
use error::Locator;
use file::{PolicyFile, QuerySetting, RouteSection, SizeSetting};
use http::{Method, Uri};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// Statuses stored when a route does not list its own (RFC 9111's safe defaults for APIs:
/// a cached 404 would hide a credential issued a minute later).
pub const DEFAULT_STATUSES: &[u16] = &[200, 203];
/// Bodies larger than this are streamed through and not stored, unless a route says otherwise.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 8 * 1024 * 1024;
/// Distinct variants (query strings, `vary` headers, users) one key may have in Redis at a
/// time, unless a route says otherwise: random query strings cannot fill Redis.
pub const DEFAULT_MAX_VARIANTS: u64 = 1000;

/// A validated policy, ready to serve.
#[derive(Debug)]
pub struct Policy {
    /// Where the policy came from, for messages.
    pub file: String,
    pub listen: ListenSettings,
    pub origin: OriginSettings,
    pub redis: RedisSettings,
    pub collapse: CollapseSettings,
    pub routes: RouteTable,
    pub invalidation: InvalidationSettings,
    /// The in-process tier's size in bytes, when the policy has an `[l1]` section.
    pub l1: Option<u64>,
    /// What one client may cost the proxy (`[limits]`).
    pub limits: Limits,
    /// Things that are valid but probably not meant (printed by `check` and at start).
    pub warnings: Vec<String>,
    /// The environment variables that set a value here (winning over the file), for
    /// `check` to say where a setting came from.
    pub from_environment: Vec<&'static str>,
    /// The SHA-256 of the text this policy was read from: the file watcher reloads only
    /// when the file's content differs from it.
    pub source_digest: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct ListenSettings {
    /// The public proxy listener.
    pub addr: SocketAddr,
    /// Health (and later metrics and purge); never the public port.
    pub admin: SocketAddr,
    /// `hosts = [...]`: the authorities (normal form, see `authority`) this proxy serves;
    /// a request for any other is answered 421. Empty: any valid authority, keyed apart.
    pub hosts: Vec<String>,
    /// Whether header names with `_` reach the origin (nginx's `underscores_in_headers`).
    /// Off: WSGI servers read `X_Forwarded_Host` as `X-Forwarded-Host`.
    pub underscores_in_headers: bool,
}

#[derive(Debug, Clone)]
pub struct OriginSettings {
    /// `http://host:port` or `https://host:port` of the API behind the proxy.
    pub url: Uri,
    /// PEM certificates of the CAs an `https://` origin must chain to, instead of the
    /// system roots (a private CA in front of an internal API).
    pub tls_ca_file: Option<PathBuf>,
    /// The TLS client for an `https://` origin, built when the policy loads so a bad CA file
    /// is a policy error rather than a 502 on every request.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How long the origin may take to answer with a response head (and, for responses
    /// the proxy stores, the whole body) before the client gets a 504.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Every key the proxy writes starts with `<prefix>:`.
    pub prefix: String,
    /// Per-command timeout; a slower Redis counts as down and requests go to the origin.
    pub timeout: Duration,
    /// A password from `password_file` or the environment; wins over one in the URL.
    pub password: Option<Secret>,
    /// CA and client certificate files for `rediss://`.
    pub tls: TlsFiles,
}

/// A password that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct InvalidationSettings {
    /// The pub/sub channel other services publish invalidations on (not prefixed: Flask
    /// services already publish to `cache:invalidate`).
    pub channel: String,
    /// Whether `Surrogate-Key` / `Cache-Tag` response headers reach clients (they are
    /// instructions to the cache, stripped by default).
    pub forward_tag_headers: bool,
    /// The shared secret messages on the channel must be signed with (`secret_file`);
    /// `None`: any message counts (then only a Redis ACL decides who may publish).
    pub secret: Option<SigningKey>,
}

#[derive(Debug, Clone)]
pub struct CollapseSettings {
    /// The `SET NX PX` lock's lifetime: a crashed leader frees its key after this.
    pub lock_ttl: Duration,
    /// How long a waiter waits for the leader's fill before asking the origin itself.
    pub wait: Duration,
}

impl Policy {
    /// How long the origin may take on a request of `route` (its `timeout`, else
    /// `[origin] timeout`). Read per request, so a reload changes it at once.
    pub fn origin_timeout(&self, route: Option<&Route>) -> Duration {
        route.and_then(|r| r.timeout).unwrap_or(self.origin.timeout)
    }

    /// The longest any origin request may take under this policy: how long a fill that
    /// started before an invalidation can still land.
    pub fn longest_origin_timeout(&self) -> Duration {
        self.routes
            .iter()
            .filter_map(|r| r.timeout)
            .fold(self.origin.timeout, Duration::max)
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: file.clone(),
            position: None,
            field: String::new(),
            message: format!("cannot read the policy file: {e}"),
        })?;
        Self::parse(&source, &file)
    }

    /// Validates a policy given as text; `file` names it in errors.
    pub fn parse(source: &str, file: &str) -> Result<Self, PolicyError> {
        let locate = Locator::new(file, source);
        let raw = deserialize(source, &locate)?;
        let policy = compile(raw, file, &locate)?;
        Ok(Policy {
            source_digest: Sha256::digest(source.as_bytes()).into(),
            ..policy
        })
    }

    /// Applies the environment, which wins over the file (12-factor style): the listen
    /// addresses from `CACHALOT_LISTEN` and `CACHALOT_ADMIN_LISTEN`, the origin from
    /// `CACHALOT_ORIGIN`; `REDIS_URL`, or the managed-Redis form `REDIS_HOST` +
    /// `REDIS_PORT` + `REDIS_SSL`; and a password from `REDIS_PASSWORD` or
    /// `REDIS_ACCESS_KEY`.
    pub fn apply_env(&mut self) -> Result<(), PolicyError> {
        self.apply_vars(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`Policy::apply_env`] over any source of variables.
    pub fn apply_vars(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), PolicyError> {
        let fail = |field: &str, message: String| PolicyError {
            file: "environment".into(),
            position: None,
            field: field.into(),
            message,
        };
        let address = |name: &'static str, example: &str| -> Result<_, PolicyError> {
            var(name)
                .map(|text| {
                    text.trim().parse::<SocketAddr>().map_err(|_| {
                        fail(
                            name,
                            format!(
                                "{text:?} is not an address; expected IP:PORT such as \"{example}\""
                            ),
                        )
                    })
                })
                .transpose()
        };
        if let Some(addr) = address("CACHALOT_LISTEN", "0.0.0.0:8080")? {
            self.listen.addr = addr;
            self.from_environment.push("CACHALOT_LISTEN");
        }
        if let Some(addr) = address("CACHALOT_ADMIN_LISTEN", "0.0.0.0:9901")? {
            self.listen.admin = addr;
            self.from_environment.push("CACHALOT_ADMIN_LISTEN");
        }
        if self.listen.addr == self.listen.admin && self.listen.addr.port() != 0 {
            return Err(fail(
                "CACHALOT_ADMIN_LISTEN",
                format!(
                    "the admin listener must not share the proxy's address ({}): health and purge never belong on the public port",
                    self.listen.addr
                ),
            ));
        }
        if let Some(url) = var("CACHALOT_ORIGIN") {
            self.origin.url =
                parse_origin_url(url.trim()).map_err(|m| fail("CACHALOT_ORIGIN", m))?;
            self.origin.tls = origin_tls(&self.origin.url, self.origin.tls_ca_file.as_deref())
                .map_err(|m| fail("CACHALOT_ORIGIN", m))?;
            self.from_environment.push("CACHALOT_ORIGIN");
        }
        if let Some(url) = var("REDIS_URL") {
            check_redis_url(&url).map_err(|m| fail("REDIS_URL", m))?;
            self.redis.url = url;
            self.from_environment.push("REDIS_URL");
        } else if let Some(host) = var("REDIS_HOST") {
            let tls = match var("REDIS_SSL").map(|v| v.trim().to_ascii_lowercase()) {
                None => false,
                Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => true,
                Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => false,
                Some(v) => {
                    return Err(fail(
                        "REDIS_SSL",
                        format!("{v:?} is not a yes/no value; use true or false"),
                    ));
                }
            };
            let port = match var("REDIS_PORT") {
                None if tls => 6380,
                None => 6379,
                Some(p) => p
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        fail(
                            "REDIS_PORT",
                            format!("{p:?} is not a port number (1-65535)"),
                        )
                    })?,
            };
            let scheme = if tls { "rediss" } else { "redis" };
            let url = format!("{scheme}://{}:{port}", host.trim());
            check_redis_url(&url).map_err(|m| fail("REDIS_HOST", m))?;
            self.redis.url = url;
            self.from_environment.push("REDIS_HOST");
        }
        if let Some(password) = var("REDIS_PASSWORD") {
            self.redis.password = Some(Secret::new(password));
            self.from_environment.push("REDIS_PASSWORD");
        } else if let Some(password) = var("REDIS_ACCESS_KEY") {
            self.redis.password = Some(Secret::new(password));
            self.from_environment.push("REDIS_ACCESS_KEY");
        }
        check_tls_scheme(&self.redis.url, &self.redis.tls).map_err(|m| fail("redis.url", m))?;
        Ok(())
    }

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

/// Hides a password in a Redis URL before printing it.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => format!("{}***{}", &url[..scheme + 3], &url[at..]),
            }
        }
        _ => url.to_string(),
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

fn deserialize(source: &str, locate: &Locator<'_>) -> Result<PolicyFile, PolicyError> {
    let deserializer = toml::Deserializer::parse(source)
        .map_err(|e| locate.at(e.span(), "", e.message().to_string()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let inner = e.into_inner();
        let (field, message) = type_error(field, inner.message());
        locate.at(inner.span(), field, message)
    })
}

fn compile(raw: PolicyFile, file: &str, locate: &Locator<'_>) -> Result<Policy, PolicyError> {
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
        warnings,
        from_environment: Vec::new(),
        source_digest: [0; 32],
    })
}

fn compile_route(
    index: usize,
    section: &RouteSection,
    locate: &Locator<'_>,
    names: &mut HashSet<String>,
    warnings: &mut Vec<String>,
) -> Result<Route, PolicyError> {
    let field = |name: &str| format!("route[{index}].{name}");
    let line = locate.line_col(section.pattern.span().start).0;

    let (methods, mut pattern) = parse_match(section.pattern.get_ref())
        .map_err(|m| locate.at(Some(section.pattern.span()), field("match"), m))?;
    if let Some(settings) = &section.params {
        param_settings(&mut pattern, settings, &field, locate)?;
    }

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

    let params: Vec<&str> = pattern.param_names().collect();
    let invalidate = InvalidateRule {
        keys: templates(
            section.invalidate.as_ref(),
            &params,
            &field("invalidate"),
            locate,
        )?,
        tags: templates(
            section.invalidate_tags.as_ref(),
            &params,
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
    let cache_fields: [(&str, Option<std::ops::Range<usize>>); 20] = [
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
        ("ignore_cookies", None),
    ];
    let pass_reason = if !cache {
        Some("has no effect with cache = false".to_string())
    } else if !methods.allows_reads() {
        Some(format!(
            "has no effect: only GET and HEAD are cached, and this route takes {methods}"
        ))
    } else {
        None
    };
    if let Some(reason) = pass_reason {
        for (name, span) in cache_fields {
            let present =
                span.is_some() || (name == "ignore_cookies" && section.ignore_cookies.is_some());
            if present {
                let span = span.or_else(|| Some(section.pattern.span()));
                return Err(locate.at(span, field(name), reason));
            }
        }
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

    let ttl = compile_ttl(section, &field, locate)?;
    let window = |setting: &Option<Spanned<String>>, name: &str| {
        setting.as_ref().map_or(Ok(Duration::ZERO), |d| {
            parse_duration(d, &field(name), locate)
        })
    };
    let stale_while_revalidate = window(&section.stale_while_revalidate, "stale_while_revalidate")?;
    let stale_if_error = window(&section.stale_if_error, "stale_if_error")?;

    let key = match &section.key {
        None => KeyTemplate::Default { name: name.clone() },
        Some(k) => KeyTemplate::parse(k.get_ref(), &params)
            .map_err(|m| locate.at(Some(k.span()), field("key"), m))?,
    };
    for unused in key.unused_params(&params) {
        warnings.push(format!(
            "{}:{line}: route {:?}: key leaves out {{{unused}}}: requests that differ only in it share one entry",
            locate.file(),
            section.pattern.get_ref()
        ));
    }

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

    let tags = templates(section.tags.as_ref(), &params, &field("tags"), locate)?;
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
    Ok(Route {
        label: route_label(name.as_deref(), section.pattern.get_ref()),
        name: name.map(Arc::from),
        methods,
        pattern,
        line,
        websocket,
        timeout,
        action: Action::Cache(Box::new(CacheRule {
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
        })),
        invalidate,
    })
}

fn flag(setting: &Option<Spanned<bool>>) -> bool {
    setting.as_ref().is_some_and(|flag| *flag.get_ref())
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

/// `params.<name>.case`: a string parameter whose values the origin compares without case
/// (a MySQL `_ci` collation) is keyed, and asked of the origin, in lower case, so `Alice`
/// and `alice` are one entry that one invalidation drops.
fn param_settings(
    pattern: &mut PathPattern,
    settings: &BTreeMap<String, Spanned<file::ParamSection>>,
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

/// `ttl = "5m"` (the policy decides) or `ttl = "origin"` (RFC 9111, with `ttl_max`,
/// `ttl_default` and `ttl_heuristic`), and `ttl_jitter` for either.
fn compile_ttl(
    section: &RouteSection,
    field: &dyn Fn(&str) -> String,
    locate: &Locator<'_>,
) -> Result<Ttl, PolicyError> {
    let Some(ttl_text) = &section.ttl else {
        return Err(locate.at(
            Some(section.pattern.span()),
            field("ttl"),
            "a cached route needs a ttl (e.g. ttl = \"5m\", or \"origin\" to follow the origin's \
             Cache-Control): there is no global default, TTL is a per-route product decision; to \
             forward without caching write cache = false",
        ));
    };
    let jitter = match &section.ttl_jitter {
        None => 0.0,
        Some(text) => text
            .get_ref()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|n| (0.0..=50.0).contains(n))
            .map(|n| n / 100.0)
            .ok_or_else(|| {
                locate.at(
                    Some(text.span()),
                    field("ttl_jitter"),
                    format!(
                        "{:?} is not a jitter; expected a percentage from \"0%\" to \"50%\", e.g. \"10%\"",
                        text.get_ref()
                    ),
                )
            })?,
    };
    if ttl_text.get_ref() != "origin" {
        let origin_only = [
            ("ttl_max", section.ttl_max.as_ref().map(Spanned::span)),
            (
                "ttl_default",
                section.ttl_default.as_ref().map(Spanned::span),
            ),
            (
                "ttl_heuristic",
                section.ttl_heuristic.as_ref().map(Spanned::span),
            ),
        ];
        if let Some((name, span)) = origin_only.into_iter().find(|(_, s)| s.is_some()) {
            return Err(locate.at(
                span,
                field(name),
                "only applies with ttl = \"origin\"; with a fixed ttl the policy alone decides freshness",
            ));
        }
        return Ok(Ttl::Fixed {
            ttl: parse_duration(ttl_text, &field("ttl"), locate)?,
            jitter,
        });
    }
    let max = match &section.ttl_max {
        None => DEFAULT_ORIGIN_TTL_MAX,
        Some(d) => parse_duration(d, &field("ttl_max"), locate)?,
    };
    let default = section
        .ttl_default
        .as_ref()
        .map(|d| parse_duration(d, &field("ttl_default"), locate))
        .transpose()?;
    Ok(Ttl::Origin {
        max,
        default,
        heuristic: flag(&section.ttl_heuristic),
        jitter,
    })
}

/// A route's `vary` list: header names, each once, that can be part of a key.
fn vary_names(list: &Spanned<Vec<String>>) -> Result<Vec<http::HeaderName>, String> {
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
        if crate::origin::is_hop_by_hop(&name) {
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

/// A route's `forward_headers`: header names a fill may pass to the origin. Refused: names
/// the fill sets itself or that never reach it, and credentials (use `per_user`).
fn forwarded_names(list: &Spanned<Vec<String>>) -> Result<Vec<http::HeaderName>, String> {
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
            || crate::origin::is_hop_by_hop(&name)
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

/// A size such as `"8MiB"`, `"512KiB"` or a number of bytes, above zero.
pub(super) fn size(
    setting: &Spanned<SizeSetting>,
    field: &str,
    locate: &Locator<'_>,
) -> Result<u64, PolicyError> {
    let bytes = match setting.get_ref() {
        SizeSetting::Bytes(n) => Ok(*n),
        SizeSetting::Text(text) => text.parse::<bytesize::ByteSize>().map(|b| b.as_u64()),
    };
    match bytes {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(locate.at(
            Some(setting.span()),
            field,
            "expected a size such as \"8MiB\", \"512KiB\" or a number of bytes above 0",
        )),
    }
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

fn origin_url(value: &Spanned<String>, locate: &Locator<'_>) -> Result<Uri, PolicyError> {
    parse_origin_url(value.get_ref()).map_err(|m| locate.at(Some(value.span()), "origin.url", m))
}

/// The origin's URL, from the file or `CACHALOT_ORIGIN`.
fn parse_origin_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|e| {
        format!("{text:?} is not a URL ({e}); expected e.g. \"http://127.0.0.1:5000\"")
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "{text:?}: only http:// and https:// origins are supported (the proxy talks HTTP/1.1 to the API behind it)"
        ));
    }
    if uri.authority().is_none() {
        return Err("the URL needs a host, e.g. \"http://127.0.0.1:5000\"".into());
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!(
            "{text:?}: give only scheme, host and port; requests keep their own path"
        ));
    }
    Ok(uri)
}

/// The TLS client an `https://` origin needs: its certificate verified against
/// `ca_file` (which replaces the system roots) or the system roots. A CA file with a plain
/// `http://` origin is refused: it would look like TLS is on when it is not.
fn origin_tls(
    url: &Uri,
    ca_file: Option<&Path>,
) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if url.scheme() != Some(&http::uri::Scheme::HTTPS) {
        return match ca_file {
            Some(_) => Err(format!(
                "tls_ca_file only applies to an https:// origin, and the origin is {url}: use https:// or remove tls_ca_file"
            )),
            None => Ok(None),
        };
    }
    let config = crate::net::tls::verifying_builder(ca_file, "[origin]")?.with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// URL schemes the Redis client is built for.
const REDIS_SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
    "redis+unix",
];

fn check_redis_url(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    if !REDIS_SCHEMES.contains(&scheme) {
        return Err(format!(
            "{:?} is not a Redis URL; expected one of {}://…, e.g. \"redis://127.0.0.1:6379\"",
            redact(url),
            REDIS_SCHEMES.join("://…, ")
        ));
    }
    fred::types::config::Config::from_url(url)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{:?} is not a Redis URL ({}); expected e.g. \"redis://127.0.0.1:6379\"",
                redact(url),
                e.details()
            )
        })
}

/// TLS files only mean something for a TLS URL; set with a plain one, they are a mistake
/// that would otherwise send the password in clear text.
fn check_tls_scheme(url: &str, tls: &TlsFiles) -> Result<(), String> {
    if tls.is_empty() || crate::store::connect::uses_tls(url) {
        return Ok(());
    }
    Err(format!(
        "{:?} is not a TLS URL, but [redis] has TLS files: use rediss:// (rediss-cluster://, rediss-sentinel://) or remove tls_ca_file, tls_cert_file and tls_key_file",
        redact(url)
    ))
}

/// A mounted secret's content, without the trailing newline editors and `echo` add.
fn read_password(path: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the password file {path:?}: {e}"))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(format!("the password file {path:?} is empty"));
    }
    Ok(Secret::new(password))
}

/// The invalidation secret from a mounted file, without the trailing newline editors add.
fn read_signing_key(path: &str) -> Result<SigningKey, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the invalidation secret file {path:?}: {e}"))?;
    let mut secret = bytes.as_slice();
    while let Some(rest) = secret
        .strip_suffix(b"\n")
        .or_else(|| secret.strip_suffix(b"\r"))
    {
        secret = rest;
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "the invalidation secret in {path:?} is {} bytes; use at least {MIN_SECRET_LEN} random bytes, e.g. `openssl rand -hex 32 > {path}`",
            secret.len()
        ));
    }
    Ok(SigningKey::new(secret))
}

pub(super) fn duration(
    value: Option<&Spanned<String>>,
    field: &str,
    default: Duration,
    locate: &Locator<'_>,
) -> Result<Duration, PolicyError> {
    value.map_or(Ok(default), |v| parse_duration(v, field, locate))
}

fn parse_duration(
    value: &Spanned<String>,
    field: &str,
    locate: &Locator<'_>,
) -> Result<Duration, PolicyError> {
    let text = value.get_ref();
    let fail = |message: String| locate.at(Some(value.span()), field, message);
    if let Some(unit) = abbreviated_calendar_unit(text) {
        let advice = if unit == "M" {
            "\"M\" would mean months; write \"m\" for minutes, or spell out \"months\" if you mean it"
        } else {
            "\"y\" would mean years; spell out \"years\" if you mean it"
        };
        return Err(fail(format!("{text:?}: {advice}")));
    }
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(fail("must be longer than zero".into())),
        Err(e) => Err(fail(format!(
            "{text:?} is not a duration ({e}); expected e.g. \"500ms\", \"30s\", \"10m\", \"1h\""
        ))),
    }
}

/// Units are case-sensitive (`m` is minutes, `ms` milliseconds); the one-letter calendar
/// units `M` (months) and `y` (years) are one typo away from `m` and never what a TTL or a
/// timeout means, so only their spelled-out forms are taken.
fn abbreviated_calendar_unit(text: &str) -> Option<&str> {
    text.split(|c: char| !c.is_ascii_alphabetic())
        .find(|unit| *unit == "M" || *unit == "y")
}

/// Settings written as durations: a bare number there gets a hint with the unit.
const DURATION_FIELDS: &[&str] = &[
    "ttl",
    "ttl_max",
    "ttl_default",
    "timeout",
    "lock_ttl",
    "wait",
    "stale_while_revalidate",
    "stale_if_error",
    "header_timeout",
    "idle_timeout",
];

/// A type error from the TOML reader, as the policy's author can act on it: the field's
/// path without the reader's internals, and for a bare number where a duration goes, the
/// spelling that works.
fn type_error(field: String, message: &str) -> (String, String) {
    let field = field.replace(".$__serde_spanned_private_value", "");
    let number = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
            .filter(|(_, rest)| rest.contains("expected a string"))
            .map(|(number, _)| number.to_string())
    };
    let duration = DURATION_FIELDS.contains(&field.rsplit('.').next().unwrap_or_default());
    let message = match (
        number("invalid type: integer `"),
        number("invalid type: floating point `"),
    ) {
        (Some(n), _) if duration => format!(
            "{n} has no unit; a duration is a string with one: write \"{n}s\" (or \"{n}ms\", \"{n}m\", \"{n}h\")"
        ),
        (_, Some(n)) if duration => format!(
            "{n} has no unit; a duration is a string with one, in whole units: e.g. \"500ms\", \"30s\", \"10m\""
        ),
        (Some(n), _) | (_, Some(n)) => format!("expected a string: write \"{n}\""),
        _ => message.to_string(),
    };
    (field, message)
}

#[cfg(test)]
mod tests;

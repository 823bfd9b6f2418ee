//! The policy file exactly as written: serde types that mirror the TOML.
//!
//! Unknown fields are errors (`deny_unknown_fields`), so a typo such as `tll = "10m"` is
//! reported instead of silently leaving a route uncached. Values that need checking keep
//! their span, so validation can name the line they came from.
//!
//! The same types generate the file's JSON Schema (`schema.rs`): doc comments here are the
//! descriptions an editor shows, so they are written for the policy's author. `Spanned`
//! values and text-with-units take their schema from `#[schemars(with)]`.

use super::schema_types::{Case, Duration, Fraction, Percent, Query, Size, StoredCoding, Ttl};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A cachalot policy: which routes are cached, for how long, under which Redis key.
/// Unknown fields are errors. See docs/policy.md, "The policy file".
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "cachalot policy")]
pub(crate) struct PolicyFile {
    #[serde(default)]
    pub listen: ListenSection,
    pub origin: OriginSection,
    #[serde(default)]
    pub redis: RedisSection,
    #[serde(default)]
    pub collapse: CollapseSection,
    #[serde(default)]
    pub invalidation: InvalidationSection,
    pub l1: Option<L1Section>,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub verify: VerifySection,
    #[serde(default)]
    pub compression: CompressionSection,
    /// The routes; the most specific match wins, whatever the order.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSection>,
}

/// Where the proxy listens, and which requests it takes.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenSection {
    /// The proxy's address, "host:port" (default "127.0.0.1:8080"; CACHALOT_LISTEN wins).
    #[schemars(with = "Option<String>")]
    pub addr: Option<Spanned<String>>,
    /// The admin listener (health, metrics), "host:port" (default "127.0.0.1:9901");
    /// never the public port. CACHALOT_ADMIN_LISTEN wins.
    #[schemars(with = "Option<String>")]
    pub admin: Option<Spanned<String>>,
    /// The hosts served; any other gets 421 (default: any valid Host, keyed apart).
    #[schemars(with = "Option<Vec<String>>")]
    pub hosts: Option<Spanned<Vec<String>>>,
    /// Keep request headers whose names contain "_" (default false: they are dropped, as
    /// WSGI reads X_Forwarded_Host as X-Forwarded-Host).
    pub underscores_in_headers: Option<bool>,
}

/// The application behind the proxy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OriginSection {
    /// The origin's URL: scheme, host and port only (CACHALOT_ORIGIN wins).
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// For the response head, and for the whole body of one being stored (default "30s").
    #[schemars(with = "Option<Duration>")]
    pub timeout: Option<Spanned<String>>,
    /// CA certificates (PEM) that an https:// origin's certificate must chain to, replacing
    /// the system's roots (default: the system's roots).
    #[schemars(with = "Option<String>")]
    pub tls_ca_file: Option<Spanned<String>>,
}

/// The shared cache (REDIS_URL and REDIS_PASSWORD win over the file).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisSection {
    /// redis://, rediss:// (TLS), redis+unix://, redis-cluster:// or redis-sentinel://
    /// (default "redis://127.0.0.1:6379"); see docs/operations.md, "Connecting to Redis".
    #[schemars(with = "Option<String>")]
    pub url: Option<Spanned<String>>,
    /// Every key written starts with "<prefix>:" (default "cachalot").
    #[schemars(with = "Option<String>")]
    pub prefix: Option<Spanned<String>>,
    /// Per command; slower counts as down and the request goes to the origin (default "2s").
    #[schemars(with = "Option<Duration>")]
    pub timeout: Option<Spanned<String>>,
    /// A file holding the Redis password (a mounted secret).
    #[schemars(with = "Option<String>")]
    pub password_file: Option<Spanned<String>>,
    /// CA certificates (PEM) for rediss:// (default: the system's roots).
    #[schemars(with = "Option<String>")]
    pub tls_ca_file: Option<Spanned<String>>,
    /// A client certificate (PEM) for rediss://, with tls_key_file.
    #[schemars(with = "Option<String>")]
    pub tls_cert_file: Option<Spanned<String>>,
    /// The client certificate's private key (PEM).
    #[schemars(with = "Option<String>")]
    pub tls_key_file: Option<Spanned<String>>,
    /// How often the memory-per-route sampler scans a slice of the proxy's keys (at most
    /// 10000 per run) and, at the end of a pass, reads MEMORY USAGE of a sample (default "10s").
    #[schemars(with = "Option<Duration>")]
    pub memory_sample_interval: Option<Spanned<String>>,
}

/// Concurrent misses for one key make a single origin request, across every instance.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CollapseSection {
    /// The fill lock always expires, so a crashed leader frees its key (default "10s").
    #[schemars(with = "Option<Duration>")]
    pub lock_ttl: Option<Spanned<String>>,
    /// How long a waiter waits for the leader's fill before asking the origin itself
    /// (default "5s").
    #[schemars(with = "Option<Duration>")]
    pub wait: Option<Spanned<String>>,
}

/// What one client may cost the proxy.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSection {
    /// The largest request body; larger gets 413 (default "16MiB").
    #[schemars(with = "Option<Size>")]
    pub max_body: Option<Spanned<SizeSetting>>,
    /// The largest request line and headers; larger gets 431 (default "64KiB", at least
    /// "8KiB").
    #[schemars(with = "Option<Size>")]
    pub max_head_size: Option<Spanned<SizeSetting>>,
    /// The most header lines in a request; more gets 431 (default 100).
    #[schemars(with = "Option<u64>")]
    pub max_headers: Option<Spanned<u64>>,
    /// To send a complete head; also ends idle HTTP/1 keep-alive (default "30s").
    #[schemars(with = "Option<Duration>")]
    pub header_timeout: Option<Spanned<String>>,
    /// No byte either way (HTTP/2: no stream progress) closes the connection (default
    /// "120s").
    #[schemars(with = "Option<Duration>")]
    pub idle_timeout: Option<Spanned<String>>,
    /// A response the client stops taking is cut off (default "60s").
    #[schemars(with = "Option<Duration>")]
    pub send_timeout: Option<Spanned<String>>,
    /// Open connections; more get 503 and are closed (default 10000).
    #[schemars(with = "Option<u64>")]
    pub max_connections: Option<Spanned<u64>>,
    /// HTTP/2 concurrent streams per connection (default 128).
    #[schemars(with = "Option<u64>")]
    pub h2_max_streams: Option<Spanned<u64>>,
    /// HTTP/2 streams reset before accepted (rapid reset), and as many after: past either,
    /// GOAWAY (default 20).
    #[schemars(with = "Option<u64>")]
    pub h2_max_resets: Option<Spanned<u64>>,
}

/// Shadow verification: a share of fresh hits is also asked of the origin, in the
/// background, and its answer compared with the one served (docs/operations.md).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifySection {
    /// The share of fresh hits verified on cached routes without their own verify, from 0
    /// (the default: off) to 1 (every hit), e.g. 0.01.
    #[schemars(with = "Option<Fraction>")]
    pub fraction: Option<Spanned<FractionSetting>>,
    /// Verification requests in flight at once per instance; a hit picked while all are
    /// busy is skipped and counted (default 4, at most 256).
    #[schemars(with = "Option<u64>", range(min = 1, max = 256))]
    pub concurrency: Option<Spanned<u64>>,
}

/// The in-process tier: hits for routes with `l1 = true` answered from the proxy's memory.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct L1Section {
    /// Its size, weighed by body and headers, e.g. "64MiB".
    #[schemars(with = "Size")]
    pub size: Spanned<SizeSetting>,
}

/// Bodies stored compressed: smaller entries in Redis, and compressed hits with no work per
/// request. On by default for text types; see docs/policy.md, "Compression".
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompressionSection {
    /// false: every body is stored and served as the origin sent it (default true).
    pub enabled: Option<bool>,
    /// The coding bodies are stored in; clients that do not accept it get the body
    /// decoded (default "gzip", which nearly every client accepts).
    #[schemars(with = "Option<StoredCoding>")]
    pub coding: Option<Spanned<String>>,
    /// The coding's level: gzip 1-9, br 0-11, zstd 1-19 (default 6, 5, 3).
    #[schemars(with = "Option<u64>")]
    pub level: Option<Spanned<u64>>,
    /// Smaller bodies are stored as they are (default "512B").
    #[schemars(with = "Option<Size>")]
    pub min_size: Option<Spanned<SizeSetting>>,
    /// The media types compressed, replacing the defaults: "type/subtype", "type/*" or
    /// "+suffix" (default: text/*, JSON, JavaScript, XML, SVG and other text formats).
    #[schemars(with = "Option<Vec<String>>")]
    pub types: Option<Spanned<Vec<String>>>,
}

/// The Redis channel on which invalidations reach every instance.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InvalidationSection {
    /// The channel other services publish on (default "cache:invalidate").
    #[schemars(with = "Option<String>")]
    pub channel: Option<Spanned<String>>,
    /// Pass Surrogate-Key / Cache-Tag on to clients (default false: they stay inside).
    pub forward_tag_headers: Option<bool>,
    /// A file holding the secret that invalidation messages must be signed with.
    #[schemars(with = "Option<String>")]
    pub secret_file: Option<Spanned<String>>,
}

/// One route: the requests it matches and what the proxy does with them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSection {
    /// In logs, metrics and Cache-Status; also the default key's start.
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// "[METHOD[|METHOD]] PATH", e.g. "GET /api/credentials/{id}"; no method: any method.
    /// Paths take {name}, {*rest} and Flask's <int:id>-style converters.
    #[serde(rename = "match")]
    #[schemars(with = "String")]
    pub pattern: Spanned<String>,
    /// false: never cached, always forwarded.
    #[schemars(with = "Option<bool>")]
    pub cache: Option<Spanned<bool>>,
    /// How long the origin may take on this route's requests, instead of [origin] timeout.
    #[schemars(with = "Option<Duration>")]
    pub timeout: Option<Spanned<String>>,
    /// How long an entry is fresh, or "origin" for the response's own Cache-Control
    /// (RFC 9111). Required for a cached route: there is no global default.
    #[schemars(with = "Option<Ttl>")]
    pub ttl: Option<Spanned<String>>,
    /// With ttl = "origin": never fresh for longer than this (default one day).
    #[schemars(with = "Option<Duration>")]
    pub ttl_max: Option<Spanned<String>>,
    /// With ttl = "origin": for responses that state no freshness (default: not fresh).
    #[schemars(with = "Option<Duration>")]
    pub ttl_default: Option<Spanned<String>>,
    /// With ttl = "origin": 10% of the time since Last-Modified when nothing is stated.
    #[schemars(with = "Option<bool>")]
    pub ttl_heuristic: Option<Spanned<bool>>,
    /// Shorten each entry's lifetime by up to this share, at random: "0%" to "50%".
    #[schemars(with = "Option<Percent>")]
    pub ttl_jitter: Option<Spanned<String>>,
    /// Serve a stale entry at once while one request refreshes it.
    #[schemars(with = "Option<Duration>")]
    pub stale_while_revalidate: Option<Spanned<String>>,
    /// Serve a stale entry when the origin fails (5xx, timeout, unreachable).
    #[schemars(with = "Option<Duration>")]
    pub stale_if_error: Option<Spanned<String>>,
    /// Refresh hot keys shortly before they expire.
    #[schemars(with = "Option<bool>")]
    pub early_refresh: Option<Spanned<bool>>,
    /// Let clients' Cache-Control force revalidation (default false).
    #[schemars(with = "Option<bool>")]
    pub honor_client_no_cache: Option<Spanned<bool>>,
    /// The readable Redis key, a template over the path's parameters: "credential:{id}".
    #[schemars(with = "Option<String>")]
    pub key: Option<Spanned<String>>,
    /// What of the query string is in the key and reaches the origin: "sorted" (the
    /// default), "ignore", or the names of the parameters kept.
    #[schemars(with = "Option<Query>")]
    pub query: Option<Spanned<QuerySetting>>,
    /// The statuses stored (default [200, 203]).
    #[schemars(with = "Option<Vec<u16>>")]
    pub statuses: Option<Spanned<Vec<u16>>>,
    /// true: the route never depends on cookies; Cookie is stripped instead of bypassing
    /// the cache (default false).
    pub ignore_cookies: Option<bool>,
    /// Larger bodies are streamed through, not stored (default "8MiB").
    #[schemars(with = "Option<Size>")]
    pub max_object_size: Option<Spanned<SizeSetting>>,
    /// Tags every entry of this route carries, templates over the path's parameters.
    #[schemars(with = "Option<Vec<String>>")]
    pub tags: Option<Spanned<Vec<String>>>,
    /// Also keep entries in the in-process tier (needs an [l1] section).
    #[schemars(with = "Option<bool>")]
    pub l1: Option<Spanned<bool>>,
    /// true: requests with Authorization are cached per credential (hashed).
    #[schemars(with = "Option<bool>")]
    pub per_user: Option<Spanned<bool>>,
    /// Request headers that are part of the key, e.g. ["X-Forwarded-Host"].
    #[schemars(with = "Option<Vec<String>>")]
    pub vary: Option<Spanned<Vec<String>>>,
    /// Live query, header and user variants per key; more are not stored (default 1000).
    #[schemars(with = "Option<u64>")]
    pub max_variants: Option<Spanned<u64>>,
    /// false: this route's bodies are stored as the origin sent them, whatever
    /// [compression] says (default true).
    #[schemars(with = "Option<bool>")]
    pub compress: Option<Spanned<bool>>,
    /// Strict mode: the only client headers a fill passes to the origin.
    #[schemars(with = "Option<Vec<String>>")]
    pub forward_headers: Option<Spanned<Vec<String>>>,
    /// Keys a successful write here drops, templates over the path's parameters.
    #[schemars(with = "Option<Vec<String>>")]
    pub invalidate: Option<Spanned<Vec<String>>>,
    /// Tags a successful write here drops.
    #[schemars(with = "Option<Vec<String>>")]
    pub invalidate_tags: Option<Spanned<Vec<String>>>,
    /// How each path parameter's values compare: params.<name>.case = "insensitive".
    #[schemars(with = "Option<BTreeMap<String, ParamSection>>")]
    pub params: Option<BTreeMap<String, Spanned<ParamSection>>>,
    /// The protocol upgrades tunnelled: ["websocket"] (the default) or [] for none; never
    /// h2c.
    #[schemars(with = "Option<Vec<String>>")]
    pub upgrades: Option<Spanned<Vec<String>>>,
    /// The share of this route's fresh hits also asked of the origin in the background and
    /// compared with what was served, 0 to 1 (default: [verify] fraction).
    #[schemars(with = "Option<Fraction>")]
    pub verify: Option<Spanned<FractionSetting>>,
}

/// What the route says about one path parameter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParamSection {
    /// "insensitive": the origin compares this string parameter without case, so it is
    /// keyed (and asked of the origin) in lower case.
    #[schemars(with = "Option<Case>")]
    pub case: Option<Spanned<String>>,
}

/// `query = "sorted" | "ignore" | ["param", ...]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum QuerySetting {
    Mode(String),
    Allow(Vec<String>),
}

/// `max_object_size = 1048576` or `"8MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeSetting {
    Bytes(u64),
    Text(String),
}

/// `verify = 0.01`: a number from 0 to 1. Text (`"1%"`) is read only to say what to write.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum FractionSetting {
    Number(f64),
    Text(String),
}

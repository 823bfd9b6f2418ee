//! The policy file exactly as written: serde types that mirror the TOML.
//!
//! Unknown fields are errors (`deny_unknown_fields`), so a typo such as `tll = "10m"` is
//! reported instead of silently leaving a route uncached. Values that need checking keep
//! their span, so validation can name the line they came from.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenSection {
    pub addr: Option<Spanned<String>>,
    pub admin: Option<Spanned<String>>,
    pub hosts: Option<Spanned<Vec<String>>>,
    pub underscores_in_headers: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OriginSection {
    pub url: Spanned<String>,
    pub timeout: Option<Spanned<String>>,
    pub tls_ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisSection {
    pub url: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub tls_ca_file: Option<Spanned<String>>,
    pub tls_cert_file: Option<Spanned<String>>,
    pub tls_key_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CollapseSection {
    pub lock_ttl: Option<Spanned<String>>,
    pub wait: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSection {
    pub max_body: Option<Spanned<SizeSetting>>,
    pub max_head_size: Option<Spanned<SizeSetting>>,
    pub max_headers: Option<Spanned<u64>>,
    pub header_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub send_timeout: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<u64>>,
    pub h2_max_streams: Option<Spanned<u64>>,
    pub h2_max_resets: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct L1Section {
    pub size: Spanned<SizeSetting>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InvalidationSection {
    pub channel: Option<Spanned<String>>,
    pub forward_tag_headers: Option<bool>,
    pub secret_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSection {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub pattern: Spanned<String>,
    pub cache: Option<Spanned<bool>>,
    pub ttl: Option<Spanned<String>>,
    pub ttl_max: Option<Spanned<String>>,
    pub ttl_default: Option<Spanned<String>>,
    pub ttl_heuristic: Option<Spanned<bool>>,
    pub ttl_jitter: Option<Spanned<String>>,
    pub stale_while_revalidate: Option<Spanned<String>>,
    pub stale_if_error: Option<Spanned<String>>,
    pub early_refresh: Option<Spanned<bool>>,
    pub honor_client_no_cache: Option<Spanned<bool>>,
    pub key: Option<Spanned<String>>,
    pub query: Option<Spanned<QuerySetting>>,
    pub statuses: Option<Spanned<Vec<u16>>>,
    pub ignore_cookies: Option<bool>,
    pub max_object_size: Option<Spanned<SizeSetting>>,
    pub tags: Option<Spanned<Vec<String>>>,
    pub l1: Option<Spanned<bool>>,
    pub per_user: Option<Spanned<bool>>,
    pub vary: Option<Spanned<Vec<String>>>,
    pub max_variants: Option<Spanned<u64>>,
    pub forward_headers: Option<Spanned<Vec<String>>>,
    pub invalidate: Option<Spanned<Vec<String>>>,
    pub invalidate_tags: Option<Spanned<Vec<String>>>,
    /// `params.<name>.case = "insensitive"`: how a path parameter's values compare.
    pub params: Option<BTreeMap<String, Spanned<ParamSection>>>,
    /// `upgrades = ["websocket"]` (the default) or `[]`: the protocol upgrades tunnelled.
    pub upgrades: Option<Spanned<Vec<String>>>,
}

/// What the route says about one path parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParamSection {
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

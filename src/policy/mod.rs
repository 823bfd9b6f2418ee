//! The policy: one TOML file that says which routes are cached, for how long, under which
//! Redis key. It is parsed and validated up front into a [`Policy`]; nothing unchecked
//! reaches the request path, and a policy that does not validate never runs.

mod compile;
mod compile_key;
mod compile_route;
mod compression;
mod describe;
mod env;
mod error;
mod file;
pub mod generation;
pub mod key;
mod key_owner;
mod limits;
pub mod route;
mod schema;
mod schema_types;
mod settings;
mod ttl;
mod urls;
mod values;
pub mod verify;

pub use crate::net::limits::Limits;
pub use error::PolicyError;
pub use schema::schema;
pub use settings::{
    CollapseSettings, CompressionSettings, InvalidationSettings, ListenSettings, OriginSettings,
    RedisSettings, Secret, SigningKey, redact,
};
pub use urls::uses_tls;

use crate::policy::route::{Route, RouteTable};
use error::Locator;
use file::PolicyFile;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

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
    /// Shadow verification's default share and bound (`[verify]`).
    pub verify: verify::VerifySettings,
    /// How stored bodies are compressed (`[compression]`).
    pub compression: CompressionSettings,
    /// Things that are valid but probably not meant (printed by `check` and at start).
    pub warnings: Vec<String>,
    /// The environment variables that set a value here (winning over the file), for
    /// `check` to say where a setting came from.
    pub from_environment: Vec<&'static str>,
    /// The SHA-256 of the text this policy was read from: the file watcher reloads only
    /// when the file's content differs from it.
    pub source_digest: [u8; 32],
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
        let policy = compile::compile(raw, file, &locate)?;
        Ok(Policy {
            source_digest: Sha256::digest(source.as_bytes()).into(),
            ..policy
        })
    }
}

fn deserialize(source: &str, locate: &Locator<'_>) -> Result<PolicyFile, PolicyError> {
    let deserializer = toml::Deserializer::parse(source)
        .map_err(|e| locate.at(e.span(), "", e.message().to_string()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let inner = e.into_inner();
        let (field, message) = values::type_error(field, inner.message());
        locate.at(inner.span(), field, message)
    })
}

#[cfg(test)]
use crate::policy::route::Action;

#[cfg(test)]
mod tests;

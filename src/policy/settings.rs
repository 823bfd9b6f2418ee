//! The settings a policy holds besides its routes: where to listen, the origin, Redis,
//! invalidation and collapsing. They are plain data, filled by `compile` from the file and
//! by `env` from the environment, and read by the stages that need them.

use crate::http::coding::Coding;
use crate::http::compressible::TypePattern;
use crate::net::tls::TlsFiles;
use http::Uri;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// How often a bounded slice of the memory-per-route sampling pass runs.
    pub memory_sample_interval: Duration,
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

/// `[compression]`: how stored bodies are compressed (once, when the entry is built).
#[derive(Debug, Clone)]
pub struct CompressionSettings {
    /// Off: every body is stored as the origin sent it.
    pub enabled: bool,
    /// The one coding bodies are stored in; clients that do not accept it get them decoded.
    pub coding: Coding,
    /// The coding's level (its own scale).
    pub level: u32,
    /// Smaller bodies are stored as they are: compression would save less than it costs.
    pub min_size: u64,
    /// The media types compressed.
    pub types: Vec<TypePattern>,
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

/// The shared secret invalidation messages are signed with (`[invalidation] secret_file`).
/// Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

/// Shorter secrets are refused: an HMAC is as strong as its key.
pub const MIN_SECRET_LEN: usize = 16;

impl SigningKey {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    /// The secret's bytes, for the HMAC (see `store::message`).
    pub fn secret(&self) -> &[u8] {
        &self.0
    }
}

//! The two URLs a policy names, the origin's and Redis's: their schemes, the origin's TLS
//! client, and that TLS files go with a TLS Redis URL. Read from the file and from the
//! environment alike, so both places give the same messages.

use super::PolicyError;
use super::error::Locator;
use super::settings::redact;
use crate::net::tls::TlsFiles;
use http::Uri;
use std::path::Path;
use std::sync::Arc;
use toml::Spanned;

pub(super) fn origin_url(
    value: &Spanned<String>,
    locate: &Locator<'_>,
) -> Result<Uri, PolicyError> {
    parse_origin_url(value.get_ref()).map_err(|m| locate.at(Some(value.span()), "origin.url", m))
}

/// The origin's URL, from the file or `CACHALOT_ORIGIN`.
pub(super) fn parse_origin_url(text: &str) -> Result<Uri, String> {
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
pub(super) fn origin_tls(
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

pub(super) fn check_redis_url(url: &str) -> Result<(), String> {
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
pub(super) fn check_tls_scheme(url: &str, tls: &TlsFiles) -> Result<(), String> {
    if tls.is_empty() || uses_tls(url) {
        return Ok(());
    }
    Err(format!(
        "{:?} is not a TLS URL, but [redis] has TLS files: use rediss:// (rediss-cluster://, rediss-sentinel://) or remove tls_ca_file, tls_cert_file and tls_key_file",
        redact(url)
    ))
}

/// Whether the URL asks for TLS (`rediss://`, `rediss-cluster://`, `rediss-sentinel://`).
pub fn uses_tls(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.starts_with("rediss"))
}

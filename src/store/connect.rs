//! Connecting to Redis as production runs it: the client configuration built from the
//! `[redis]` settings (URL form, password from wherever it came, TLS files), and the
//! messages a user sees when the connection fails, each naming the server and what to do.

use crate::policy::{RedisSettings, redact, uses_tls};
use fred::prelude::*;
use fred::types::config::{ServerConfig, TlsConfig, TlsConnector, TlsHostMapping};
use fred::types::{ClusterHash, CustomCommand};
use std::time::Instant;

/// The client configuration for `settings`. Fails on a URL or TLS file the client cannot use.
pub fn config(settings: &RedisSettings) -> Result<Config, String> {
    let mut config = Config::from_url(&settings.url)
        .map_err(|e| format!("{}: {}", redact(&settings.url), e.details()))?;
    if let Some(password) = &settings.password {
        config.password = Some(password.expose().to_string());
    }
    if uses_tls(&settings.url) {
        let tls = settings.tls.client_config()?;
        config.tls = Some(TlsConfig {
            connector: TlsConnector::from(tls),
            hostnames: TlsHostMapping::None,
        });
    }
    Ok(config)
}

/// A client builder for the proxy: starts even when Redis is down, reconnects forever, and
/// bounds every command by the configured timeout.
pub fn builder(settings: &RedisSettings) -> Result<Builder, String> {
    let mut config = config(settings)?;
    // Start even when Redis is down; reconnect in the background.
    config.fail_fast = false;
    let mut builder = Builder::from_config(config);
    let timeout = settings.timeout;
    builder
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 1;
            // While disconnected, do not queue commands without bound (fred issue #340).
            c.max_command_buffer_len = 10_000;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
        })
        // Without a policy fred never reconnects: retry forever, 50 ms doubling to 1 s.
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            RECONNECT_MIN_MS,
            RECONNECT_MAX_MS,
            2,
        ));
    Ok(builder)
}

/// Reconnect back-off: the first retry after this many ms, doubling up to the maximum.
const RECONNECT_MIN_MS: u32 = 50;
/// The longest pause between two reconnect attempts.
const RECONNECT_MAX_MS: u32 = 1_000;

/// The servers a configuration names, for messages: `host:port`, several for a cluster or
/// the sentinels, or the socket path.
pub fn target(config: &Config) -> String {
    let list = |hosts: &[fred::types::config::Server]| {
        hosts
            .iter()
            .map(|s| format!("{}:{}", s.host, s.port))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &config.server {
        ServerConfig::Centralized { server } => format!("{}:{}", server.host, server.port),
        ServerConfig::Clustered { hosts, .. } => format!("cluster {}", list(hosts)),
        ServerConfig::Sentinel {
            hosts,
            service_name,
            ..
        } => format!("sentinel {} (service {service_name})", list(hosts)),
        ServerConfig::Unix { path } => path.display().to_string(),
    }
}

/// What went wrong connecting to `target`, and what to do about it.
pub fn explain(error: &Error, target: &str, settings: &RedisSettings) -> String {
    let details = error.details().trim();
    let lower = details.to_ascii_lowercase();
    let tls = uses_tls(&settings.url);
    if details.starts_with("WRONGPASS") || lower.contains("invalid password") {
        return format!(
            "redis at {target} rejected the credentials ({details}): check the user and password in redis.url, password_file, REDIS_PASSWORD or REDIS_ACCESS_KEY"
        );
    }
    if details.starts_with("NOAUTH") {
        return format!(
            "redis at {target} requires a password ({details}): set it with REDIS_PASSWORD, [redis] password_file or in the URL (redis://:PASSWORD@host:port)"
        );
    }
    if tls
        && (lower.contains("corrupt message")
            || lower.contains("invalidcontenttype")
            || lower.contains("wrong version number"))
    {
        return format!(
            "TLS handshake with {target} failed ({details}): the port does not speak TLS; use redis:// for a plain port, or the server's TLS port (managed Redis: 6380)"
        );
    }
    if tls && (lower.contains("certificaterequired") || lower.contains("alert")) {
        return format!(
            "TLS handshake with {target} failed ({details}): the server refused the handshake; if it requires a client certificate, set [redis] tls_cert_file and tls_key_file"
        );
    }
    if tls && (lower.contains("certificate") || lower.contains("unknownissuer")) {
        let what = if lower.contains("notvalidforname") {
            "the certificate is not issued for this host name; connect by the name it names"
        } else {
            "the server's certificate is not trusted; set [redis] tls_ca_file to the CA that signed it"
        };
        return format!("TLS handshake with {target} failed ({details}): {what}");
    }
    if lower.contains("connection refused") {
        return format!(
            "nothing accepts connections at {target} ({details}): check the host and port, and that Redis is running"
        );
    }
    if lower.contains("lookup") || lower.contains("not known") || lower.contains("resolve") {
        return format!("cannot resolve {target} ({details}): check the host name");
    }
    if error.kind() == &ErrorKind::Timeout
        || lower.contains("timed out")
        || lower.contains("timeout")
    {
        return no_answer(target, settings);
    }
    let closed = lower.contains("reset")
        || lower.contains("closed")
        || lower.contains("eof")
        || lower.contains("canceled")
        || lower.contains("broken pipe");
    if closed && !tls {
        return format!(
            "{target} closed the connection without answering ({details}): if it only accepts TLS (managed Redis usually does, on port 6380), use rediss://"
        );
    }
    format!("redis at {target}: {details}")
}

/// The message for a server that never answered. A plain port never answers a TLS
/// handshake (it waits for the rest of a command that never comes), so with `rediss://`
/// that is the likeliest cause.
pub fn no_answer(target: &str, settings: &RedisSettings) -> String {
    let within = humantime::format_duration(settings.timeout);
    if uses_tls(&settings.url) {
        return format!(
            "no answer from {target} within {within} (redis.timeout): a port that does not speak TLS never answers the handshake, so use redis:// for a plain port or the server's TLS port (managed Redis: 6380); else check the host, port and any firewall between"
        );
    }
    format!(
        "no answer from {target} within {within} (redis.timeout): check the host, port and any firewall or security group between; raise redis.timeout if Redis is only slow"
    )
}

/// What `cachalot check --connect` found: the line to print, and what in the server's
/// setup deserves a warning.
#[derive(Debug)]
pub struct Checked {
    pub report: String,
    pub warnings: Vec<String>,
}

/// `cachalot check --connect`: connects once (no retries), sends PING, reads the server's
/// memory settings (`INFO memory`), and says what it found.
pub async fn check(settings: &RedisSettings) -> Result<Checked, String> {
    let config = config(settings)?;
    let target = target(&config);
    let timeout = settings.timeout;
    let mode = match &config.server {
        ServerConfig::Clustered { .. } => "cluster",
        ServerConfig::Sentinel { .. } => "sentinel",
        _ => "standalone",
    };
    let tls = if config.tls.is_some() { "TLS" } else { "plain" };
    let client = Builder::from_config(config)
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| p.default_command_timeout = timeout)
        .build()
        .map_err(|e| format!("redis at {target}: {}", e.details()))?;
    let started = Instant::now();
    // No reconnect policy: the first failure is the answer. The outer bound covers the
    // connection and the commands, each of which has `timeout` of its own.
    let attempt = tokio::time::timeout(timeout * 3, async {
        client.init().await?;
        client.ping::<String>(None).await?;
        let pinged = started.elapsed();
        // INFO rather than CONFIG GET: managed services often disable CONFIG.
        let info = client
            .custom::<String, _>(
                CustomCommand::new_static("INFO", ClusterHash::FirstKey, false),
                vec!["memory"],
            )
            .await;
        Ok::<_, Error>((pinged, info))
    })
    .await;
    let _ = client.quit().await;
    match attempt {
        Ok(Ok((pinged, info))) => {
            let version = client
                .server_version()
                .map_or(String::new(), |v| format!(", redis {v}"));
            Ok(Checked {
                report: format!(
                    "redis {target}: connected ({mode}, {tls}{version}), PING answered in {} ms",
                    pinged.as_millis()
                ),
                warnings: memory_warnings(&target, info),
            })
        }
        Ok(Err(e)) => Err(explain(&e, &target, settings)),
        Err(_) => Err(no_answer(&target, settings)),
    }
}

/// What bounds the cache's memory is Redis's own `maxmemory` with a policy that evicts:
/// the proxy stores whatever its routes allow, and only Redis knows how much room there is.
/// Without a limit Redis grows until the machine runs out of memory; with `noeviction` a
/// full Redis refuses writes to every client that shares it.
fn memory_warnings(target: &str, info: Result<String, Error>) -> Vec<String> {
    let info = match info {
        Ok(info) => info,
        Err(e) => {
            return vec![format!(
                "could not read the memory settings of redis at {target} (INFO memory: {}): make sure it has a maxmemory and an evicting maxmemory-policy such as allkeys-lru",
                e.details()
            )];
        }
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let mut warnings = Vec::new();
    if field("maxmemory") == Some("0") {
        warnings.push(format!(
            "redis at {target} has maxmemory 0 (no limit): the cache can grow until the machine runs out of memory; set maxmemory and an evicting maxmemory-policy (allkeys-lru for a Redis of its own, volatile-lru when shared: every key cachalot writes expires)"
        ));
    }
    if field("maxmemory_policy") == Some("noeviction") {
        warnings.push(format!(
            "redis at {target} has maxmemory-policy noeviction: once full it refuses writes (OOM) to every client sharing it, and cachalot serves uncached; use allkeys-lru (a Redis of its own) or volatile-lru (shared)"
        ));
    }
    warnings
}

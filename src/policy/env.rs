//! Settings that come from outside the policy file: environment variables (12-factor
//! deployments set the listen addresses, the origin and Redis that way) and mounted secret
//! files. Kept apart from `compile` because they run again on every reload.

use super::settings::Secret;
use super::settings::{MIN_SECRET_LEN, SigningKey};
use super::urls::{check_redis_url, check_tls_scheme, origin_tls, parse_origin_url};
use super::{Policy, PolicyError};
use std::net::SocketAddr;

impl Policy {
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
}

/// A mounted secret's content, without the trailing newline editors and `echo` add.
pub(super) fn read_password(path: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the password file {path:?}: {e}"))?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(format!("the password file {path:?} is empty"));
    }
    Ok(Secret::new(password))
}

/// The invalidation secret from a mounted file, without the trailing newline editors add.
pub(super) fn read_signing_key(path: &str) -> Result<SigningKey, String> {
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

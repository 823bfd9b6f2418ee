//! The `[limits]` section: what one client may cost the proxy, each with its own status.

use super::PolicyError;
use super::error::Locator;
use super::file::LimitsSection;
use super::values::{duration, size};
use std::time::Duration;
use toml::Spanned;

/// Limits on connections and requests (defaults in [`Limits::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body: 413 when `Content-Length` declares more; a streamed body that
    /// goes over is cut off, answered 413 and its connection closed. Applies on reload.
    pub max_body: u64,
    /// Largest request head (request line and headers): 431.
    pub max_head_size: usize,
    /// Most header lines in a request head: 431.
    pub max_headers: usize,
    /// Time a client has to send a complete request head (slowloris). On HTTP/1 it runs from
    /// the end of the previous response, so it also closes keep-alive connections idle longer.
    pub header_timeout: Duration,
    /// A connection with no bytes in either direction for this long is closed (after any
    /// response in progress): HTTP/2 and upgraded connections included.
    pub idle_timeout: Duration,
    /// A response the client stops taking is cut off once nothing of it has moved for this
    /// long (nginx's `send_timeout`): on HTTP/1 the connection is closed; on HTTP/2 the stream
    /// is reset and the connection sent GOAWAY. Its memory, and a pass's origin connection,
    /// are released with it.
    pub send_timeout: Duration,
    /// Open connections on the public listener; beyond it, new ones get 503 and are closed.
    pub max_connections: usize,
    /// HTTP/2: streams one connection may have open at once.
    pub h2_max_streams: u32,
    /// HTTP/2: streams a client may reset before the proxy accepted them (rapid reset,
    /// CVE-2023-44487); beyond it the connection is closed with GOAWAY. Counted apart, as
    /// many resets of streams already accepted (their requests may be at the origin): past
    /// those, GOAWAY too (see `send_timeout`).
    pub h2_max_resets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 16 * 1024 * 1024,
            max_head_size: 64 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            send_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            h2_max_streams: 128,
            h2_max_resets: 20,
        }
    }
}

impl Limits {
    /// Whether the settings that belong to the listener (all but `max_body`) differ.
    pub fn listener_differs(&self, other: &Self) -> bool {
        let mut same_body = other.clone();
        same_body.max_body = self.max_body;
        *self != same_body
    }
}

/// hyper's smallest read buffer: a head limit below it could not be honoured.
const MIN_HEAD_SIZE: u64 = 8 * 1024;

pub(super) fn compile(raw: &LimitsSection, locate: &Locator<'_>) -> Result<Limits, PolicyError> {
    let default = Limits::default();
    let count = |value: &Option<Spanned<u64>>, field: &str, min: u64, max: u64, fallback: u64| {
        let Some(value) = value else {
            return Ok(fallback);
        };
        let n = *value.get_ref();
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(locate.at(
                Some(value.span()),
                field,
                format!("{n} is out of range; expected a whole number from {min} to {max}"),
            ))
        }
    };
    let max_head_size = match &raw.max_head_size {
        None => default.max_head_size as u64,
        Some(setting) => {
            let bytes = size(setting, "limits.max_head_size", locate)?;
            if !(MIN_HEAD_SIZE..=16 * 1024 * 1024).contains(&bytes) {
                return Err(locate.at(
                    Some(setting.span()),
                    "limits.max_head_size",
                    "expected a size from \"8KiB\" to \"16MiB\" (hyper reads heads in buffers of at least 8 KiB)",
                ));
            }
            bytes
        }
    };
    Ok(Limits {
        max_body: match &raw.max_body {
            None => default.max_body,
            Some(setting) => size(setting, "limits.max_body", locate)?,
        },
        max_head_size: max_head_size as usize,
        max_headers: count(&raw.max_headers, "limits.max_headers", 8, 1000, 100)? as usize,
        header_timeout: duration(
            raw.header_timeout.as_ref(),
            "limits.header_timeout",
            default.header_timeout,
            locate,
        )?,
        idle_timeout: duration(
            raw.idle_timeout.as_ref(),
            "limits.idle_timeout",
            default.idle_timeout,
            locate,
        )?,
        send_timeout: duration(
            raw.send_timeout.as_ref(),
            "limits.send_timeout",
            default.send_timeout,
            locate,
        )?,
        max_connections: count(
            &raw.max_connections,
            "limits.max_connections",
            1,
            1_000_000,
            default.max_connections as u64,
        )? as usize,
        h2_max_streams: count(
            &raw.h2_max_streams,
            "limits.h2_max_streams",
            1,
            10_000,
            u64::from(default.h2_max_streams),
        )? as u32,
        h2_max_resets: count(
            &raw.h2_max_resets,
            "limits.h2_max_resets",
            1,
            10_000,
            default.h2_max_resets as u64,
        )? as usize,
    })
}

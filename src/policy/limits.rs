//! The `[limits]` section: what one client may cost the proxy, each with its own status.

use super::PolicyError;
use super::error::Locator;
use super::file::LimitsSection;
use super::values::{duration, size};
use crate::net::limits::Limits;
use toml::Spanned;

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

//! `[compression]` compiled: on or off, the stored coding and its level, the smallest body
//! worth compressing, and the media types compressed.

use super::PolicyError;
use super::error::Locator;
use super::file::CompressionSection;
use super::settings::CompressionSettings;
use super::values::size;
use crate::http::coding::Coding;
use crate::http::compressible::{DEFAULT_TYPES, TypePattern};

/// Bodies smaller than this are stored as they are unless the policy says otherwise; see
/// docs/benchmarks.md, "Compression", for the measurement behind it.
pub const DEFAULT_MIN_SIZE: u64 = 512;

pub(super) fn compile(
    section: &CompressionSection,
    locate: &Locator<'_>,
) -> Result<CompressionSettings, PolicyError> {
    let coding = match &section.coding {
        None => Coding::Gzip,
        Some(text) => match text.get_ref().as_str() {
            "gzip" => Coding::Gzip,
            "br" => Coding::Br,
            "zstd" => Coding::Zstd,
            other => {
                return Err(locate.at(
                    Some(text.span()),
                    "compression.coding",
                    format!("{other:?} is not a stored coding; valid: \"gzip\" (the default), \"br\", \"zstd\""),
                ));
            }
        },
    };
    let (default_level, levels) = match coding {
        Coding::Gzip => (6, 1..=9),
        Coding::Br => (5, 0..=11),
        Coding::Zstd => (3, 1..=19),
    };
    let level = match &section.level {
        None => default_level,
        Some(level) if levels.contains(level.get_ref()) => *level.get_ref() as u32,
        Some(level) => {
            return Err(locate.at(
                Some(level.span()),
                "compression.level",
                format!(
                    "{} is not a {} level; valid: {} to {} (default {default_level})",
                    level.get_ref(),
                    coding.token(),
                    levels.start(),
                    levels.end()
                ),
            ));
        }
    };
    let min_size = match &section.min_size {
        None => DEFAULT_MIN_SIZE,
        Some(setting) => size(setting, "compression.min_size", locate)?,
    };
    let types = match &section.types {
        None => DEFAULT_TYPES
            .iter()
            .map(|t| TypePattern::parse(t).expect("the default types are valid"))
            .collect(),
        Some(list) => {
            let at = |m: String| locate.at(Some(list.span()), "compression.types", m);
            if list.get_ref().is_empty() {
                return Err(at(
                    "an empty list compresses nothing; write enabled = false to turn compression off".into(),
                ));
            }
            list.get_ref()
                .iter()
                .map(|text| TypePattern::parse(text).map_err(at))
                .collect::<Result<_, _>>()?
        }
    };
    Ok(CompressionSettings {
        enabled: section.enabled.unwrap_or(true),
        coding,
        level,
        min_size,
        types,
    })
}

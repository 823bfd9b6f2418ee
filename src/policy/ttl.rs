//! A cached route's freshness settings: a fixed `ttl`, or `ttl = "origin"` with its bounds,
//! and the jitter either may have. Apart from `compile_route` because the origin mode's
//! checks are a rule set of their own.

use super::PolicyError;
use super::error::Locator;
use super::file::RouteSection;
use super::values::{flag, parse_duration};
use crate::http::freshness::{DEFAULT_ORIGIN_TTL_MAX, Ttl};
use toml::Spanned;

/// `ttl = "5m"` (the policy decides) or `ttl = "origin"` (RFC 9111, with `ttl_max`,
/// `ttl_default` and `ttl_heuristic`), and `ttl_jitter` for either.
pub(super) fn compile_ttl(
    section: &RouteSection,
    field: &dyn Fn(&str) -> String,
    locate: &Locator<'_>,
) -> Result<Ttl, PolicyError> {
    let Some(ttl_text) = &section.ttl else {
        return Err(locate.at(
            Some(section.pattern.span()),
            field("ttl"),
            "a cached route needs a ttl (e.g. ttl = \"5m\", or \"origin\" to follow the origin's \
             Cache-Control): there is no global default, TTL is a per-route product decision; to \
             forward without caching write cache = false",
        ));
    };
    let jitter = match &section.ttl_jitter {
        None => 0.0,
        Some(text) => text
            .get_ref()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|n| (0.0..=50.0).contains(n))
            .map(|n| n / 100.0)
            .ok_or_else(|| {
                locate.at(
                    Some(text.span()),
                    field("ttl_jitter"),
                    format!(
                        "{:?} is not a jitter; expected a percentage from \"0%\" to \"50%\", e.g. \"10%\"",
                        text.get_ref()
                    ),
                )
            })?,
    };
    if ttl_text.get_ref() != "origin" {
        let origin_only = [
            ("ttl_max", section.ttl_max.as_ref().map(Spanned::span)),
            (
                "ttl_default",
                section.ttl_default.as_ref().map(Spanned::span),
            ),
            (
                "ttl_heuristic",
                section.ttl_heuristic.as_ref().map(Spanned::span),
            ),
        ];
        if let Some((name, span)) = origin_only.into_iter().find(|(_, s)| s.is_some()) {
            return Err(locate.at(
                span,
                field(name),
                "only applies with ttl = \"origin\"; with a fixed ttl the policy alone decides freshness",
            ));
        }
        return Ok(Ttl::Fixed {
            ttl: parse_duration(ttl_text, &field("ttl"), locate)?,
            jitter,
        });
    }
    let max = match &section.ttl_max {
        None => DEFAULT_ORIGIN_TTL_MAX,
        Some(d) => parse_duration(d, &field("ttl_max"), locate)?,
    };
    let default = section
        .ttl_default
        .as_ref()
        .map(|d| parse_duration(d, &field("ttl_default"), locate))
        .transpose()?;
    Ok(Ttl::Origin {
        max,
        default,
        heuristic: flag(&section.ttl_heuristic),
        jitter,
    })
}

//! Shadow verification's settings: the share of fresh hits a route verifies (`verify`, with
//! `[verify] fraction` as the default for routes that do not say) and how many verification
//! requests may be in flight at once (`[verify] concurrency`). Apart from `compile`, which
//! only calls in, so that the feature's settings read in one place.

use super::Policy;
use super::PolicyError;
use super::error::Locator;
use super::file::{FractionSetting, VerifySection};
use super::route::{Action, Route};
use toml::Spanned;

/// Verification requests in flight at once when `[verify] concurrency` is not set: enough
/// to keep up with a small fraction of a busy route, too few to load any origin.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// The most `[verify] concurrency` takes: verification is sampling, not a load test.
const MAX_CONCURRENCY: u64 = 256;

/// A share from 0 to 1, held in parts per billion so that sampling counts exactly
/// (`0.25` is every fourth hit, never a rounding error's worth more or less).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fraction(u32);

impl Fraction {
    /// The whole: every hit.
    pub const SCALE: u32 = 1_000_000_000;

    /// Parts per billion.
    pub fn per_billion(self) -> u32 {
        self.0
    }

    pub fn is_off(self) -> bool {
        self.0 == 0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(Self::SCALE)
    }
}

impl std::fmt::Display for Fraction {
    /// As a percentage, with no more digits than it has: `25%`, `0.1%`, `100%`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let percent = format!("{:.7}", self.as_f64() * 100.0);
        let percent = percent.trim_end_matches('0').trim_end_matches('.');
        write!(f, "{percent}%")
    }
}

/// `[verify]`: the default share and the bound on requests in flight.
#[derive(Debug, Clone, Default)]
pub struct VerifySettings {
    /// The share of fresh hits verified on cached routes without their own `verify`.
    pub fraction: Fraction,
    /// Verification requests in flight at once in this instance; beyond it, skipped.
    pub concurrency: usize,
}

pub(super) fn compile(
    raw: &VerifySection,
    locate: &Locator<'_>,
) -> Result<VerifySettings, PolicyError> {
    let fraction = match &raw.fraction {
        None => Fraction::default(),
        Some(setting) => fraction(setting, "verify.fraction", locate)?,
    };
    let concurrency = match &raw.concurrency {
        None => DEFAULT_CONCURRENCY,
        Some(n) if (1..=MAX_CONCURRENCY).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            return Err(locate.at(
                Some(n.span()),
                "verify.concurrency",
                format!(
                    "{} is out of range; expected a whole number from 1 to {MAX_CONCURRENCY} (set fraction = 0 to turn verification off)",
                    n.get_ref()
                ),
            ));
        }
    };
    Ok(VerifySettings {
        fraction,
        concurrency,
    })
}

/// `verify = 0.01` (a route's, or `[verify] fraction`): a number from 0 to 1.
pub(super) fn fraction(
    setting: &Spanned<FractionSetting>,
    field: &str,
    locate: &Locator<'_>,
) -> Result<Fraction, PolicyError> {
    let fail = |message: String| Err(locate.at(Some(setting.span()), field, message));
    match setting.get_ref() {
        FractionSetting::Number(n) if (0.0..=1.0).contains(n) => {
            Ok(Fraction((n * f64::from(Fraction::SCALE)).round() as u32))
        }
        FractionSetting::Number(n) => fail(format!(
            "{n} is not a share of hits; expected a number from 0 (off) to 1 (every hit), e.g. 0.01 for 1%"
        )),
        FractionSetting::Text(text) => fail(format!(
            "{text:?}: write a number from 0 (off) to 1 (every hit), e.g. 0.01 for 1%"
        )),
    }
}

impl Policy {
    /// The share of `route`'s fresh hits that are verified: its own `verify`, else
    /// `[verify] fraction`; none for a route that does not cache. Read per hit, so a reload
    /// changes it at once.
    pub fn verify_fraction(&self, route: &Route) -> Fraction {
        match &route.action {
            Action::Cache(rule) => rule.verify.unwrap_or(self.verify.fraction),
            Action::Pass => Fraction::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_print_as_the_percentages_they_are() {
        for (per_billion, text) in [
            (250_000_000, "25%"),
            (Fraction::SCALE, "100%"),
            (1_000_000, "0.1%"),
            (10_000_000, "1%"),
            (0, "0%"),
        ] {
            assert_eq!(Fraction(per_billion).to_string(), text);
        }
    }
}

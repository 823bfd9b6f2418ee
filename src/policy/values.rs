//! The scalar values a policy is written in: durations, sizes and on/off flags, each read
//! with a message that names the field and shows a spelling that works.

use super::PolicyError;
use super::error::Locator;
use super::file::SizeSetting;
use std::time::Duration;
use toml::Spanned;

pub(super) fn flag(setting: &Option<Spanned<bool>>) -> bool {
    setting.as_ref().is_some_and(|flag| *flag.get_ref())
}

/// A size such as `"8MiB"`, `"512KiB"` or a number of bytes, above zero.
pub(super) fn size(
    setting: &Spanned<SizeSetting>,
    field: &str,
    locate: &Locator<'_>,
) -> Result<u64, PolicyError> {
    let bytes = match setting.get_ref() {
        SizeSetting::Bytes(n) => Ok(*n),
        SizeSetting::Text(text) => text.parse::<bytesize::ByteSize>().map(|b| b.as_u64()),
    };
    match bytes {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(locate.at(
            Some(setting.span()),
            field,
            "expected a size such as \"8MiB\", \"512KiB\" or a number of bytes above 0",
        )),
    }
}

pub(super) fn duration(
    value: Option<&Spanned<String>>,
    field: &str,
    default: Duration,
    locate: &Locator<'_>,
) -> Result<Duration, PolicyError> {
    value.map_or(Ok(default), |v| parse_duration(v, field, locate))
}

pub(super) fn parse_duration(
    value: &Spanned<String>,
    field: &str,
    locate: &Locator<'_>,
) -> Result<Duration, PolicyError> {
    let text = value.get_ref();
    let fail = |message: String| locate.at(Some(value.span()), field, message);
    if let Some(unit) = abbreviated_calendar_unit(text) {
        let advice = if unit == "M" {
            "\"M\" would mean months; write \"m\" for minutes, or spell out \"months\" if you mean it"
        } else {
            "\"y\" would mean years; spell out \"years\" if you mean it"
        };
        return Err(fail(format!("{text:?}: {advice}")));
    }
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(fail("must be longer than zero".into())),
        Err(e) => Err(fail(format!(
            "{text:?} is not a duration ({e}); expected e.g. \"500ms\", \"30s\", \"10m\", \"1h\""
        ))),
    }
}

/// Units are case-sensitive (`m` is minutes, `ms` milliseconds); the one-letter calendar
/// units `M` (months) and `y` (years) are one typo away from `m` and never what a TTL or a
/// timeout means, so only their spelled-out forms are taken.
fn abbreviated_calendar_unit(text: &str) -> Option<&str> {
    text.split(|c: char| !c.is_ascii_alphabetic())
        .find(|unit| *unit == "M" || *unit == "y")
}

/// Settings written as durations: a bare number there gets a hint with the unit.
const DURATION_FIELDS: &[&str] = &[
    "ttl",
    "ttl_max",
    "ttl_default",
    "timeout",
    "lock_ttl",
    "wait",
    "stale_while_revalidate",
    "stale_if_error",
    "header_timeout",
    "idle_timeout",
];

/// A type error from the TOML reader, as the policy's author can act on it: the field's
/// path without the reader's internals, and for a bare number where a duration goes, the
/// spelling that works.
pub(super) fn type_error(field: String, message: &str) -> (String, String) {
    let field = field.replace(".$__serde_spanned_private_value", "");
    let number = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
            .filter(|(_, rest)| rest.contains("expected a string"))
            .map(|(number, _)| number.to_string())
    };
    let duration = DURATION_FIELDS.contains(&field.rsplit('.').next().unwrap_or_default());
    let message = match (
        number("invalid type: integer `"),
        number("invalid type: floating point `"),
    ) {
        (Some(n), _) if duration => format!(
            "{n} has no unit; a duration is a string with one: write \"{n}s\" (or \"{n}ms\", \"{n}m\", \"{n}h\")"
        ),
        (_, Some(n)) if duration => format!(
            "{n} has no unit; a duration is a string with one, in whole units: e.g. \"500ms\", \"30s\", \"10m\""
        ),
        (Some(n), _) | (_, Some(n)) => format!("expected a string: write \"{n}\""),
        _ => message.to_string(),
    };
    (field, message)
}

//! The schemas of values the policy file writes as text: durations, TTLs, sizes,
//! percentages, the query rule and a parameter's case. `file.rs` names them in
//! `#[schemars(with)]`; they live apart from `schema.rs`, which generates the whole schema
//! from `file.rs`, so the two files do not import each other.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use std::borrow::Cow;

/// Every unit `humantime` reads; `M` and `y` are left out because the policy refuses them.
const DURATION_UNITS: &str = "(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|years|year|yrs|yr)";

/// A duration: numbers with units, as many as `"1h 30m"` takes.
fn duration_pattern() -> String {
    format!(r"^\s*([0-9]+(\.[0-9]+)?\s*{DURATION_UNITS}\s*)+$")
}

/// A duration whose every number is zero, which the policy refuses ("must be longer than
/// zero"). A separate `not` rather than one pattern: editors' regex engines have no
/// look-ahead.
fn zero_duration_pattern() -> String {
    format!(r"^\s*(0+(\.0+)?\s*{DURATION_UNITS}\s*)+$")
}

/// A number and a unit as `bytesize` reads them (units without case: `KiB`, `kb`, `M`).
const SIZE_PATTERN: &str = r"^\s*[0-9]+(\.[0-9]+)?\s*([KkMmGgTtPpEe][Ii]?[Bb]?|[Bb])?\s*$";

/// A duration written as a string with a unit; the schema of the fields that hold one.
pub(super) enum Duration {}

impl JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": duration_pattern(),
            "not": { "pattern": zero_duration_pattern() },
            "description": "A duration with a unit: \"500ms\", \"30s\", \"10m\", \"1h\", \"2 days\"; units are case-sensitive, \"M\" and \"y\" are refused (spell out months and years).",
            "examples": ["30s", "10m", "1h"],
        })
    }
}

/// A route's `ttl`: a duration, or `"origin"` for RFC 9111 freshness.
pub(super) enum Ttl {}

impl JsonSchema for Ttl {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Ttl".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "const": "origin" },
                generator.subschema_for::<Duration>(),
            ],
        })
    }
}

/// A size: a number of bytes, or a string such as `"8MiB"`.
pub(super) enum Size {}

impl JsonSchema for Size {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": SIZE_PATTERN },
            ],
        })
    }
}

/// `ttl_jitter`: a percentage from 0 to 50, as the parser takes it.
pub(super) enum Percent {}

impl JsonSchema for Percent {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^\s*(50(\.0+)?|[1-4]?[0-9](\.[0-9]+)?)\s*%$",
        })
    }
}

/// A share from 0 to 1 (`verify`, `[verify] fraction`).
pub(super) enum Fraction {}

impl JsonSchema for Fraction {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Fraction".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "examples": [0.01, 0.25],
        })
    }
}

/// A route's `query`: `"sorted"`, `"ignore"`, or the parameters kept.
pub(super) enum Query {}

impl JsonSchema for Query {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Query".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "enum": ["sorted", "ignore"] },
                { "type": "array", "items": { "type": "string" } },
            ],
        })
    }
}

/// `params.<name>.case`.
pub(super) enum Case {}

impl JsonSchema for Case {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Case".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "enum": ["sensitive", "insensitive"] })
    }
}

/// `[compression] coding`.
pub(super) enum StoredCoding {}

impl JsonSchema for StoredCoding {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "StoredCoding".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "enum": ["gzip", "br", "zstd"] })
    }
}

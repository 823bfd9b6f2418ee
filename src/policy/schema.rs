//! The policy file's JSON Schema, for editors: Taplo (and Even Better TOML, built on it)
//! completes and checks a TOML file whose first line is `#:schema <path>`.
//!
//! The schema is derived from the serde types in `file.rs`, so a field added there is in the
//! schema without a second list to keep in step; `cachalot schema` prints it and
//! `config/cachalot.schema.json` is a copy that a test keeps current. The parser stays the
//! judge: the schema catches what an editor can (unknown fields, types, units) and the
//! validation in `mod.rs` everything else (route overlaps, templates, limits' minimums).
//!
//! Values the parser reads from text (durations, sizes, percentages) are given string
//! schemas with a pattern here, not the schema of the Rust type that holds them.

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::Value;
use std::borrow::Cow;

/// The schema of the policy file, as pretty-printed JSON ending with a newline.
pub fn schema() -> String {
    // Draft 7: the newest draft every editor's validator reads.
    let settings = SchemaSettings::draft07().with_transform(RecursiveTransform(no_null));
    let schema = settings
        .into_generator()
        .into_root_schema_for::<super::file::PolicyFile>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is plain JSON");
    text.push('\n');
    text
}

/// TOML has no null: an optional field is one that is left out, so the "or null" that
/// schemars gives an `Option` would only offer editors a value no policy can hold.
fn no_null(schema: &mut Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            object.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(values)) = object.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    if let Some(Value::Array(any_of)) = object.get_mut("anyOf") {
        any_of.retain(|s| s.get("type").is_none_or(|t| t != "null"));
        if any_of.len() == 1 {
            let Some(Value::Object(only)) = any_of.pop() else {
                return;
            };
            object.remove("anyOf");
            for (key, value) in only {
                object.entry(key).or_insert(value);
            }
        }
    }
}

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

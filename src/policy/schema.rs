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
//! schemas with a pattern in `schema_types.rs`, not the schema of the Rust type that holds
//! them.

use schemars::Schema;
use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use serde_json::Value;

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

//! Invalidation: what to drop, where the request to drop it came from, and the message
//! other services publish.
//!
//! An invalidation names keys (each with all its variants), tags, and/or a key prefix, all
//! without the proxy's Redis prefix. The same shape arrives from three places: a successful
//! write on a route with `invalidate`, a pub/sub message from another service
//! (`{"keys": ["credential:abc123"], "reason": "revoked"}` on `cache:invalidate`), and the
//! purge API. How the store makes it take effect is in `store` (generations, tag sets).

use serde::{Deserialize, Serialize};

/// What to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    /// Keys as the proxy stores them, without the prefix: `credential:abc123`. A key drops
    /// all its variants (`credential:abc123?x=1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Tags: every entry stored with one of them is dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Every key starting with this (`user:42:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Why, for the logs (`"revoked"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where an invalidation came from (a metric label and a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Write,
    PubSub,
    Purge,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Write => "write",
            Source::PubSub => "pubsub",
            Source::Purge => "purge",
        }
    }
}

impl Invalidation {
    /// Parses a message as other services publish it. Unknown fields are ignored (a
    /// publisher may add its own, such as a timestamp); a message that names nothing to drop,
    /// or names an empty key, tag or prefix, is an error, never "drop everything".
    pub fn parse(message: &[u8]) -> Result<Self, String> {
        let parsed: Invalidation = serde_json::from_slice(message)
            .map_err(|e| format!("not an invalidation message: {e}"))?;
        parsed.validate()?;
        Ok(parsed)
    }

    /// Checks that the invalidation names something, and nothing empty.
    pub fn validate(&self) -> Result<(), String> {
        if self.is_empty() {
            return Err("names nothing to drop: give \"keys\", \"tags\" and/or \"prefix\"".into());
        }
        if self.keys.iter().chain(&self.tags).any(|k| k.is_empty()) {
            return Err("an empty key or tag names nothing".into());
        }
        if self.prefix.as_deref() == Some("") {
            return Err("an empty prefix would drop the whole cache; name a prefix".into());
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.tags.is_empty() && self.prefix.is_none()
    }

    /// An invalidation of these keys and tags.
    pub fn keys_and_tags(keys: Vec<String>, tags: Vec<String>) -> Self {
        Self {
            keys,
            tags,
            ..Self::default()
        }
    }
}

/// The base of a key: what an invalidation of the key drops, with all its variants
/// (`credential:abc123?x=1` → `credential:abc123`, and `page:1#accept-language=de`, a `Vary`
/// variant, → `page:1`). Request values in keys are escaped, so the first `?` or `#` always
/// starts the query or header variant.
pub fn base_key(key: &str) -> &str {
    key.split(['?', '#']).next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_message_flask_services_publish() {
        let message = br#"{"keys": ["credential:abc123"], "reason": "revoked", "ts": 1700000000}"#;
        let parsed = Invalidation::parse(message).unwrap();
        assert_eq!(parsed.keys, ["credential:abc123"]);
        assert_eq!(parsed.reason.as_deref(), Some("revoked"));
        let full = Invalidation::parse(br#"{"tags": ["org:7"], "prefix": "user:42:"}"#).unwrap();
        assert_eq!(full.tags, ["org:7"]);
        assert_eq!(full.prefix.as_deref(), Some("user:42:"));
    }

    #[test]
    fn rejects_messages_that_name_nothing_or_everything() {
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"reason":"x"}"#,
            br#"{"prefix":""}"#,
            br#"{"keys":[""]}"#,
            br#"{"keys":"a"}"#,
        ] {
            assert!(
                Invalidation::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn base_keys_drop_the_query_variant() {
        assert_eq!(base_key("credential:abc?x=1&y=2"), "credential:abc");
        assert_eq!(base_key("credential:abc"), "credential:abc");
        assert_eq!(base_key("page:1#accept-language=de"), "page:1");
        assert_eq!(base_key("page:1?x=1#x-team"), "page:1");
    }
}

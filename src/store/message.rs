//! Invalidation: what to drop, where the request to drop it came from, and the message
//! other services publish.
//!
//! An invalidation names keys (each with all its variants), tags, and/or a key prefix, all
//! without the proxy's Redis prefix. The same shape arrives from three places: a successful
//! write on a route with `invalidate`, a pub/sub message from another service
//! (`{"keys": ["credential:abc123"], "reason": "revoked"}` on `cache:invalidate`), and the
//! purge API. How the store makes it take effect is in `store` (generations, tag sets).
//!
//! Anyone who may `PUBLISH` on the channel may drop entries. A Redis ACL decides who may
//! (docs/invalidation.md, "Who may invalidate"); a shared secret can decide it too: with
//! `[invalidation] secret_file`, a message counts only if it carries an HMAC-SHA256 of its
//! JSON under that secret, written before it as `sha256=<64 hex digits> <json>`. Unsigned
//! and badly signed messages are ignored and counted. A prefix rather than a JSON field,
//! so the signature covers the exact bytes sent, with no canonical JSON to agree on.
//! Without a secret, a signed message is read as its JSON: publishers can start signing
//! before the proxies check.

use crate::policy::SigningKey;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt::Write;

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

/// The HMAC of a message under the policy's secret.
fn mac(key: &SigningKey) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key.secret()).expect("HMAC takes a key of any length")
}

/// Why a published message was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A secret is set and the message carries no signature.
    Unsigned,
    /// A secret is set and the signature is not the message's under it.
    BadSignature,
    /// Not an invalidation (or one that names nothing).
    Malformed(String),
}

impl Refused {
    /// The `reason` label of `cachalot_invalidation_messages_rejected_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::Unsigned => "unsigned",
            Refused::BadSignature => "bad_signature",
            Refused::Malformed(_) => "malformed",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Unsigned => f.write_str("unsigned, and [invalidation] secret_file is set"),
            Refused::BadSignature => {
                f.write_str("the signature does not match the message under the shared secret")
            }
            Refused::Malformed(why) => f.write_str(why),
        }
    }
}

/// What a signed message starts with; the signature's hex digits and a space follow.
const SIGNATURE_PREFIX: &[u8] = b"sha256=";

impl Invalidation {
    /// The message to publish: the JSON, signed when there is a key.
    pub fn to_message(&self, key: Option<&SigningKey>) -> String {
        let json = serde_json::to_string(self).expect("an invalidation serializes");
        let Some(key) = key else { return json };
        let mut mac = mac(key);
        mac.update(json.as_bytes());
        let mut message = String::from("sha256=");
        for byte in mac.finalize().into_bytes() {
            let _ = write!(message, "{byte:02x}");
        }
        message.push(' ');
        message.push_str(&json);
        message
    }

    /// Reads a published message: with a key, only a correctly signed one.
    pub fn from_message(message: &[u8], key: Option<&SigningKey>) -> Result<Self, Refused> {
        let (signature, json) = match message.strip_prefix(SIGNATURE_PREFIX) {
            Some(rest) => {
                let (hex, json) = rest.split_at_checked(64).ok_or(Refused::BadSignature)?;
                let json = json.strip_prefix(b" ").ok_or(Refused::BadSignature)?;
                (Some(decode_hex(hex).ok_or(Refused::BadSignature)?), json)
            }
            None => (None, message),
        };
        if let Some(key) = key {
            let signature = signature.ok_or(Refused::Unsigned)?;
            let mut mac = mac(key);
            mac.update(json);
            // Constant time: a forger learns nothing from how long a rejection takes.
            mac.verify_slice(&signature)
                .map_err(|_| Refused::BadSignature)?;
        }
        Self::parse(json).map_err(Refused::Malformed)
    }
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    hex.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
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
    fn signed_messages_verify_and_forgeries_do_not() {
        let key = SigningKey::new("a shared secret of some length");
        let invalidation = Invalidation::keys_and_tags(vec!["order:42".into()], vec![]);
        let signed = invalidation.to_message(Some(&key));
        assert!(signed.starts_with("sha256="), "{signed}");
        assert_eq!(
            Invalidation::from_message(signed.as_bytes(), Some(&key)),
            Ok(invalidation.clone())
        );
        // Without a key, a signed message is read as its JSON (publishers may sign first).
        assert_eq!(
            Invalidation::from_message(signed.as_bytes(), None),
            Ok(invalidation.clone())
        );
        let unsigned = invalidation.to_message(None);
        assert_eq!(
            Invalidation::from_message(unsigned.as_bytes(), Some(&key)),
            Err(Refused::Unsigned)
        );
        let other = SigningKey::new("another shared secret, not ours");
        let forged = invalidation.to_message(Some(&other));
        assert_eq!(
            Invalidation::from_message(forged.as_bytes(), Some(&key)),
            Err(Refused::BadSignature)
        );
        // The signature covers the bytes: a changed key name fails.
        let tampered = signed.replace("order:42", "order:43");
        assert_eq!(
            Invalidation::from_message(tampered.as_bytes(), Some(&key)),
            Err(Refused::BadSignature)
        );
        for bad in ["sha256=", "sha256=zz {}", &signed[..70]] {
            assert_eq!(
                Invalidation::from_message(bad.as_bytes(), Some(&key)),
                Err(Refused::BadSignature),
                "{bad}"
            );
        }
    }
}

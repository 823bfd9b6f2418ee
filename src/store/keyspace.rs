//! Where things live in Redis: the one place that turns a cache key into Redis key names.
//!
//! For an entry key `K = B V`, where `B` is the base and `V` its variant (maybe empty): a
//! `?query`, and/or a `#header=value` part for a response that varies (see `vary`); and a
//! tag `T`:
//!
//! | key | holds |
//! | --- | --- |
//! | `<prefix>:{B}V` | the entry (see `entry`) |
//! | `<prefix>:lock:{B}V` | the collapse lock's token |
//! | `<prefix>:gen:{B}` | B's invalidation generation (absent = 0) |
//! | `<prefix>:variants:{B}` | sorted set of B's live variants, for `max_variants` |
//! | `<prefix>:tag:{T}` | sorted set of the bases tagged T, scored by when their entries expire |
//! | `<prefix>:purged:{T}` | when tag T was last purged (ms), so fills that started before skip storing |
//!
//! The braces are Redis Cluster hash tags: a cluster places a key by the text between its
//! first `{` and the next `}`, so an entry, its variants, its lock and its generation all
//! hash to B's slot, and the lookup's `MGET` of generation and entry is single-slot. A tag's
//! set and purge mark share T's slot. Nothing else is ever in one command together: steps
//! that touch several bases or tags send one single-key command each. Outside a cluster the
//! braces are just characters. Request values are percent-encoded (see `key`), and literal
//! key text cannot contain braces, so a request can never choose another key's slot.

use crate::policy::key::RESERVED_NAMESPACES;

/// Names the Redis keys of one proxy's cache.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// `<prefix>:{B}V`.
    pub fn entry(&self, key: &str) -> String {
        let (base, variant) = split(key);
        self.name("", base, variant)
    }

    /// `<prefix>:gen:{B}`.
    pub fn generation(&self, base: &str) -> String {
        self.name("gen:", base, "")
    }

    /// `<prefix>:variants:{B}`.
    pub fn variants(&self, base: &str) -> String {
        self.name("variants:", base, "")
    }

    /// `<prefix>:lock:{B}V`.
    pub fn lock(&self, key: &str) -> String {
        let (base, variant) = split(key);
        self.name("lock:", base, variant)
    }

    /// `<prefix>:tag:{T}`.
    pub fn tag(&self, tag: &str) -> String {
        self.name("tag:", tag, "")
    }

    /// `<prefix>:purged:{T}`.
    pub fn purged(&self, tag: &str) -> String {
        self.name("purged:", tag, "")
    }

    /// `<prefix>:<namespace>{<hashed>}<rest>`, in one allocation: every lookup names two keys.
    fn name(&self, namespace: &str, hashed: &str, rest: &str) -> String {
        let mut name = String::with_capacity(
            self.prefix.len() + namespace.len() + hashed.len() + rest.len() + 3,
        );
        for part in [self.prefix.as_str(), ":", namespace, "{", hashed, "}", rest] {
            name.push_str(part);
        }
        name
    }

    /// The SCAN pattern for every entry whose key starts with `start` (glob characters in
    /// it match only themselves).
    pub fn entries_starting_with(&self, start: &str) -> String {
        format!("{}:{{{}*", self.prefix, glob_escape(start))
    }

    /// The SCAN pattern for every key of this proxy.
    pub fn everything(&self) -> String {
        format!("{}:*", glob_escape(&self.prefix))
    }

    /// Whom a key of this proxy belongs to: `Some(Some(base))` for an entry and for the
    /// lock, generation and variant set of a base, `Some(None)` for the keys that belong to
    /// no base (tag sets, purge marks), `None` for a key that is not the proxy's.
    pub fn owner_of<'k>(&self, redis_key: &'k str) -> Option<Option<&'k str>> {
        let rest = redis_key.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        let hashed = |text: &'k str| {
            let inner = text.strip_prefix('{')?;
            inner.find('}').map(|end| &inner[..end])
        };
        if let Some(base) = hashed(rest) {
            return Some(Some(base));
        }
        let (namespace, after) = rest.split_once(':')?;
        match namespace {
            "lock" | "gen" | "variants" => hashed(after).map(Some),
            "tag" | "purged" => Some(None),
            _ => None,
        }
    }

    /// The base of an entry's Redis key, or None for the proxy's own keys and foreign keys.
    pub fn base_of(&self, redis_key: &str) -> Option<String> {
        let rest = redis_key.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        let own = RESERVED_NAMESPACES
            .iter()
            .any(|ns| rest.strip_prefix(ns).is_some_and(|r| r.starts_with(':')));
        if own {
            return None;
        }
        let inner = rest.strip_prefix('{')?;
        let (base, _variant) = inner.rsplit_once('}')?;
        Some(base.to_string())
    }
}

/// A key's base and its variant (empty when there is none): see `policy::key::base_key`.
fn split(key: &str) -> (&str, &str) {
    key.split_at(crate::policy::key::base_key(key).len())
}

/// Escapes Redis glob characters, so a prefix matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_its_variants_lock_and_generation_share_one_hash_tag() {
        let keys = Keyspace::new("cachalot");
        assert_eq!(keys.entry("item:42"), "cachalot:{item:42}");
        assert_eq!(keys.entry("item:42?a=1"), "cachalot:{item:42}?a=1");
        assert_eq!(keys.lock("item:42?a=1"), "cachalot:lock:{item:42}?a=1");
        assert_eq!(keys.generation("item:42"), "cachalot:gen:{item:42}");
        assert_eq!(
            keys.entry("page:1#accept-language=de"),
            "cachalot:{page:1}#accept-language=de"
        );
        assert_eq!(keys.variants("item:42"), "cachalot:variants:{item:42}");
        assert_eq!(keys.tag("org:7"), "cachalot:tag:{org:7}");
        assert_eq!(keys.purged("org:7"), "cachalot:purged:{org:7}");
    }

    #[test]
    fn scanned_keys_give_back_their_base() {
        let keys = Keyspace::new("c");
        assert_eq!(keys.base_of("c:{user:1}?a=1").as_deref(), Some("user:1"));
        assert_eq!(keys.base_of("c:{/api/x}").as_deref(), Some("/api/x"));
        assert_eq!(keys.base_of("c:gen:{user:1}"), None);
        assert_eq!(keys.base_of("c:lock:{user:1}"), None);
        assert_eq!(keys.base_of("other:{user:1}"), None);
        assert_eq!(keys.entries_starting_with("a*[b]"), "c:{a\\*\\[b\\]*");
    }

    #[test]
    fn every_key_of_a_base_names_its_base() {
        let keys = Keyspace::new("c");
        assert_eq!(keys.owner_of("c:{user:1}?a=1#host=x"), Some(Some("user:1")));
        assert_eq!(keys.owner_of("c:lock:{user:1}?a=1"), Some(Some("user:1")));
        assert_eq!(keys.owner_of("c:gen:{user:1}"), Some(Some("user:1")));
        assert_eq!(keys.owner_of("c:variants:{user:1}"), Some(Some("user:1")));
        assert_eq!(keys.owner_of("c:tag:{org:7}"), Some(None));
        assert_eq!(keys.owner_of("c:purged:{org:7}"), Some(None));
        assert_eq!(keys.owner_of("other:{user:1}"), None);
        assert_eq!(keys.owner_of("c:stray"), None);
        assert_eq!(keys.everything(), "c:*");
    }
}

//! Cache keys that humans can read: `credential:abc123`, `stats?period=week`.
//!
//! A key is built from the route's `key` template (or a default) over the path parameters,
//! plus the query string as the route's `query` rule allows. Values from the request are
//! percent-encoded so that they can never contain the separators (`:`, `?`), Redis glob
//! characters or Cluster hash-tag braces: a parameter cannot forge another route's key.
//!
//! The query rule applies to the origin request too: a parameter the key ignores never
//! reaches the origin, so the stored response cannot depend on it (a key that ignored
//! `?page=2` while the origin honoured it would serve page 1 for it).

use crate::http::escape::escape_into;
use http::{HeaderMap, HeaderName, header};
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// First components of a key that the proxy keeps for itself.
pub const RESERVED_NAMESPACES: &[&str] = &["lock", "tag", "gen", "purged", "variants"];

/// The `key` setting of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTemplate {
    /// No `key`: a named route uses `name:param:param…`, an unnamed one the request path.
    Default { name: Option<String> },
    /// `key = "credential:{id}"`.
    Template(Vec<KeyPart>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Literal(String),
    Param(String),
}

/// The `query` setting of a route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum QueryRule {
    /// Every parameter is part of the key, sorted so `?a=1&b=2` and `?b=2&a=1` share it.
    #[default]
    Sorted,
    /// The query is not part of the key and is not sent to the origin.
    Ignore,
    /// Only these parameters are part of the key and sent to the origin.
    Allow(Vec<String>),
}

impl KeyTemplate {
    /// Parses a `key` template; `params` are the route's path parameters.
    pub fn parse(template: &str, params: &[&str]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let Some(end) = after.find('}') else {
                    return Err(format!("unclosed '{{' in key {template:?}"));
                };
                let name = &after[..end];
                if !params.contains(&name) {
                    return Err(format!(
                        "key {template:?} uses {{{name}}}, but the route's path has {}",
                        describe_params(params)
                    ));
                }
                parts.push(KeyPart::Param(name.to_string()));
                rest = &after[end + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let literal = &rest[..end];
                if let Some(bad) = literal.chars().find(|c| !is_literal_char(*c)) {
                    return Err(format!(
                        "key {template:?} contains {bad:?}; literal text may use letters, digits and _ - . : / @ = +"
                    ));
                }
                parts.push(KeyPart::Literal(literal.to_string()));
                rest = &rest[end..];
            }
        }
        let first = match parts.first() {
            None => return Err("key must not be empty".into()),
            Some(KeyPart::Literal(text)) => text.split(':').next().unwrap_or_default(),
            Some(KeyPart::Param(_)) => "",
        };
        if RESERVED_NAMESPACES.contains(&first) && template.contains(':') {
            return Err(format!(
                "key {template:?} starts with \"{first}:\", a namespace the proxy keeps for its own data ({})",
                RESERVED_NAMESPACES.join(", ")
            ));
        }
        Ok(KeyTemplate::Template(parts))
    }

    /// Path parameters the template leaves out (requests differing only there share an entry).
    pub fn unused_params<'a>(&self, params: &[&'a str]) -> Vec<&'a str> {
        match self {
            KeyTemplate::Default { .. } => Vec::new(),
            KeyTemplate::Template(parts) => params
                .iter()
                .filter(|p| !parts.contains(&KeyPart::Param(p.to_string())))
                .copied()
                .collect(),
        }
    }

    /// The key for one request (without the Redis prefix). `params` are the route's match
    /// ([`crate::policy::route::Params`]), each value in its canonical form, so every alias of one
    /// value (`0042`, `４２`) builds the same key.
    pub fn build<V: AsRef<str>>(
        &self,
        params: &[(&str, V)],
        path: &str,
        query: Option<&str>,
        rule: &QueryRule,
    ) -> String {
        let mut key = String::with_capacity(64);
        match self {
            KeyTemplate::Default { name: Some(name) } => {
                key.push_str(name);
                for (_, value) in params {
                    key.push(':');
                    escape_into(&mut key, value.as_ref(), b"/");
                }
            }
            KeyTemplate::Default { name: None } => escape_into(&mut key, path, b"/:@!$'()+,;="),
            KeyTemplate::Template(parts) => {
                for part in parts {
                    match part {
                        KeyPart::Literal(text) => key.push_str(text),
                        KeyPart::Param(name) => {
                            let value = params
                                .iter()
                                .find(|(n, _)| n == name)
                                .map_or("", |(_, v)| v.as_ref());
                            escape_into(&mut key, value, b"/");
                        }
                    }
                }
            }
        }
        if let Some(query) = query {
            // Each pair escaped once into `name[=value]`, with the name's length to sort by.
            let mut pairs: Vec<(String, usize)> = query_pairs(query)
                .filter(|(name, _)| rule.keeps(name))
                .map(|(name, value)| {
                    let mut pair = String::new();
                    escape_into(&mut pair, name, QUERY_KEEP);
                    let name_len = pair.len();
                    if let Some(value) = value {
                        pair.push('=');
                        escape_into(&mut pair, value, QUERY_KEEP);
                    }
                    (pair, name_len)
                })
                .collect();
            if !pairs.is_empty() {
                // By name only, and stable: repeated parameters keep their order, which the
                // origin may depend on (`?tag=b&tag=a` is not `?tag=a&tag=b` to Flask's getlist).
                pairs.sort_by(|(a, a_len), (b, b_len)| a[..*a_len].cmp(&b[..*b_len]));
                key.push('?');
                for (i, (pair, _)) in pairs.iter().enumerate() {
                    if i > 0 {
                        key.push('&');
                    }
                    key.push_str(pair);
                }
            }
        }
        key
    }
}

impl QueryRule {
    /// Whether a parameter (by its raw name) is part of the key and reaches the origin.
    fn keeps(&self, raw_name: &str) -> bool {
        match self {
            QueryRule::Sorted => true,
            QueryRule::Ignore => false,
            QueryRule::Allow(names) => {
                let mut decoded = String::new();
                escape_into(&mut decoded, raw_name, QUERY_KEEP);
                names.iter().any(|n| *n == decoded || n == raw_name)
            }
        }
    }

    /// The query string to send to the origin: untouched, unless the rule drops parameters.
    pub fn forwarded<'q>(&self, query: Option<&'q str>) -> Option<std::borrow::Cow<'q, str>> {
        let query = query?;
        match self {
            QueryRule::Sorted => Some(query.into()),
            QueryRule::Ignore => None,
            QueryRule::Allow(_) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| !pair.is_empty())
                    .filter(|pair| self.keeps(pair.split_once('=').map_or(*pair, |p| p.0)))
                    .collect();
                (!kept.is_empty()).then(|| kept.join("&").into())
            }
        }
    }
}

/// The request's authority, after the path and query: `#host=a.example`. Origins build
/// absolute URLs and redirects from `Host` and pick tenants by it, so two authorities never
/// share an entry. It is a variant of the base key, like the query: invalidating
/// `credential:abc` (by key, tag, prefix or a write) drops it for every host.
///
/// `authority` is in normal form (see `authority::normalize`: letters, digits, `-._~`, an
/// IPv6 literal and a port), so it cannot hold a separator, glob character or brace.
pub fn append_authority(key: &mut String, authority: &str) {
    if !key.contains('?') {
        key.push('?');
    }
    key.push_str("#host=");
    key.push_str(authority);
}

/// The parts of a key that come from request headers, after the path and query:
/// `#user=<hash>` for a route with `per_user = true` and a request with `Authorization`,
/// `#vary=<hash>` for a route with `vary = [...]`. `#` is escaped everywhere else in a key
/// (it never reaches a server in a URL), so these cannot be forged by a path or query; they
/// sit after `?`, so invalidating the base key drops every user's and every header's variant.
///
/// Both are SHA-256 digests (128 bits shown), never the values: a credential is not
/// readable from Redis, and a header value cannot inject anything into the key.
pub fn append_header_variant(
    key: &mut String,
    headers: &HeaderMap,
    per_user: bool,
    vary: &[HeaderName],
) {
    let user = per_user
        .then(|| headers.get(header::AUTHORIZATION))
        .flatten()
        .map(|credential| digest(b"cachalot user\0", [credential.as_bytes()]));
    let varied = (!vary.is_empty()).then(|| {
        // Each header contributes its name, then its values in order; absence is distinct
        // from an empty value.
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for name in vary {
            let mut part = name.as_str().as_bytes().to_vec();
            for value in headers.get_all(name) {
                part.push(b'\n');
                part.extend_from_slice(value.as_bytes());
            }
            parts.push(part);
        }
        digest(b"cachalot vary\0", parts.iter().map(Vec::as_slice))
    });
    if user.is_none() && varied.is_none() {
        return;
    }
    if !key.contains('?') {
        key.push('?');
    }
    if let Some(user) = user {
        let _ = write!(key, "#user={user}");
    }
    if let Some(varied) = varied {
        let _ = write!(key, "#vary={varied}");
    }
}

/// The first 128 bits of SHA-256 over `domain` and each part (length-prefixed), in hex.
fn digest<'a>(domain: &[u8], parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let hash = hasher.finalize();
    let mut hex = String::with_capacity(32);
    for byte in &hash[..16] {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Sub-delimiters that may stay as they are inside a query name or value in a key.
const QUERY_KEEP: &[u8] = b"/:@!$'()+,;";

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (pair, None),
        })
}

fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.:/@=+".contains(c)
}

fn describe_params(params: &[&str]) -> String {
    if params.is_empty() {
        "no parameters".into()
    } else {
        let list: Vec<String> = params.iter().map(|p| format!("{{{p}}}")).collect();
        format!("only {}", list.join(", "))
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

    fn template(t: &str) -> KeyTemplate {
        KeyTemplate::parse(t, &["id", "org"]).unwrap()
    }

    #[test]
    fn template_expands_params_and_sorted_query() {
        let params = vec![("id", "abc123")];
        let key =
            template("credential:{id}").build(&params, "/x", Some("b=2&a=1"), &QueryRule::Sorted);
        assert_eq!(key, "credential:abc123?a=1&b=2");
        let key = template("credential:{id}").build(&params, "/x", None, &QueryRule::Sorted);
        assert_eq!(key, "credential:abc123");
    }

    #[test]
    fn params_cannot_forge_separators_or_globs() {
        let forged = vec![("id", "abc:def*?{x}")];
        let key = template("credential:{id}").build(&forged, "/", None, &QueryRule::Sorted);
        assert_eq!(key, "credential:abc%3Adef%2A%3F%7Bx%7D");
    }

    #[test]
    fn equivalent_escapes_share_a_key_and_different_values_do_not() {
        let t = template("c:{id}");
        let a = t.build(&[("id", "a%62c")], "/", None, &QueryRule::Sorted);
        let b = t.build(&[("id", "abc")], "/", None, &QueryRule::Sorted);
        assert_eq!(a, b);
        let plus = t.build(&[("id", "x")], "/", Some("q=1+2"), &QueryRule::Sorted);
        let escaped_plus = t.build(&[("id", "x")], "/", Some("q=1%2B2"), &QueryRule::Sorted);
        assert_ne!(plus, escaped_plus);
    }

    #[test]
    fn repeated_parameters_keep_their_order() {
        let t = KeyTemplate::Default {
            name: Some("s".into()),
        };
        let ab = t.build(
            &[] as &[(&str, &str)],
            "/",
            Some("tag=b&x=1&tag=a"),
            &QueryRule::Sorted,
        );
        let ba = t.build(
            &[] as &[(&str, &str)],
            "/",
            Some("tag=a&x=1&tag=b"),
            &QueryRule::Sorted,
        );
        assert_eq!(ab, "s?tag=b&tag=a&x=1");
        assert_ne!(ab, ba);
    }

    #[test]
    fn query_rules_shape_key_and_origin_query() {
        let t = KeyTemplate::Default {
            name: Some("stats".into()),
        };
        let allow = QueryRule::Allow(vec!["period".into()]);
        let key = t.build(
            &[] as &[(&str, &str)],
            "/api/stats",
            Some("utm=x&period=day"),
            &allow,
        );
        assert_eq!(key, "stats?period=day");
        assert_eq!(
            allow.forwarded(Some("utm=x&period=day")).unwrap(),
            "period=day"
        );
        assert_eq!(QueryRule::Ignore.forwarded(Some("a=1")), None);
        let key = t.build(
            &[] as &[(&str, &str)],
            "/api/stats",
            Some("a=1"),
            &QueryRule::Ignore,
        );
        assert_eq!(key, "stats");
    }

    #[test]
    fn default_keys() {
        let named = KeyTemplate::Default {
            name: Some("file".into()),
        };
        assert_eq!(
            named.build(
                &[("org", "o1"), ("rest", "a/b")],
                "/",
                None,
                &QueryRule::Sorted
            ),
            "file:o1:a/b"
        );
        let unnamed = KeyTemplate::Default { name: None };
        assert_eq!(
            unnamed.build(
                &[] as &[(&str, &str)],
                "/api/stats",
                Some("x=1"),
                &QueryRule::Sorted
            ),
            "/api/stats?x=1"
        );
    }

    #[test]
    fn header_variants_hash_credentials_and_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer alice-token".parse().unwrap());
        headers.insert("x-forwarded-host", "evil.example".parse().unwrap());
        let host = [HeaderName::from_static("x-forwarded-host")];
        let mut alice = String::from("profile:42");
        append_header_variant(&mut alice, &headers, true, &host);
        assert!(alice.starts_with("profile:42?#user="), "{alice}");
        assert!(alice.contains("#vary="), "{alice}");
        assert!(
            !alice.contains("alice") && !alice.contains("evil"),
            "{alice}"
        );

        headers.insert("authorization", "Bearer bob-token".parse().unwrap());
        let mut bob = String::from("profile:42");
        append_header_variant(&mut bob, &headers, true, &host);
        assert_ne!(alice, bob);

        // Without the opt-ins, or without the headers, the key is unchanged.
        let mut plain = String::from("profile:42?a=1");
        append_header_variant(&mut plain, &headers, false, &[]);
        assert_eq!(plain, "profile:42?a=1");
        let mut anonymous = String::from("profile:42");
        append_header_variant(&mut anonymous, &HeaderMap::new(), true, &[]);
        assert_eq!(anonymous, "profile:42");
        // An absent header and an empty one differ.
        let mut absent = String::from("k");
        append_header_variant(&mut absent, &HeaderMap::new(), false, &host);
        let mut empty_headers = HeaderMap::new();
        empty_headers.insert("x-forwarded-host", "".parse().unwrap());
        let mut empty = String::from("k");
        append_header_variant(&mut empty, &empty_headers, false, &host);
        assert_ne!(absent, empty);
    }

    #[test]
    fn the_authority_is_a_variant_of_the_base_key() {
        let mut key = String::from("credential:abc");
        append_authority(&mut key, "a.example:8080");
        assert_eq!(key, "credential:abc?#host=a.example:8080");
        assert_eq!(base_key(&key), "credential:abc");
        let mut with_query = String::from("stats?period=day");
        append_authority(&mut with_query, "a.example");
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer t".parse().unwrap());
        append_header_variant(&mut with_query, &headers, true, &[]);
        assert!(
            with_query.starts_with("stats?period=day#host=a.example#user="),
            "{with_query}"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "credential:{nope}",
            "lock:{id}",
            "a b",
            "x:{id",
            "",
            "a*{id}",
        ] {
            assert!(KeyTemplate::parse(bad, &["id"]).is_err(), "{bad}");
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

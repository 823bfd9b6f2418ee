//! Route tables many test files share, as TOML snippets to pass (alone or joined) to the
//! harness: one copy, so a change to the credential example changes every test using it.
//! The snippets are also macros, so a test file can `concat!` one into a const of its own
//! (a `[[route]]` table takes any lines appended right after it, e.g. `l1 = true`).

/// The cached credential lookup every suite starts from: `GET /api/credentials/{id}`, ten
/// minutes, keyed `credential:{id}` (the example policy's first route).
macro_rules! credential {
    () => {
        r#"
[[route]]
name = "credential"
match = "GET /api/credentials/{id}"
ttl = "10m"
key = "credential:{id}"
"#
    };
}

/// The revoke that invalidates a credential: `POST /api/credentials/{id}/revoke` drops
/// `credential:{id}`.
macro_rules! revoke {
    () => {
        r#"
[[route]]
name = "revoke"
match = "POST /api/credentials/{id}/revoke"
invalidate = ["credential:{id}"]
"#
    };
}

pub(crate) use {credential, revoke};

/// See [`credential!`].
pub const CREDENTIAL: &str = credential!();

/// The credential route and its revoke, for suites that invalidate.
pub const CREDENTIAL_AND_REVOKE: &str = concat!(credential!(), revoke!());

/// A plain cached route for suites about the process rather than the cache (its log, its
/// signals): `GET /items/{id}`, a minute, keyed `item:{id}`.
pub const ITEM: &str = r#"
[[route]]
name = "item"
match = "GET /items/{id}"
ttl = "1m"
key = "item:{id}"
"#;

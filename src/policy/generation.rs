//! How long Redis keeps a key's invalidation generation: derived from the policy's routes,
//! and set on the store at start and on every reload (so it lives beside the policy, where
//! both the server and the proxy's reload can read it without reaching into each other).

use crate::policy::Policy;
use crate::policy::route::Action;
use std::time::Duration;

/// Generation counters outlive every entry stored under an older generation: at least a
/// day, and twice the longest an entry can be kept (freshness plus stale windows).
pub(crate) fn generation_ttl(policy: &Policy) -> Duration {
    let longest = policy
        .routes
        .iter()
        .filter_map(|route| match &route.action {
            Action::Cache(rule) => {
                Some(rule.ttl.longest() + rule.stale_while_revalidate.max(rule.stale_if_error))
            }
            Action::Pass => None,
        })
        .max()
        .unwrap_or_default();
    (longest * 2).max(Duration::from_secs(24 * 3600))
}

//! Walking the keyspace with SCAN, a bounded page at a time (never KEYS, which blocks Redis
//! for the whole keyspace). A cluster keeps each slot on one primary, so a full walk keeps
//! one cursor per primary.

use super::Store;
use super::command::Command;
use fred::prelude::*;
use fred::types::config::Server;

impl Store {
    /// The nodes a full walk visits: every primary of a cluster, or the one server (`None`).
    pub(super) fn primaries(&self) -> Vec<Option<Server>> {
        match self.control.cached_cluster_state() {
            Some(state) if self.control.is_clustered() => {
                state.unique_primary_nodes().into_iter().map(Some).collect()
            }
            _ => vec![None],
        }
    }

    /// One page of the keys matching `pattern` on `node`, from `cursor` ("0" to start):
    /// the next cursor ("0" when the walk is done) and the keys. `count` is SCAN's hint.
    pub(super) fn scan_page_on(
        &self,
        node: Option<Server>,
        cursor: String,
        pattern: String,
        count: u32,
    ) -> Command<'static, (String, Vec<String>)> {
        let options = Options {
            cluster_node: node,
            ..self.options.clone()
        };
        let client = self.control.with_options(&options);
        Box::pin(async move {
            client
                .scan_page(cursor.as_str(), pattern.as_str(), Some(count), None)
                .await
        })
    }
}

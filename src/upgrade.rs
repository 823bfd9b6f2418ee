//! Protocol upgrades (WebSocket and friends) pass through: the proxy forwards the handshake
//! and, once the origin answers 101, splices the two connections together untouched.
//!
//! `Connection` and `Upgrade` are hop-by-hop headers, removed from everything else the proxy
//! forwards; an upgrade is the one exchange where they must cross.

use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The protocol the client asks to switch to, if it asks (`Connection: upgrade` + `Upgrade`).
pub fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Puts back the upgrade headers that hop-by-hop stripping removed.
pub fn keep(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Once both sides have switched protocols, copies bytes both ways until either closes.
pub fn splice(client: OnUpgrade, origin: OnUpgrade) {
    tokio::spawn(async move {
        let (client, origin) = match tokio::try_join!(client, origin) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut origin = TokioIo::new(origin);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut origin).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}

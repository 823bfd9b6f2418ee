//! WebSocket upgrades pass through: the proxy forwards the handshake and, once the origin
//! answers 101, splices the two connections together untouched.
//!
//! `Connection` and `Upgrade` are hop-by-hop headers, removed from everything else the proxy
//! forwards; an upgrade is the one exchange where they must cross, and only for WebSocket.
//! After a 101 the connection is a raw tunnel to the origin: nothing the proxy checks
//! (path normalisation, framing, limits, the cache itself) applies to what flows through
//! it. For WebSocket that is the point, and its frames are not HTTP requests. For `h2c`
//! it would be a way around the proxy: every HTTP/2 request sent after the switch would
//! reach the origin unchecked, including ones the proxy refuses with 400. Other protocols
//! (`TLS/1.0`, IRC, anything) the proxy cannot vouch for either. So any other `Upgrade` is
//! dropped as the hop-by-hop header it is (RFC 9110 §7.8 lets a server ignore it): the
//! request is forwarded as plain HTTP/1.1, which is what an `h2c` client falls back to
//! when no 101 comes. And a 101 the proxy did not ask for (an origin that switches anyway,
//! or to another protocol) is answered 502, never spliced.

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

/// The protocols the proxy tunnels, out of those a client offers (`Upgrade: websocket,
/// h2c` offers two); `None` when it tunnels none of them.
pub fn allowed(offered: &HeaderValue) -> Option<HeaderValue> {
    let kept: Vec<&str> = offered
        .to_str()
        .ok()?
        .split(',')
        .map(str::trim)
        .filter(|protocol| is_websocket(protocol))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// Whether the protocol an origin's 101 switched to is one the client was allowed to ask for.
pub fn switched_to_allowed(accepted: Option<&HeaderValue>, asked: &HeaderValue) -> bool {
    let Some(accepted) = accepted.and_then(|v| v.to_str().ok()).map(str::trim) else {
        return false;
    };
    is_websocket(accepted)
        && asked.to_str().is_ok_and(|asked| {
            asked
                .split(',')
                .any(|p| p.trim().eq_ignore_ascii_case(accepted))
        })
}

/// `websocket`, in any case, with or without a version (`websocket/13`).
fn is_websocket(protocol: &str) -> bool {
    protocol
        .split('/')
        .next()
        .is_some_and(|name| name.trim().eq_ignore_ascii_case("websocket"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_websocket_is_tunnelled() {
        let offer = |v: &'static str| allowed(&HeaderValue::from_static(v));
        assert_eq!(offer("websocket").unwrap(), "websocket");
        assert_eq!(offer("WebSocket").unwrap(), "WebSocket");
        assert_eq!(offer("h2c, websocket").unwrap(), "websocket");
        for refused in ["h2c", "h2", "TLS/1.0", "HTTP/2.0", "", "websocketx"] {
            assert!(offer(refused).is_none(), "{refused}");
        }
        let asked = HeaderValue::from_static("websocket");
        let ws = HeaderValue::from_static("WebSocket");
        let h2c = HeaderValue::from_static("h2c");
        assert!(switched_to_allowed(Some(&ws), &asked));
        assert!(!switched_to_allowed(Some(&h2c), &asked));
        assert!(!switched_to_allowed(None, &asked));
    }
}

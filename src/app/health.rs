//! `cachalot health`: asks a running proxy's admin listener whether it is ready, for a
//! container `HEALTHCHECK` (the image has no curl) or a script. `explain --live` reads the
//! status page's numbers the same way.
//!
//! The address is the policy's `listen.admin` after the environment
//! (`CACHALOT_ADMIN_LISTEN`), as `run` computes it; a wildcard address (`0.0.0.0`, `::`) is
//! asked on the loopback of the same family, which is where a check inside the container
//! reaches it.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpStream;

/// The whole check, connect to answer: a health check that hangs is a failed one.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Where a check on this host reaches a listener bound to `addr`.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// `GET /readyz` on the admin listener at `admin`: Ok if it answers 200, else why not.
pub async fn check(admin: SocketAddr) -> Result<(), String> {
    let (status, body) = admin_get(admin, "/readyz").await?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!(
            "{}/readyz answered {status}: {}",
            reachable(admin),
            String::from_utf8_lossy(&body).trim()
        ))
    }
}

/// `GET path` on the admin listener bound to `admin` (also for `explain --live`), asked where
/// this host reaches it: its status and body, within [`TIMEOUT`].
pub async fn admin_get(admin: SocketAddr, path: &str) -> Result<(StatusCode, Bytes), String> {
    let target = reachable(admin);
    tokio::time::timeout(TIMEOUT, get(&target.to_string(), path))
        .await
        .unwrap_or_else(|_| Err(format!("{target} did not answer within {TIMEOUT:?}")))
}

/// `GET path` on the admin listener at `authority` (`host:port`): its status and body.
/// Also what `cachalot report` reads `/status.json` with.
pub async fn get(authority: &str, path: &str) -> Result<(StatusCode, Bytes), String> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{authority}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("{authority}{path}: {e}"))?;
    Ok((status, body))
}

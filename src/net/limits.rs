//! What one client may cost the proxy: the numbers the listener and the connection registry
//! enforce. The policy's `[limits]` section fills them in (see `policy::limits`); they live here
//! because the listener, not the policy, is what they are about.

use std::time::Duration;

/// Limits on connections and requests (defaults in [`Limits::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body: 413 when `Content-Length` declares more; a streamed body that
    /// goes over is cut off, answered 413 and its connection closed. Applies on reload.
    pub max_body: u64,
    /// Largest request head (request line and headers): 431.
    pub max_head_size: usize,
    /// Most header lines in a request head: 431.
    pub max_headers: usize,
    /// Time a client has to send a complete request head (slowloris). On HTTP/1 it runs from
    /// the end of the previous response, so it also closes keep-alive connections idle longer.
    pub header_timeout: Duration,
    /// A connection with no bytes in either direction for this long is closed (after any
    /// response in progress): HTTP/2 and upgraded connections included.
    pub idle_timeout: Duration,
    /// A response the client stops taking is cut off once nothing of it has moved for this
    /// long (nginx's `send_timeout`): on HTTP/1 the connection is closed; on HTTP/2 the stream
    /// is reset and the connection sent GOAWAY. Its memory, and a pass's origin connection,
    /// are released with it.
    pub send_timeout: Duration,
    /// Open connections on the public listener; beyond it, new ones get 503 and are closed.
    pub max_connections: usize,
    /// HTTP/2: streams one connection may have open at once.
    pub h2_max_streams: u32,
    /// HTTP/2: streams a client may reset before the proxy accepted them (rapid reset,
    /// CVE-2023-44487); beyond it the connection is closed with GOAWAY. Counted apart, as
    /// many resets of streams already accepted (their requests may be at the origin): past
    /// those, GOAWAY too (see `send_timeout`).
    pub h2_max_resets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 16 * 1024 * 1024,
            max_head_size: 64 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            send_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            h2_max_streams: 128,
            h2_max_resets: 20,
        }
    }
}

impl Limits {
    /// Whether the settings that belong to the listener (all but `max_body`) differ.
    pub fn listener_differs(&self, other: &Self) -> bool {
        let mut same_body = other.clone();
        same_body.max_body = self.max_body;
        *self != same_body
    }
}

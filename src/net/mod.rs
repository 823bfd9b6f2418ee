//! Sockets and connections, with no cache meaning: the listener and its limits, the
//! connection registry that closes idle and stalled connections, upgrades, TLS, and the
//! body type every response is sent with.

pub mod body;
pub mod connections;
pub mod limits;
pub mod listener;
pub mod send_timeout;
pub mod tls;
pub mod upgrade;

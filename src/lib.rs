//! cachalot: a transparent, Redis-backed HTTP caching reverse proxy.
//!
//! A TOML policy names the routes to cache, their TTLs and readable Redis keys; everything
//! else is forwarded untouched. Hits come from Redis, shared by every instance; concurrent
//! misses for a key make one origin request across instances; when Redis is down the proxy
//! keeps serving from the origin.
//!
//! The folders are the stages a request passes, top to bottom; each uses only those below it:
//!
//! | folder | what it holds |
//! | --- | --- |
//! | `app` | the binary's faces: command line, server wiring, live reload, admin port, status page, explain |
//! | `request` | one request's way through: admit, decide, look up, fill or forward, answer |
//! | `observe` | what the proxy tells operators: metrics, per-route statistics |
//! | `store` | Redis: entries, locks, fill notices, invalidation, the in-process tier |
//! | `origin` | the pooled client to the API behind the proxy |
//! | `policy` | the policy file and what it compiles to: settings, routes, key templates |
//! | `http` | HTTP rules that need neither policy nor Redis: framing, paths, freshness, `Vary`, ranges |
//! | `net` | sockets and connections: listener, connection limits, upgrades, TLS, response bodies |
//! | `phase` | the words for what happened to a request, shared by header, log and metrics |

pub mod app;
pub mod http;
pub mod net;
pub mod observe;
pub mod origin;
pub mod phase;
pub mod policy;
pub mod request;
pub mod store;

pub use app::server::{Server, StartError};
pub use policy::{Policy, PolicyError};

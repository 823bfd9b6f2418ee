//! cachalot: a transparent, Redis-backed HTTP caching reverse proxy.
//!
//! A TOML policy names the routes to cache, their TTLs and readable Redis keys; everything
//! else is forwarded untouched. Hits come from Redis, shared by every instance; concurrent
//! misses for a key make one origin request across instances; when Redis is down the proxy
//! keeps serving from the origin. See `proxy` for the request's way through.

pub mod admin;
pub mod admit;
pub mod authority;
pub mod batch;
pub mod body;
pub mod cache_status;
pub mod cli;
pub mod collapse;
pub mod decision;
pub mod entry;
pub mod explain;
mod fill;
mod finish;
pub mod flask_routes;
pub mod framing;
pub mod freshness;
pub mod health;
pub mod idle;
pub mod invalidate;
pub mod key;
pub mod keyspace;
pub mod l1;
pub mod listener;
pub mod metrics;
pub mod origin;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod range;
pub mod redis_connect;
pub mod redis_tls;
pub mod reload;
pub mod request_id;
pub mod route;
pub mod semantics;
pub mod send_timeout;
pub mod server;
pub mod stats;
pub mod status_page;
pub mod store;
pub mod tags;
pub mod targeted;
pub mod upgrade;
pub mod vary;

pub use policy::{Policy, PolicyError};
pub use server::{Server, StartError};

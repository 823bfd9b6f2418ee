//! The common test setup in one value: a `redis-server` of the test's own, an origin and
//! the real proxy started from a routes text. Tests that need only one of the parts, or
//! parts this does not cover (a raw origin, a cluster, the binary as a process), use
//! [`RedisServer`], [`Origin`] and [`start_proxy`](super::start_proxy) directly.

use super::origin::Seen;
use super::{Got, HOST, Origin, RedisServer, Reply, get, policy_text_listen};
use cachalot::app::admin::AdminConfig;
use cachalot::{Policy, Server};
use std::net::SocketAddr;

/// A running Redis, origin and proxy. Dropping it stops all three.
///
/// Tests destructure it to keep their own names: `let Stack { redis, origin, proxy, .. } =
/// Stack::start(routes).await;`. Name all three (`redis: _redis` if unused): a part left to
/// `..` is dropped at the end of the `let`, which stops it.
pub struct Stack {
    /// The proxy (dropped first: it holds connections to the other two).
    pub proxy: Server,
    /// The origin behind the proxy: [`Origin::echo`] unless the builder was given another.
    pub origin: Origin,
    /// The proxy's own Redis; tests kill, restart and read it.
    pub redis: RedisServer,
    /// The policy text the proxy started from, for [`Stack::another`].
    policy: String,
}

impl Stack {
    /// An echo origin and a proxy serving [`HOST`] with `routes`.
    pub async fn start(routes: &str) -> Self {
        Self::builder(routes).start().await
    }

    /// A stack with more than the defaults; see [`Builder`].
    pub fn builder(routes: &str) -> Builder {
        Builder {
            routes: routes.to_string(),
            listen: format!("hosts = [\"{HOST}\"]"),
            origin: None,
            admin: None,
        }
    }

    /// The proxy's listener.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    /// The proxy's admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.proxy.admin_addr()
    }

    /// `GET path` through the proxy, with extra headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        get(self.addr(), path, headers).await
    }

    /// A second proxy instance with the same policy, Redis and origin: what another
    /// replica of a deployment sees.
    pub async fn another(&self) -> Server {
        start(&self.policy, None).await
    }
}

/// The variants of [`Stack`] tests use; each setter replaces the default it names.
pub struct Builder {
    routes: String,
    listen: String,
    origin: Option<Origin>,
    admin: Option<AdminConfig>,
}

impl Builder {
    /// Appends more routes (or other sections) after the ones given to [`Stack::builder`].
    pub fn routes(mut self, more: &str) -> Self {
        self.routes.push_str(more);
        self
    }

    /// The `[listen]` settings besides the addresses, replacing `hosts = ["cachalot.test"]`
    /// (`""`: any host, each keyed apart).
    pub fn listen(mut self, listen: &str) -> Self {
        self.listen = listen.to_string();
        self
    }

    /// An origin the test already started (with state it shares with the handler).
    pub fn origin(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// An admin listener with these settings (a purge token) instead of the environment's.
    pub fn admin(mut self, admin: AdminConfig) -> Self {
        self.admin = Some(admin);
        self
    }

    /// Starts Redis, the origin (an echo unless one was given) and the proxy.
    pub async fn start(mut self) -> Stack {
        let origin = match self.origin.take() {
            Some(origin) => origin,
            None => Origin::echo().await,
        };
        self.finish(origin).await
    }

    /// As [`Builder::start`], with an origin answering each request `handler(request, n)`.
    pub async fn start_with(
        self,
        handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> Stack {
        assert!(self.origin.is_none(), "both an origin and a handler given");
        let origin = Origin::start(handler).await;
        self.finish(origin).await
    }

    async fn finish(self, origin: Origin) -> Stack {
        let redis = RedisServer::start();
        let policy =
            policy_text_listen(origin.addr(), &redis.url(), &self.listen, "", &self.routes);
        let proxy = start(&policy, self.admin).await;
        Stack {
            proxy,
            origin,
            redis,
            policy,
        }
    }
}

/// Starts a proxy from a complete policy text, with the environment's admin settings unless
/// `admin` is given.
async fn start(text: &str, admin: Option<AdminConfig>) -> Server {
    let policy =
        Policy::parse(text, "test.toml").unwrap_or_else(|e| panic!("test policy is invalid: {e}"));
    let started = match admin {
        Some(admin) => Server::start_with(policy, admin).await,
        None => Server::start(policy).await,
    };
    started.expect("proxy starts")
}

//! A running proxy: both listeners, Redis, the origin client. `main` starts one; tests start
//! several in one process, each with its own Redis connections, as separate instances would.

use crate::app::admin::AdminConfig;
use crate::app::{admin, reload};
use crate::net::listener;
use crate::observe::stats::Stats;
use crate::origin::Origin;
use crate::policy::{Limits, Policy};
use crate::request::collapse::Flights;
use crate::request::proxy::Proxy;
use crate::store::Store;
use crate::store::message::{Invalidation, Refused, Source};
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("redis: {0}")]
    Redis(#[from] crate::store::Unavailable),
}

/// A started proxy.
pub struct Server {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    admin_shutdown: watch::Sender<bool>,
    public_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    proxy: Arc<Proxy>,
    /// Held for its `Drop`: the watch ends with the server.
    _policy_watch: Option<reload::Watch>,
}

impl Server {
    /// Binds both listeners and starts serving, with the purge API's token from the
    /// environment (`CACHALOT_ADMIN_TOKEN`). Redis being down is not an error: the proxy
    /// serves from the origin until it is back.
    pub async fn start(policy: Policy) -> Result<Self, StartError> {
        Self::start_with(policy, AdminConfig::from_env()).await
    }

    /// As [`Server::start`], with the admin listener's settings given: tests run several
    /// instances in one process, each with its own token.
    pub async fn start_with(policy: Policy, admin_config: AdminConfig) -> Result<Self, StartError> {
        Self::start_inner(policy, admin_config, None).await
    }

    /// As [`Server::start`], reloading the policy from `path` on SIGHUP and whenever the
    /// file changes. The watch begins before the listener serves: an edit or a SIGHUP sent
    /// as soon as the proxy answers is never missed.
    pub async fn start_watching(policy: Policy, path: PathBuf) -> Result<Self, StartError> {
        Self::start_inner(policy, AdminConfig::from_env(), Some(path)).await
    }

    async fn start_inner(
        policy: Policy,
        admin_config: AdminConfig,
        policy_file: Option<PathBuf>,
    ) -> Result<Self, StartError> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, what, source })
        };
        let public = bind(policy.listen.addr, "listen.addr").await?;
        let admin_listener = bind(policy.listen.admin, "listen.admin").await?;
        let addr = public.local_addr().map_err(|source| StartError::Bind {
            addr: policy.listen.addr,
            what: "listen.addr",
            source,
        })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: policy.listen.admin,
                what: "listen.admin",
                source,
            })?;

        crate::observe::metrics::install();
        let store = Store::connect(&policy.redis, policy.l1).await?;
        store.set_generation_ttl(crate::policy::generation::generation_ttl(&policy));
        let flights = Flights::new();
        let (messages, inbox) = mpsc::channel(INVALIDATION_QUEUE);
        {
            let flights = Arc::clone(&flights);
            store
                .listen(
                    policy.invalidation.channel.clone(),
                    move |notice| flights.deliver(notice),
                    move |message| {
                        if messages.try_send(message).is_err() {
                            tracing::error!("invalidation messages arrive faster than they are applied; dropping one");
                        }
                    },
                )
                .await?;
        }
        let proxy = Arc::new(Proxy {
            origin: Arc::new(Origin::new(&policy.origin)),
            policy: ArcSwap::from_pointee(policy),
            store,
            flights,
            stats: Stats::default(),
            verifications: Arc::default(),
        });
        tokio::spawn(apply_messages(Arc::clone(&proxy), inbox));
        let policy_watch = policy_file.map(|path| reload::watch(Arc::clone(&proxy), path));

        let (shutdown, stop) = watch::channel(false);
        tokio::spawn(sample_memory(Arc::downgrade(&proxy), stop.clone()));
        // The admin listener outlives the public one's drain, answering /readyz with 503.
        let (admin_shutdown, admin_stop) = watch::channel(false);
        let stopping = stop.clone();
        let limits = proxy.policy().limits.clone();
        let serving = Arc::clone(&proxy);
        let public_task = tokio::spawn(listener::serve(
            public,
            move |request, peer| Arc::clone(&serving).handle(request, peer),
            stop.clone(),
            limits,
        ));
        let admin_proxy = Arc::clone(&proxy);
        let admin_task = tokio::spawn(listener::serve(
            admin_listener,
            move |request, _peer| {
                admin::handle(
                    Arc::clone(&admin_proxy),
                    admin_config.clone(),
                    stopping.clone(),
                    request,
                )
            },
            admin_stop,
            Limits::default(),
        ));
        tracing::info!(%addr, admin = %admin_addr, origin = %proxy.policy().origin.url, "cachalot is serving");
        Ok(Self {
            addr,
            admin_addr,
            shutdown,
            admin_shutdown,
            public_task,
            admin_task,
            proxy,
            _policy_watch: policy_watch,
        })
    }

    /// The public listener's address (the real port when the policy asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The running proxy (its policy, store and invalidation).
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Stops accepting, lets in-flight requests finish (bounded), and returns. The admin
    /// listener answers (`/readyz`: 503) until the public one has drained, then closes.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.public_task.await;
        let _ = self.admin_shutdown.send(true);
        let _ = self.admin_task.await;
    }
}

/// Measures Redis memory per route, one bounded cycle every `[redis]
/// memory_sample_interval` (read each time, so a reload changes it), until shutdown.
async fn sample_memory(proxy: Weak<Proxy>, mut stop: watch::Receiver<bool>) {
    loop {
        let Some(interval) = proxy
            .upgrade()
            .map(|p| p.policy().redis.memory_sample_interval)
        else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let Some(proxy) = proxy.upgrade() else { return };
        if proxy.store.is_healthy() {
            let policy = proxy.policy.load_full();
            proxy.stats().memory().cycle(&proxy.store, &policy).await;
        }
    }
}

/// Invalidation messages waiting to be applied; beyond this the listener drops (and logs)
/// rather than stalling pub/sub.
const INVALIDATION_QUEUE: usize = 4096;

/// Applies other services' invalidation messages in order. A malformed message is logged
/// and skipped; it never stops the loop.
async fn apply_messages(proxy: Arc<Proxy>, mut inbox: mpsc::Receiver<Bytes>) {
    while let Some(message) = inbox.recv().await {
        let key = proxy.policy().invalidation.secret.clone();
        match Invalidation::from_message(&message, key.as_ref()) {
            Ok(invalidation) => {
                proxy.invalidate(&invalidation, Source::PubSub).await;
            }
            Err(Refused::Malformed(e)) => {
                metrics::counter!("cachalot_invalidation_messages_malformed_total").increment(1);
                tracing::warn!(error = %e, message = %String::from_utf8_lossy(&message), "ignoring a malformed invalidation message");
            }
            Err(refused) => {
                metrics::counter!("cachalot_invalidation_messages_rejected_total", "reason" => refused.label())
                    .increment(1);
                tracing::warn!(error = %refused, "ignoring an invalidation message that is not signed with the shared secret");
            }
        }
    }
}

//! Live policy: the proxy reloads its policy file on SIGHUP and when the file changes.
//!
//! A new policy is validated completely before it replaces the old one; one that does not
//! validate is rejected with the same `file:line:col` error as at start (logged and
//! counted), and the old policy keeps serving. The swap is one atomic pointer store: a
//! request holds the routes it started with until it ends, so a reload never fails one.
//!
//! Settings that belong to open connections (listen addresses, the origin, Redis, the
//! invalidation channel) need a restart; a reload that changes them applies the rest and
//! says which were kept.

use crate::policy::{Policy, PolicyError};
use crate::proxy::Proxy;
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{
    DebounceEventResult, Debouncer, new_debouncer, notify::RecommendedWatcher,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Editors save in bursts (write, rename, chmod): wait this long for quiet before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches the policy file while it lives.
pub struct Watch {
    _watcher: Option<Debouncer<RecommendedWatcher>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts reloading `path` into `proxy` on SIGHUP and on file changes. If the file cannot
/// be watched (an unusual filesystem), SIGHUP still works and the reason is logged.
pub fn watch(proxy: Arc<Proxy>, path: PathBuf) -> Watch {
    let (wake, mut woken) = mpsc::channel::<()>(1);
    let watcher = watch_file(&path, wake.clone())
        .map_err(|e| tracing::warn!(file = %path.display(), error = %e, "cannot watch the policy file; reload with SIGHUP"))
        .ok();
    // Registered before the task starts: a SIGHUP must never find the default action
    // (terminate) in place once reloading is on.
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
        .ok();
    let task = tokio::spawn(async move {
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hangups.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                woke = woken.recv() => if woke.is_none() { return },
                _ = hangup => {}
            }
            let _ = reload(&proxy, &path);
        }
    });
    drop(wake);
    Watch {
        _watcher: watcher,
        task,
    }
}

/// Watches the file's directory (editors replace files by renaming, which a watch on the
/// file itself would lose) and wakes the reloader for events on the file.
fn watch_file(
    path: &Path,
    wake: mpsc::Sender<()>,
) -> Result<Debouncer<RecommendedWatcher>, String> {
    let path = std::path::absolute(path).map_err(|e| e.to_string())?;
    let name = path
        .file_name()
        .map(|n| n.to_os_string())
        .ok_or("the policy path names no file")?;
    let dir = path
        .parent()
        .ok_or("the policy file has no directory")?
        .to_path_buf();
    let mut debouncer = new_debouncer(DEBOUNCE, move |events: DebounceEventResult| {
        if let Ok(events) = events
            && events
                .iter()
                .any(|e| e.path.file_name() == Some(name.as_os_str()))
        {
            let _ = wake.try_send(());
        }
    })
    .map_err(|e| e.to_string())?;
    debouncer
        .watcher()
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| e.to_string())?;
    Ok(debouncer)
}

/// Loads, validates and swaps in the policy at `path`. On error the old policy stays.
pub fn reload(proxy: &Proxy, path: &Path) -> Result<(), PolicyError> {
    let loaded = Policy::load(path).and_then(|mut policy| policy.apply_env().map(|()| policy));
    let mut policy = match loaded {
        Ok(policy) => policy,
        Err(e) => {
            metrics::counter!("cachalot_policy_reloads_total", "outcome" => "rejected")
                .increment(1);
            tracing::error!(error = %e, "policy reload rejected; the previous policy keeps serving");
            return Err(e);
        }
    };
    let current = proxy.policy();
    let kept = keep_restart_settings(&current, &mut policy);
    if !kept.is_empty() {
        tracing::warn!(settings = ?kept, "these settings change only on restart; kept their running values");
    }
    for warning in &policy.warnings {
        tracing::warn!("{warning}");
    }
    let routes = policy.routes.len();
    proxy.replace_policy(policy);
    metrics::counter!("cachalot_policy_reloads_total", "outcome" => "applied").increment(1);
    tracing::info!(file = %path.display(), routes, "policy reloaded");
    Ok(())
}

/// Copies the running values of restart-only settings into `next`; names those that differed.
fn keep_restart_settings(running: &Policy, next: &mut Policy) -> Vec<&'static str> {
    let mut kept = Vec::new();
    if running.listen.addr != next.listen.addr {
        kept.push("listen.addr");
    }
    if running.listen.admin != next.listen.admin {
        kept.push("listen.admin");
    }
    next.listen = running.listen.clone();
    if running.origin.url != next.origin.url || running.origin.timeout != next.origin.timeout {
        kept.push("origin");
    }
    next.origin = running.origin.clone();
    if running.redis.url != next.redis.url
        || running.redis.prefix != next.redis.prefix
        || running.redis.timeout != next.redis.timeout
        || running.redis.password != next.redis.password
        || running.redis.tls != next.redis.tls
    {
        kept.push("redis");
    }
    next.redis = running.redis.clone();
    if running.invalidation.channel != next.invalidation.channel {
        kept.push("invalidation.channel");
    }
    next.invalidation.channel = running.invalidation.channel.clone();
    // The body limit is read per request; the rest belongs to the listener.
    if running.limits.listener_differs(&next.limits) {
        kept.push("limits (all but max_body)");
    }
    next.limits = crate::policy::Limits {
        max_body: next.limits.max_body,
        ..running.limits.clone()
    };
    kept
}

//! Live policy: the proxy reloads its policy file on SIGHUP and when its content changes.
//!
//! A new policy is validated completely before it replaces the old one; one that does not
//! validate is rejected with the same `file:line:col` error as at start (logged and
//! counted), and the old policy keeps serving. The swap is one atomic pointer store: a
//! request holds the routes it started with until it ends, so a reload never fails one.
//!
//! What counts as a change is the file's *content*: the watcher wakes on events that can
//! change it (never on opens and reads, which include its own), waits for the burst to go
//! quiet, and reloads only if the bytes differ from those last seen. A `cat`, a `touch`, or
//! a `cp` of the same text reloads nothing; a broken file is reported once, not on every
//! event. The file may be a chain of symbolic links, as in a Kubernetes ConfigMap volume
//! (`cachalot.toml -> ..data/cachalot.toml`, with `..data` swapped atomically to a new
//! directory): every hop's directory is watched, and re-resolved after each change.
//!
//! Settings that belong to open connections (listen addresses, the origin's URL and CA,
//! Redis, the invalidation channel) need a restart; a reload that changes them applies the rest and
//! says which were kept.

use crate::policy::{Policy, PolicyError};
use crate::request::proxy::Proxy;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Editors save in bursts (write, rename, chmod): wait this long for quiet before looking.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Symbolic links followed at most when finding the directories to watch (as the kernel's
/// own limit, loops end instead of spinning).
const MAX_HOPS: usize = 40;

/// Watches the policy file while it lives.
pub struct Watch {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts reloading `path` into `proxy` on SIGHUP and on content changes. If the file
/// cannot be watched (an unusual filesystem), SIGHUP still works and the reason is logged.
pub fn watch(proxy: Arc<Proxy>, path: PathBuf) -> Watch {
    let path = std::path::absolute(&path).unwrap_or(path);
    let (wake, mut woken) = mpsc::channel::<()>(1);
    let mut files = Files::new(&path, wake)
        .map_err(|e| tracing::warn!(file = %path.display(), error = %e, "cannot watch the policy file; reload with SIGHUP"))
        .ok();
    // The content the running policy came from: only a change from it reloads. The file
    // is looked at once now that it is watched: a change made since it was loaded (before
    // any watch could see it) is applied at once, and every later one makes an event.
    let mut seen = Seen::Content(proxy.policy().source_digest);
    let mut pending = true;
    // Registered before the task starts: a SIGHUP must never find the default action
    // (terminate) in place once reloading is on.
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
        .ok();
    let task = tokio::spawn(async move {
        loop {
            let forced = if std::mem::take(&mut pending) {
                false
            } else {
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
                    woke = woken.recv() => {
                        if woke.is_none() || !settle(&mut woken).await {
                            return;
                        }
                        false
                    }
                    _ = hangup => true,
                }
            };
            let (now, source) = Seen::read(&path);
            // SIGHUP is an explicit request: it reloads even the same content.
            if forced || now != seen {
                let _ = reload_from(&proxy, &path, source);
                seen = now;
            }
            // A swapped symlink points the chain into new directories.
            if let Some(files) = files.as_mut() {
                files.follow(&path);
            }
        }
    });
    Watch { task }
}

/// Waits until no event has come for [`DEBOUNCE`]. False if the watcher is gone.
async fn settle(woken: &mut mpsc::Receiver<()>) -> bool {
    loop {
        match tokio::time::timeout(DEBOUNCE, woken.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) => return false,
            Err(_quiet) => return true,
        }
    }
}

/// What the policy file held when last looked at: its content's digest, or why it could
/// not be read (so an unreadable file is reported once, not on every event).
#[derive(PartialEq)]
enum Seen {
    Content([u8; 32]),
    Unreadable(String),
}

impl Seen {
    /// The file's state, and its text (or why there is none).
    fn read(path: &Path) -> (Self, Result<String, String>) {
        let why = match std::fs::read(path).map(String::from_utf8) {
            Ok(Ok(text)) => return (Seen::Content(Sha256::digest(&text).into()), Ok(text)),
            Ok(Err(_)) => "the policy file is not UTF-8 text".to_string(),
            Err(e) => format!("cannot read the policy file: {e}"),
        };
        (Seen::Unreadable(why.clone()), Err(why))
    }
}

/// The OS watch over every directory on the policy file's symlink chain.
struct Files {
    watcher: RecommendedWatcher,
    /// Each watched directory as named on the chain, and what it resolved to when
    /// watched: a watch follows the directory it was given, not later swaps of the name.
    dirs: Vec<(PathBuf, Option<PathBuf>)>,
    /// The chain's paths, shared with the event handler (which runs on notify's thread).
    chain: Arc<Mutex<Vec<PathBuf>>>,
}

impl Files {
    fn new(path: &Path, wake: mpsc::Sender<()>) -> Result<Self, String> {
        let chain: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
        let shared = Arc::clone(&chain);
        let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            let Ok(event) = event else { return };
            if !can_change_content(&event.kind) {
                return;
            }
            let chain = shared.lock().unwrap_or_else(|e| e.into_inner());
            // An event on a hop, or on a directory a hop goes through (`..data` renamed).
            if event
                .paths
                .iter()
                .any(|p| chain.iter().any(|hop| hop.starts_with(p)))
            {
                let _ = wake.try_send(());
            }
        })
        .map_err(|e| e.to_string())?;
        let mut files = Files {
            watcher,
            dirs: Vec::new(),
            chain,
        };
        files.follow(path);
        if files.dirs.is_empty() {
            return Err("the policy file's directory cannot be watched".into());
        }
        Ok(files)
    }

    /// Resolves the chain again and moves the watches to its directories.
    fn follow(&mut self, path: &Path) {
        let chain = symlink_chain(path);
        let mut dirs: Vec<PathBuf> = Vec::new();
        for dir in chain.iter().filter_map(|hop| hop.parent()) {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
        *self.chain.lock().unwrap_or_else(|e| e.into_inner()) = chain;
        let dirs: Vec<_> = dirs
            .into_iter()
            .map(|dir| {
                let real = std::fs::canonicalize(&dir).ok();
                (dir, real)
            })
            .collect();
        if dirs == self.dirs {
            return;
        }
        for (dir, _) in self.dirs.drain(..) {
            // A deleted directory (the old ConfigMap data) has already lost its watch.
            let _ = self.watcher.unwatch(&dir);
        }
        for (dir, real) in dirs {
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => self.dirs.push((dir, real)),
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot watch"),
            }
        }
    }
}

/// Opens and reads (including the reloader's own) are not changes; everything else may be.
fn can_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The paths from `path` through each symbolic link it is, to the file read in the end.
/// Kept lexical (not canonical): `dir/..data/cachalot.toml` is how a ConfigMap swap shows,
/// as an event on `dir/..data`.
fn symlink_chain(path: &Path) -> Vec<PathBuf> {
    let mut chain = vec![path.to_path_buf()];
    let mut here = path.to_path_buf();
    while chain.len() <= MAX_HOPS {
        let Ok(target) = std::fs::read_link(&here) else {
            break;
        };
        here = match here.parent() {
            Some(dir) => dir.join(target),
            None => target,
        };
        chain.push(here.clone());
    }
    chain
}

/// Loads, validates and swaps in the policy at `path`. On error the old policy stays.
pub fn reload(proxy: &Proxy, path: &Path) -> Result<(), PolicyError> {
    reload_from(proxy, path, Seen::read(path).1)
}

/// [`reload`] of text already read from `path` (or the reason it could not be).
fn reload_from(
    proxy: &Proxy,
    path: &Path,
    source: Result<String, String>,
) -> Result<(), PolicyError> {
    let file = path.display().to_string();
    let loaded = source
        .map_err(|why| PolicyError {
            file: file.clone(),
            position: None,
            field: String::new(),
            message: why,
        })
        .and_then(|text| Policy::parse(&text, &file))
        .and_then(|mut policy| policy.apply_env().map(|()| policy));
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
    // The timeout is read per request; the URL and CA belong to the origin's client.
    if running.origin.url != next.origin.url
        || running.origin.tls_ca_file != next.origin.tls_ca_file
    {
        kept.push("origin (all but timeout)");
    }
    next.origin = crate::policy::OriginSettings {
        timeout: next.origin.timeout,
        ..running.origin.clone()
    };
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

//! The command line: `cachalot check`, `run`, `health`, `explain`, `purge`, `init`,
//! `report` and `schema`.

use crate::app::explain::{Probe, explain, explain_live};
use crate::app::server::Server;
use crate::policy::{Policy, redact};
use crate::store::message::Invalidation;
use crate::store::{Applied, Store};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A transparent, Redis-backed HTTP caching reverse proxy driven by a TOML policy.
#[derive(Debug, Parser)]
#[command(name = "cachalot", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a policy file and print its route table (exit 1 if it is invalid).
    Check {
        /// The policy file.
        #[arg(short, long, env = "CACHALOT_CONFIG")]
        config: PathBuf,
        /// Also connect to Redis (URL, password, TLS as `run` would) and send PING; exit 1
        /// with the reason if that fails.
        #[arg(long)]
        connect: bool,
        /// Also compare the routes with this output of `flask routes` (`-`: standard input)
        /// and warn about each route that matches no Flask rule; exit 2 if any does not.
        #[arg(long, value_name = "FILE")]
        flask_routes: Option<PathBuf>,
    },
    /// Print a commented policy drafted from the app's routes (caches nothing until a ttl is
    /// filled in).
    Init {
        /// The output of `flask routes` (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        flask_routes: PathBuf,
    },
    /// Serve with a policy file.
    Run {
        /// The policy file.
        #[arg(short, long, env = "CACHALOT_CONFIG")]
        config: PathBuf,
        /// How log lines look on stderr: text for people, json (one object per line) for a
        /// log pipeline.
        #[arg(long, value_enum, default_value_t, env = "CACHALOT_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Ask the running proxy's admin listener whether it is ready (GET /readyz): exit 0 if
    /// it is, 1 with the reason if not. For a container HEALTHCHECK; needs no curl.
    Health {
        /// The policy file (for `listen.admin`; CACHALOT_ADMIN_LISTEN wins, as for run).
        #[arg(short, long, env = "CACHALOT_CONFIG")]
        config: PathBuf,
    },
    /// Show what the proxy does with one request: route, Redis key, TTL, tags, and what a
    /// write there invalidates. Sends nothing.
    Explain {
        /// The policy file.
        #[arg(short, long, env = "CACHALOT_CONFIG")]
        config: PathBuf,
        /// "METHOD /path?query", or "/path" for a GET.
        request: String,
        /// Also ask the running proxy's admin listener (`listen.admin`; CACHALOT_ADMIN_LISTEN
        /// wins, as for run) how often the route's hits were verified and what that found.
        #[arg(long)]
        live: bool,
    },
    /// Drop cached entries in Redis and announce it on the invalidation channel, so every
    /// running instance hears it.
    Purge {
        /// The policy file (for Redis and the channel; REDIS_URL wins, as for run).
        #[arg(short, long, env = "CACHALOT_CONFIG")]
        config: PathBuf,
        /// A key as the proxy stores it, without the prefix (credential:abc123); drops all
        /// its variants. Repeatable.
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
        /// Drops every entry carrying this tag. Repeatable.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Drops every key starting with this (user:42:).
        #[arg(long)]
        prefix: Option<String>,
        /// Why, for the instances' logs.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Ask a running proxy what to cache next: the GET and HEAD requests no cached route
    /// answered, ranked by the origin time they cost, and routes drafted for the top rows.
    Report {
        /// The admin listener, http://HOST:PORT; without it, [listen] admin of --config.
        #[arg(long, env = "CACHALOT_ADMIN_URL")]
        admin: Option<String>,
        /// The policy file (for `listen.admin`; CACHALOT_ADMIN_LISTEN wins, as for run).
        #[arg(short, long, env = "CACHALOT_CONFIG")]
        config: Option<PathBuf>,
        /// How many of the top rows get a drafted route.
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// Print the policy file's JSON Schema (for editors: a first line `#:schema PATH` in the
    /// policy lets Taplo / Even Better TOML complete and check it).
    Schema,
}

impl Cli {
    /// Runs the chosen command; the exit code tells scripts whether it worked.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Check {
                config,
                connect,
                flask_routes,
            } => check(&config, connect, flask_routes.as_deref()),
            Command::Init { flask_routes } => crate::app::flask_routes::init(&flask_routes),
            Command::Run { config, log_format } => run(&config, log_format),
            Command::Health { config } => health(&config),
            Command::Explain {
                config,
                request,
                live,
            } => explain_request(&config, &request, live),
            Command::Purge {
                config,
                keys,
                tags,
                prefix,
                reason,
            } => purge(
                &config,
                &Invalidation {
                    keys,
                    tags,
                    prefix,
                    reason,
                },
            ),
            Command::Report { admin, config, top } => report(admin, config, top),
            Command::Schema => {
                print!("{}", crate::policy::schema());
                ExitCode::SUCCESS
            }
        }
    }
}

fn load(config: &Path) -> Result<Policy, ExitCode> {
    let loaded = Policy::load(config).and_then(|mut policy| policy.apply_env().map(|()| policy));
    loaded.map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

fn check(config: &Path, connect: bool, flask_routes: Option<&Path>) -> ExitCode {
    let policy = match load(config) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    print!("{}", policy.describe());
    for warning in &policy.warnings {
        eprintln!("warning: {warning}");
    }
    println!("{}: ok ({} routes)", config.display(), policy.routes.len());
    let routes_code = flask_routes.map_or(ExitCode::SUCCESS, |routes| {
        crate::app::flask_routes::compare(&policy, routes)
    });
    if !connect {
        return routes_code;
    }
    let runtime = match started(tokio::runtime::Builder::new_current_thread().enable_all()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(crate::store::connect::check(&policy.redis)) {
        Ok(checked) => {
            println!("{}", checked.report);
            for warning in &checked.warnings {
                eprintln!("warning: {warning}");
            }
            routes_code
        }
        Err(reason) => {
            eprintln!("error: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Path, log_format: LogFormat) -> ExitCode {
    // Held until this returns, after the runtime has stopped: dropping it writes out the
    // lines still queued, the last access lines and the shutdown's included.
    let _log = init_logging(log_format);
    let policy = match load(config) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    for warning in &policy.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match started(tokio::runtime::Builder::new_multi_thread().enable_all()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let stop = stop_signal();
        // SIGHUP reloads the policy. Caught from before the listener opens (tokio keeps a
        // handler for good once installed), so one sent as soon as the proxy answers never
        // meets the default action, which would terminate the process.
        #[cfg(unix)]
        let _hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let server = match Server::start_watching(policy, config.to_path_buf()).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        stop.await;
        tracing::info!("shutting down: finishing in-flight requests");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn health(config: &Path) -> ExitCode {
    let policy = match load(config) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let runtime = match started(tokio::runtime::Builder::new_current_thread().enable_all()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(crate::app::health::check(policy.listen.admin)) {
        Ok(()) => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("error: not ready: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn report(admin: Option<String>, config: Option<PathBuf>, top: usize) -> ExitCode {
    let authority = match (admin, config) {
        (Some(admin), _) => crate::app::report::authority(&admin),
        (None, Some(config)) => match load(&config) {
            Ok(policy) => Ok(crate::app::health::reachable(policy.listen.admin).to_string()),
            Err(code) => return code,
        },
        (None, None) => Err(
            "name the proxy's admin listener: --admin http://HOST:PORT, or --config with its policy file"
                .to_string(),
        ),
    };
    match authority {
        Ok(authority) => crate::app::report::report(&authority, top),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn explain_request(config: &Path, request: &str, live: bool) -> ExitCode {
    let probe = match Probe::parse(request) {
        Ok(probe) => probe,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let policy = match load(config) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    if !live {
        print!("{}", explain(&policy, &probe));
        return ExitCode::SUCCESS;
    }
    let status = match read_status(policy.listen.admin) {
        Ok(status) => status,
        Err(reason) => {
            print!("{}", explain(&policy, &probe));
            eprintln!("error: --live: {reason}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", explain_live(&policy, &probe, Some(&status)));
    ExitCode::SUCCESS
}

/// The running proxy's `/status.json`, from its admin listener.
fn read_status(admin: std::net::SocketAddr) -> Result<serde_json::Value, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let (status, body) = runtime.block_on(crate::app::health::admin_get(admin, "/status.json"))?;
    if status != http::StatusCode::OK {
        return Err(format!("{admin}/status.json answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{admin}/status.json is not JSON: {e}"))
}

/// Applies the invalidation in Redis itself (so it holds even with no instance running),
/// then publishes it: running instances log and count it, and apply tags and prefixes once
/// more after fills that were already running have finished.
fn purge(config: &Path, invalidation: &Invalidation) -> ExitCode {
    if let Err(e) = invalidation.validate() {
        eprintln!("error: nothing to purge: {e} (--key, --tag, --prefix)");
        return ExitCode::FAILURE;
    }
    let policy = match load(config) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let runtime = match started(tokio::runtime::Builder::new_current_thread().enable_all()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let redis = redact(&policy.redis.url);
    runtime.block_on(async {
        let store = match Store::connect(&policy.redis, None).await {
            Ok(store) => store,
            Err(e) => {
                eprintln!("error: redis {redis}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !store.is_healthy() {
            eprintln!("error: redis {redis} is unreachable; nothing was purged");
            return ExitCode::FAILURE;
        }
        store.set_generation_ttl(crate::policy::generation::generation_ttl(&policy));
        let dropped = match store.invalidate(invalidation).await {
            Applied::Dropped(n) => n,
            Applied::Queued => {
                eprintln!("error: redis {redis} stopped answering; the purge may be incomplete: run it again");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "invalidated {} (each with all its variants) in {redis} (prefix \"{}\")",
            count(dropped, "key"),
            policy.redis.prefix
        );
        let channel = &policy.invalidation.channel;
        let signing = policy.invalidation.secret.as_ref();
        match store.publish_invalidation(channel, invalidation, signing).await {
            Ok(heard) => {
                let heard = count(heard.max(0) as usize, "subscriber");
                println!("published on \"{channel}\": {heard} heard it");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: purged, but not published on \"{channel}\": {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// "1 key", "2 keys".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level next to `timestamp`,
    /// `level`, `target` and `message`, as log shippers expect them.
    Json,
}

/// Logs go to stderr in batches (`observe::log_output`); `RUST_LOG` chooses
/// the level (info by default, which includes the access log: one line per request, target
/// `cachalot::access`). The file watcher's own info lines (a watch removed with its deleted
/// directory, on every ConfigMap swap) are not news to an operator. The returned guard
/// writes out what is buffered when dropped.
fn init_logging(format: LogFormat) -> crate::observe::log_output::Flush {
    let (lines, flush) = crate::observe::log_output::stderr();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,notify=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(lines);
    let _ = match format {
        // Colours only for a person at a terminal, not in a file or the journal.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    flush
}

/// Builds the async runtime; a failure is reported and becomes the exit code.
fn started(builder: &mut tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Registers for SIGTERM (and Ctrl-C) at once, before the listeners open: a SIGTERM that
/// arrived before registration would kill the process instead of draining it. The returned
/// future resolves at the first of them.
fn stop_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        if let Some(term) = term.as_mut() {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = ctrl_c.await;
    }
}

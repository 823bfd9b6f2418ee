//! The command line: `cachalot check` and `cachalot run`.

use crate::policy::Policy;
use crate::server::Server;
use clap::{Parser, Subcommand};
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
    },
    /// Serve with a policy file.
    Run {
        /// The policy file.
        #[arg(short, long, env = "CACHALOT_CONFIG")]
        config: PathBuf,
    },
}

impl Cli {
    /// Runs the chosen command; the exit code tells scripts whether it worked.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Check { config } => check(&config),
            Command::Run { config } => run(&config),
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

fn check(config: &Path) -> ExitCode {
    let policy = match load(config) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    print!("{}", policy.describe());
    for warning in &policy.warnings {
        eprintln!("warning: {warning}");
    }
    println!("{}: ok ({} routes)", config.display(), policy.routes.len());
    ExitCode::SUCCESS
}

fn run(config: &Path) -> ExitCode {
    init_logging();
    let policy = match load(config) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    for warning in &policy.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut server = match Server::start(policy).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        server.watch_policy(config.to_path_buf());
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Logs go to stderr; `RUST_LOG` chooses the level (info by default; debug shows one line
/// per request).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

//! The real binary: `cachalot run` on a policy file of the test's own, on free ports, with
//! the environment that would change what it does cleared and its stderr on a pipe, for
//! tests about what the process itself does (its log, its signals).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::policy_text;
use super::redis::free_port;

/// Variables that would override the policy file or the log's format and size.
const CLEARED: [&str; 5] = [
    "REDIS_URL",
    "RUST_LOG",
    "CACHALOT_LOG_FORMAT",
    "CACHALOT_LOG_QUEUE_LINES",
    "CACHALOT_ADMIN_LISTEN",
];

/// A started `cachalot run`; the policy file lives as long as this does.
pub struct Spawned {
    pub child: Child,
    /// The proxy's listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    pub policy: tempfile::NamedTempFile,
}

/// Starts `cachalot run <args> --config <policy>` for `routes` in front of `origin`, caching
/// in `redis_url`, with `env` set after [`CLEARED`] is cleared. Returns at once: wait for
/// its listeners before sending.
pub fn spawn_run(
    origin: SocketAddr,
    redis_url: &str,
    routes: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Spawned {
    let (port, admin_port) = (free_port(), free_port());
    let text = policy_text(origin, redis_url, routes)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{port}"), 1)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{admin_port}"), 1);
    let mut policy = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    policy.write_all(text.as_bytes()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_cachalot"));
    command
        .arg("run")
        .args(args)
        .arg("--config")
        .arg(policy.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for name in CLEARED {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    Spawned {
        child: command.spawn().expect("cachalot starts"),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
        policy,
    }
}

/// Reads `stderr` line by line on a thread of its own into the shared list, until it closes.
pub fn collect_lines(stderr: ChildStderr) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = std::thread::spawn({
        let lines = Arc::clone(&lines);
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        }
    });
    (lines, reader)
}

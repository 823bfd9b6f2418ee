//! A `redis-server` per test: free loopback port, no persistence, stopped on drop.
//! It never touches the machine's own Redis on 6379.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra command-line settings (`--requirepass`, `--cluster-enabled yes`, ...).
    args: Vec<String>,
    /// A config file given first on the command line (a sentinel needs one it can rewrite).
    config: Option<std::path::PathBuf>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra settings, e.g. `["--requirepass", "s3cret"]`.
    pub fn start_with(args: &[&str]) -> Self {
        Self::launch(args, None)
    }

    /// A sentinel watching the primary at `primary` as service `name`, declaring it down
    /// after 1 s without an answer.
    pub fn start_sentinel(primary: SocketAddr, name: &str) -> Self {
        let config = format!(
            "sentinel monitor {name} {} {} 1\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n",
            primary.ip(),
            primary.port()
        );
        Self::launch(&["--sentinel"], Some(config))
    }

    fn launch(args: &[&str], config: Option<String>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = config.map(|text| {
            let path = dir.path().join("redis.conf");
            std::fs::write(&path, text).expect("config file written");
            path
        });
        let mut server = Self {
            port: 0,
            dir,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            config,
        };
        // Another process may take the free port before redis-server binds it: try another.
        for _ in 0..5 {
            server.port = free_port();
            if server.try_spawn() {
                return server;
            }
            server.kill();
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server on port {} did not start",
            self.port
        );
    }

    /// Starts redis-server on `self.port`; false if it exits or does not answer in time.
    fn try_spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        if let Some(config) = &self.config {
            command.arg(config);
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is on PATH (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // A server with a password answers NOAUTH: it is up all the same.
            if self
                .command(&["PING"])
                .is_ok_and(|r| r.contains("PONG") || r.contains("NOAUTH"))
            {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|child| child.try_wait().is_ok_and(|status| status.is_some()));
            if exited {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process is running (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the process: a Redis that hangs.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Sends one command over a fresh connection and returns the raw RESP reply.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(self.addr())?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 65536];
        // Read until the reply is complete enough for tests: one read plus any follow-ups
        // that arrive quickly.
        loop {
            let n = stream.read(&mut buf)?;
            reply.extend_from_slice(&buf[..n]);
            if n == 0 || complete(&reply) {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// How many times Redis has run `command` (from `INFO commandstats`).
    pub fn command_calls(&self, command: &str) -> u64 {
        let info = self.command(&["INFO", "commandstats"]).unwrap();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |rest| {
                rest.split(',')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("calls=N")
            })
    }

    /// The stored entries (`cachalot:*` without the proxy's own locks, generation counters,
    /// tag sets and variant counts, which are not stored responses).
    pub fn entries(&self) -> Vec<String> {
        self.keys("cachalot:*")
            .into_iter()
            .filter(|key| {
                ![
                    "cachalot:lock:",
                    "cachalot:gen:",
                    "cachalot:tag:",
                    "cachalot:variants:",
                    "cachalot:purged:",
                ]
                .iter()
                .any(|ns| key.starts_with(ns))
            })
            .collect()
    }

    /// Every key matching `pattern` (via KEYS: fine on a test's own tiny Redis).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let reply = self.command(&["KEYS", pattern]).expect("KEYS");
        let mut keys: Vec<String> = reply
            .split("\r\n")
            .skip(1)
            .filter(|line| !line.starts_with('$') && !line.is_empty())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }
}

/// Whether a RESP reply has arrived completely: parses it, nested arrays included.
fn complete(reply: &[u8]) -> bool {
    resp_end(reply, 0).is_some()
}

/// Where the RESP value starting at `at` ends, if all of it has arrived.
fn resp_end(reply: &[u8], at: usize) -> Option<usize> {
    let line_len = reply.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let line = &reply[at + 1..at + line_len];
    let after_line = at + line_len + 2;
    let number = || -> Option<i64> { std::str::from_utf8(line).ok()?.parse().ok() };
    match reply[at] {
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Some(after_line);
            }
            let end = after_line + len as usize + 2;
            (reply.len() >= end).then_some(end)
        }
        b'*' => {
            let count = number()?;
            let mut end = after_line;
            for _ in 0..count.max(0) {
                end = resp_end(reply, end)?;
            }
            Some(end)
        }
        // Simple strings, errors, integers.
        _ => Some(after_line),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process ignores SIGKILL until continued on some kernels' views; resume first.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

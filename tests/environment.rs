//! The settings a container platform gives through the environment win over the file, on
//! the real binary: `CACHALOT_LISTEN`, `CACHALOT_ADMIN_LISTEN` and `CACHALOT_ORIGIN` (as
//! `REDIS_URL` does), `check` says which came from there, a bad value names its variable,
//! and `cachalot health` asks the address `run` listens on.

mod support;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::redis::free_port;
use support::{Origin, RedisServer, get, policy_text};

const CACHED: &str = "[[route]]\nname = \"item\"\nmatch = \"GET /items/{id}\"\nttl = \"1m\"\n";

/// `cachalot ARGS` with only `vars` from the environment among cachalot's own.
fn cachalot(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cachalot"));
    command.args(args);
    for name in [
        "CACHALOT_CONFIG",
        "CACHALOT_LISTEN",
        "CACHALOT_ADMIN_LISTEN",
        "CACHALOT_ORIGIN",
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PASSWORD",
        "REDIS_ACCESS_KEY",
    ] {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    command
}

fn output(args: &[&str], vars: &[(&str, &str)]) -> Output {
    cachalot(args, vars).output().expect("cachalot runs")
}

/// A policy whose own addresses lead nowhere: only the environment can make it work.
fn file_pointing_nowhere(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("cachalot.toml");
    let text = policy_text(
        "127.0.0.1:9".parse().unwrap(),
        "redis://127.0.0.1:9",
        CACHED,
    )
    .replacen("127.0.0.1:0", "127.0.0.1:1", 1)
    .replacen("127.0.0.1:0", "127.0.0.1:2", 1);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn check_shows_the_environments_addresses_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_pointing_nowhere(&dir);
    let out = output(
        &["check", "--config", &config],
        &[
            ("CACHALOT_LISTEN", "0.0.0.0:8080"),
            ("CACHALOT_ADMIN_LISTEN", "0.0.0.0:9901"),
            ("CACHALOT_ORIGIN", "http://api:5000"),
            ("REDIS_URL", "redis://redis:6379"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stdout.lines().next().unwrap();
    assert_eq!(
        first,
        "listen 0.0.0.0:8080  admin 0.0.0.0:9901  origin http://api:5000/  redis redis://redis:6379 (prefix \"cachalot\")"
    );
    assert!(
        stdout.contains(
            "from the environment (wins over the file): CACHALOT_LISTEN, CACHALOT_ADMIN_LISTEN, CACHALOT_ORIGIN, REDIS_URL"
        ),
        "{stdout}"
    );

    // Without them, the file's values and no such line.
    let out = output(&["check", "--config", &config], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("listen 127.0.0.1:1  admin 127.0.0.1:2  origin http://127.0.0.1:9/"),
        "{stdout}"
    );
    assert!(!stdout.contains("from the environment"), "{stdout}");
}

#[test]
fn a_bad_value_names_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_pointing_nowhere(&dir);
    for (name, value, says) in [
        (
            "CACHALOT_LISTEN",
            "localhost:8080",
            "is not an address; expected IP:PORT",
        ),
        (
            "CACHALOT_ADMIN_LISTEN",
            "9901",
            "is not an address; expected IP:PORT",
        ),
        ("CACHALOT_ORIGIN", "ftp://api:5000", "only http://"),
        (
            "CACHALOT_ORIGIN",
            "http://api:5000/v1",
            "give only scheme, host and port",
        ),
        (
            "CACHALOT_ADMIN_LISTEN",
            "127.0.0.1:1",
            "must not share the proxy's address",
        ),
    ] {
        let out = output(&["check", "--config", &config], &[(name, value)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}={value} was accepted");
        assert!(
            stderr.contains(&format!("environment: {name}")) && stderr.contains(says),
            "{name}={value}: {stderr}"
        );
    }
}

/// A `cachalot run` killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn run_listens_and_proxies_where_the_environment_says_and_health_finds_it() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let config = file_pointing_nowhere(&dir);
    let (port, admin_port) = (free_port(), free_port());
    let vars = [
        ("CACHALOT_LISTEN", format!("0.0.0.0:{port}")),
        ("CACHALOT_ADMIN_LISTEN", format!("0.0.0.0:{admin_port}")),
        ("CACHALOT_ORIGIN", format!("http://{}", origin.addr())),
        ("REDIS_URL", redis.url()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Nothing listens yet: health says so and fails.
    let out = output(&["health", "--config", &config], &vars);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("cannot connect to 127.0.0.1:{admin_port}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let _proxy = Running(
        cachalot(&["run", "--config", &config], &vars)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "cachalot did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = get(addr, "/items/1", &[]).await;
    assert_eq!(got.status, 200);
    assert!(
        got.stored(),
        "cached in the environment's Redis: {}",
        got.cache_status()
    );
    assert_eq!(origin.count(), 1, "the environment's origin answered");

    let out = output(&["health", "--config", &config], &vars);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
}

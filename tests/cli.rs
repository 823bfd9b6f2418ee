//! The command line as users meet it: `cachalot check` validates and prints the route table,
//! a bad policy names file, line and field and exits non-zero, and `cachalot run` serves
//! and exits cleanly on SIGTERM.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{Origin, RedisServer, get, policy_text};

fn cachalot(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cachalot"));
    command
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("CACHALOT_CONFIG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("cachalot runs")
}

fn policy_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write policy");
    file
}

#[test]
fn check_accepts_the_example_policy_and_prints_its_routes() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cachalot.toml");
    let out = cachalot(&["check", "--config", example], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("GET /api/credentials/{id}"), "{stdout}");
    assert!(stdout.contains("credential:{id}"), "{stdout}");
    assert!(
        stdout.contains("pass"),
        "the auth route is listed as pass: {stdout}"
    );
    assert!(stdout.contains("ok ("), "{stdout}");
}

#[test]
fn a_bad_policy_names_file_line_and_field() {
    let file = policy_file(
        "[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[[route]]\nmatch = \"GET /a\"\nttl = \"ten minutes\"\n",
    );
    let path = file.path().to_str().unwrap();
    for command in ["check", "run"] {
        let out = cachalot(&[command, "--config", path], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("{path}:6:7: route[0].ttl:")),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("expected e.g."), "{command}: {stderr}");
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = cachalot(&["check", "--config", "/nonexistent/cachalot.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cachalot.toml: cannot read")
    );
}

#[test]
fn check_warns_when_every_route_shares_one_ttl_and_shows_redis_url_from_env() {
    let mut text = String::from("[origin]\nurl = \"http://127.0.0.1:5000\"\n");
    for path in ["/a", "/b", "/c"] {
        text.push_str(&format!(
            "[[route]]\nmatch = \"GET {path}\"\nttl = \"5m\"\n"
        ));
    }
    let file = policy_file(&text);
    let out = cachalot(
        &["check", "--config", file.path().to_str().unwrap()],
        &[("REDIS_URL", "redis://user:hunter2@10.0.0.7:6380")],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: all 3 cached routes use ttl"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("redis://user:***@10.0.0.7:6380"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hunter2"),
        "the password is never printed: {stdout}"
    );
}

#[test]
fn a_bad_redis_url_in_the_environment_is_rejected() {
    let file = policy_file("[origin]\nurl = \"http://127.0.0.1:5000\"\n");
    let out = cachalot(
        &["check", "--config", file.path().to_str().unwrap()],
        &[("REDIS_URL", "http://nope")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDIS_URL"));
}

#[tokio::test]
async fn run_serves_and_exits_zero_on_sigterm() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let port = support::redis::free_port();
    let admin = support::redis::free_port();
    let text = policy_text(
        origin.addr(),
        "redis://127.0.0.1:1",
        "[[route]]\nmatch = \"GET /items/{id}\"\nttl = \"1m\"\n",
    )
    .replace(
        "127.0.0.1:0\"\nadmin",
        &format!("127.0.0.1:{port}\"\nadmin"),
    )
    .replace(
        "admin = \"127.0.0.1:0\"",
        &format!("admin = \"127.0.0.1:{admin}\""),
    );
    let file = policy_file(&text);
    // REDIS_URL wins over the (unreachable) URL in the file.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["run", "--config", file.path().to_str().unwrap()])
        .env("REDIS_URL", redis.url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cachalot starts");

    let proxy: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(proxy).await.is_err() {
        assert!(Instant::now() < deadline, "proxy did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = get(proxy, "/items/1", &[]).await;
    let second = get(proxy, "/items/1", &[]).await;
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    assert!(
        second.cache_status().contains("hit"),
        "{}",
        second.cache_status()
    );
    // The fill answers before it releases its lock, so the lock key may still be there.
    let mut entries = redis.keys("cachalot:*");
    entries.retain(|key| !key.starts_with("cachalot:lock:"));
    assert_eq!(entries, ["cachalot:{/items/1}"]);

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cachalot did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! A policy you can edit live: a good edit takes effect without a restart and without
//! failing a request; a broken edit is rejected (logged, counted) and the old policy keeps
//! serving; SIGHUP reloads and never stops the process.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::wait::eventually;
use support::{Origin, RedisServer, get, policy_text};

const CACHED: &str = "[[route]]\nname = \"item\"\nmatch = \"GET /items/{id}\"\nttl = \"1m\"\n";
const PASSED: &str = "[[route]]\nname = \"item\"\nmatch = \"GET /items/{id}\"\ncache = false\n";

fn write(path: &Path, text: &str) {
    let mut file = std::fs::File::create(path).expect("create policy");
    file.write_all(text.as_bytes()).expect("write policy");
    file.sync_all().expect("sync policy");
}

/// How long a reload or a listener may take to show.
const WAIT: Duration = Duration::from_secs(5);

fn reloads(outcome: &str) -> u64 {
    let needle = format!("cachalot_policy_reloads_total{{outcome=\"{outcome}\"}} ");
    cachalot::observe::metrics::render()
        .lines()
        .find_map(|line| {
            line.strip_prefix(&needle)
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn edits_apply_live_and_broken_edits_are_rejected() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cachalot.toml");
    let good = policy_text(origin.addr(), &redis.url(), CACHED);
    write(&path, &good);
    let policy = cachalot::Policy::load(&path).unwrap();
    let server = cachalot::Server::start_watching(policy, path.clone())
        .await
        .unwrap();
    let proxy = server.addr();

    // Clients keep asking throughout the edits; not one request may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let got = get(proxy, &format!("/items/{c}-{}", i % 7), &[]).await;
                    assert_eq!(got.status, 200, "a request failed during a reload");
                    served.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();

    assert!(
        get(proxy, "/items/1", &[])
            .await
            .cache_status()
            .contains("stored")
    );

    // A broken edit: rejected, counted, the old policy keeps caching.
    let rejected_before = reloads("rejected");
    write(&path, &good.replace("ttl = \"1m\"", "ttl = \"one minute\""));
    eventually("the broken policy to be rejected", WAIT, async || {
        reloads("rejected") > rejected_before
    })
    .await;
    let hit = get(proxy, "/items/1", &[]).await;
    assert!(
        hit.cache_status().contains("hit"),
        "old policy still serves: {}",
        hit.cache_status()
    );

    // A good edit takes effect.
    write(&path, &policy_text(origin.addr(), &redis.url(), PASSED));
    eventually("the new policy to pass the route", WAIT, async || {
        get(proxy, "/items/1", &[])
            .await
            .cache_status()
            .contains("route-pass")
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("no request failed");
    }
    assert!(
        served.load(Ordering::Relaxed) > 10,
        "the clients ran during the edits"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn restart_only_settings_keep_their_running_values() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cachalot.toml");
    let good = policy_text(origin.addr(), &redis.url(), CACHED);
    write(&path, &good);
    let server = cachalot::Server::start(cachalot::Policy::load(&path).unwrap())
        .await
        .unwrap();

    // Point the origin elsewhere and pass the route: the route change applies, the origin stays.
    write(
        &path,
        &policy_text("127.0.0.1:9".parse().unwrap(), &redis.url(), PASSED),
    );
    cachalot::app::reload::reload(server.proxy(), &path).expect("valid policy");
    let got = get(server.addr(), "/items/5", &[]).await;
    assert_eq!(got.status, 200, "still the running origin");
    assert!(
        got.cache_status().contains("route-pass"),
        "{}",
        got.cache_status()
    );
    assert_eq!(
        server.proxy().policy().origin.url,
        format!("http://{}", origin.addr())
            .parse::<http::Uri>()
            .unwrap()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_without_stopping_the_process() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let port = support::redis::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cachalot.toml");
    let with_port = |routes: &str| {
        policy_text(origin.addr(), &redis.url(), routes).replacen(
            "127.0.0.1:0",
            &format!("127.0.0.1:{port}"),
            1,
        )
    };
    write(&path, &with_port(CACHED));
    let mut child = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["run", "--config", path.to_str().unwrap()])
        .env_remove("REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cachalot starts");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually("the proxy to listen", WAIT, async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(
        get(addr, "/items/1", &[])
            .await
            .cache_status()
            .contains("stored")
    );

    write(&path, &with_port(PASSED));
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually("the reloaded policy to pass the route", WAIT, async || {
        get(addr, "/items/1", &[])
            .await
            .cache_status()
            .contains("route-pass")
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the process"
    );

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

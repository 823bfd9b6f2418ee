//! The policy watcher reloads on content changes and on nothing else, counted exactly on the
//! real binary (its `cachalot_policy_reloads_total` and its log lines): reads, a `touch` and
//! a `cp` of the same text reload nothing; an edit reloads once; a broken file is reported
//! once; a Kubernetes ConfigMap swap (`..data` renamed to a new directory) reloads once.
//!
//! A count that must stay put is read after a quiet window many debounce periods long; a
//! watcher that reloads on its own reads (the bug this guards against) loops about five
//! times a second, so the window sees it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::wait::eventually;
use support::{Origin, RedisServer, get, policy_text, redis::free_port};

const CACHED: &str = "[[route]]\nname = \"item\"\nmatch = \"GET /items/{id}\"\nttl = \"1m\"\n";
const PASSED: &str = "[[route]]\nname = \"item\"\nmatch = \"GET /items/{id}\"\ncache = false\n";

/// Long enough for several debounce periods (200 ms) to pass with nothing to do.
const QUIET: Duration = Duration::from_millis(1500);

/// `cachalot run` on a policy file, with its stderr kept in a file to count lines in.
struct Running {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(path: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_cachalot"))
            .args(["run", "--config", path.to_str().unwrap()])
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cachalot starts");
        let policy = cachalot::Policy::load(path).unwrap();
        let running = Running {
            child,
            addr: policy.listen.addr,
            admin: policy.listen.admin,
            log,
            _dir: dir,
        };
        eventually("the proxy to listen", WAIT, async || {
            tokio::net::TcpStream::connect(running.admin).await.is_ok()
                && tokio::net::TcpStream::connect(running.addr).await.is_ok()
        })
        .await;
        running
    }

    async fn reloads(&self, outcome: &str) -> u64 {
        let metrics = get(self.admin, "/metrics", &[]).await.text();
        let needle = format!("cachalot_policy_reloads_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&needle)?.trim().parse().ok())
            .unwrap_or(0)
    }

    fn log_lines(&self, containing: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(containing))
            .count()
    }

    /// Both counts, after a quiet window: (applied, rejected), each checked against the log.
    async fn counts_after_quiet(&self) -> (u64, u64) {
        tokio::time::sleep(QUIET).await;
        let (applied, rejected) = (
            self.reloads("applied").await,
            self.reloads("rejected").await,
        );
        assert_eq!(
            self.log_lines("policy reloaded") as u64,
            applied,
            "log vs metric"
        );
        assert_eq!(
            self.log_lines("policy reload rejected") as u64,
            rejected,
            "log vs metric"
        );
        (applied, rejected)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a reload or a listener may take to show.
const WAIT: Duration = Duration::from_secs(10);

/// A policy with fixed free ports, so the test knows where the child listens.
fn policy(origin: SocketAddr, redis: &RedisServer, routes: &str, ports: (u16, u16)) -> String {
    policy_text(origin, &redis.url(), routes)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{}", ports.0), 1)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{}", ports.1), 1)
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}

#[tokio::test]
async fn reads_touches_and_copies_of_the_same_text_reload_nothing_an_edit_reloads_once() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let ports = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cachalot.toml");
    let same = dir.path().join("same.toml");
    let text = policy(origin.addr(), &redis, CACHED, ports);
    std::fs::write(&path, &text).unwrap();
    std::fs::write(&same, &text).unwrap();
    let proxy = Running::start(&path).await;
    let p = path.to_str().unwrap();

    for _ in 0..20 {
        run("cat", &[p]);
    }
    run("touch", &[p]);
    run("cp", &[same.to_str().unwrap(), p]);
    std::fs::write(&path, &text).unwrap();
    assert_eq!(proxy.counts_after_quiet().await, (0, 0), "nothing changed");

    std::fs::write(&path, policy(origin.addr(), &redis, PASSED, ports)).unwrap();
    eventually("the edit to apply", WAIT, async || {
        get(proxy.addr, "/items/1", &[])
            .await
            .cache_status()
            .contains("route-pass")
    })
    .await;
    for _ in 0..10 {
        run("cat", &[p]);
    }
    assert_eq!(
        proxy.counts_after_quiet().await,
        (1, 0),
        "one edit, one reload"
    );

    std::fs::write(&path, text.replace("ttl = \"1m\"", "ttl = \"one minute\"")).unwrap();
    eventually("the broken edit to be rejected", WAIT, async || {
        proxy.reloads("rejected").await == 1
    })
    .await;
    for _ in 0..10 {
        run("cat", &[p]);
    }
    run("touch", &[p]);
    assert_eq!(
        proxy.counts_after_quiet().await,
        (1, 1),
        "a broken file is reported once"
    );
}

/// The layout the kubelet writes for a ConfigMap volume: each version in a directory of its
/// own, `..data` pointing at the current one, the file a link through `..data`.
struct ConfigMap {
    root: PathBuf,
    version: usize,
}

impl ConfigMap {
    fn new(root: &Path, text: &str) -> Self {
        let mut map = ConfigMap {
            root: root.to_path_buf(),
            version: 0,
        };
        map.publish(text);
        std::os::unix::fs::symlink("..data/cachalot.toml", root.join("cachalot.toml")).unwrap();
        map
    }

    /// A new version directory, then `..data` swapped to it by an atomic rename, then the
    /// old directory removed: as the kubelet's atomic writer does.
    fn publish(&mut self, text: &str) {
        self.version += 1;
        let name = format!("..2026_12_07_{}", self.version);
        std::fs::create_dir(self.root.join(&name)).unwrap();
        std::fs::write(self.root.join(&name).join("cachalot.toml"), text).unwrap();
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
        if self.version > 1 {
            let old = format!("..2026_12_07_{}", self.version - 1);
            std::fs::remove_dir_all(self.root.join(old)).unwrap();
        }
    }

    fn path(&self) -> PathBuf {
        self.root.join("cachalot.toml")
    }
}

#[tokio::test]
async fn a_configmap_swap_reloads_once_each_time() {
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let ports = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let mut map = ConfigMap::new(dir.path(), &policy(origin.addr(), &redis, CACHED, ports));
    let proxy = Running::start(&map.path()).await;
    let pass_status = async || {
        get(proxy.addr, "/items/1", &[])
            .await
            .cache_status()
            .to_string()
    };

    map.publish(&policy(origin.addr(), &redis, PASSED, ports));
    eventually("the swapped policy to apply", WAIT, async || {
        pass_status().await.contains("route-pass")
    })
    .await;
    assert_eq!(
        proxy.counts_after_quiet().await,
        (1, 0),
        "one swap, one reload"
    );

    // The watch follows the new directory: the next swap is seen too, and once.
    map.publish(&policy(origin.addr(), &redis, CACHED, ports));
    eventually("the second swap to apply", WAIT, async || {
        !pass_status().await.contains("route-pass")
    })
    .await;
    assert_eq!(
        proxy.counts_after_quiet().await,
        (2, 0),
        "two swaps, two reloads"
    );

    // A swap to the same content, as a ConfigMap resync does: nothing to reload.
    map.publish(&policy(origin.addr(), &redis, CACHED, ports));
    assert_eq!(proxy.counts_after_quiet().await, (2, 0), "same content");
}

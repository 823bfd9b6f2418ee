//! Real Redis topologies for tests: a Redis Cluster (`--cluster-enabled yes` nodes joined by
//! `redis-cli --cluster create`) and a Sentinel watching a primary and its replica. Short
//! timeouts (`cluster-node-timeout 1000`, `down-after-milliseconds 1000`) keep failovers
//! to a few seconds.

use super::redis::RedisServer;
use std::time::{Duration, Instant};

/// A cluster of `masters` primaries, each with `replicas` replicas, all on loopback.
pub struct Cluster {
    nodes: Vec<RedisServer>,
}

impl Cluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli is on PATH (apt-get install redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok(Duration::from_secs(20));
        if replicas > 0 {
            cluster.wait_for_replicas(masters * replicas, Duration::from_secs(20));
        }
        cluster
    }

    /// `redis-cluster://first?node=second&node=...`, the form fred reads.
    pub fn url(&self) -> String {
        let mut nodes = self.nodes.iter().map(|n| n.addr().to_string());
        let first = nodes.next().expect("a node");
        let rest: Vec<String> = nodes.map(|n| format!("node={n}")).collect();
        format!("redis-cluster://{first}?{}", rest.join("&"))
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// Indices of the running nodes that are primaries now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].is_running()
                    && self.nodes[i]
                        .command(&["ROLE"])
                        .is_ok_and(|r| r.starts_with("*3\r\n$6\r\nmaster"))
            })
            .collect()
    }

    /// The running primary that holds `key`'s slot.
    pub fn master_of(&self, key: &str) -> usize {
        let slot = self.nodes[self.masters()[0]]
            .command(&["CLUSTER", "KEYSLOT", key])
            .expect("CLUSTER KEYSLOT");
        let slot: u16 = slot.trim_start_matches(':').trim().parse().expect("a slot");
        self.masters()
            .into_iter()
            .find(|&i| self.owns(i, slot))
            .expect("a primary owns the slot")
    }

    fn owns(&self, node: usize, slot: u16) -> bool {
        let Ok(nodes) = self.nodes[node].command(&["CLUSTER", "NODES"]) else {
            return false;
        };
        nodes.lines().any(|line| {
            line.contains("myself") && line.contains("master") && {
                line.split_whitespace().skip(8).any(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
                })
            }
        })
    }

    /// Every key matching `pattern` on the primaries, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .masters()
            .into_iter()
            .flat_map(|i| self.nodes[i].keys(pattern))
            .collect();
        keys.sort();
        keys
    }

    /// Waits until every running node reports `cluster_state:ok`.
    pub fn wait_until_ok(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .is_ok_and(|r| r.contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_replicas(&self, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let synced = self
                .nodes
                .iter()
                .filter(|n| {
                    n.command(&["ROLE"])
                        .is_ok_and(|r| r.contains("slave") && r.contains("connected"))
                })
                .count();
            if synced >= count {
                return;
            }
            assert!(Instant::now() < deadline, "replicas did not sync");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A primary, one replica and one sentinel watching them as service `name`.
pub struct Sentinel {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinel: RedisServer,
    pub name: String,
}

impl Sentinel {
    pub fn start(name: &str) -> Self {
        let primary = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !replica
            .command(&["ROLE"])
            .is_ok_and(|r| r.contains("connected"))
        {
            assert!(Instant::now() < deadline, "the replica did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        let sentinel = RedisServer::start_sentinel(primary.addr(), name);
        let setup = Self {
            primary,
            replica,
            sentinel,
            name: name.to_string(),
        };
        // The sentinel learns of the replica from the primary's INFO (every 10 s at most;
        // usually at once). Failover needs it known.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !setup
            .sentinel
            .command(&["SENTINEL", "REPLICAS", name])
            .is_ok_and(|r| r.contains(&setup.replica.port().to_string()))
        {
            assert!(
                Instant::now() < deadline,
                "the sentinel did not see the replica"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        setup
    }

    /// `redis-sentinel://sentinel?sentinelServiceName=NAME`, the form fred reads.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://{}?sentinelServiceName={}",
            self.sentinel.addr(),
            self.name
        )
    }

    /// The port the sentinel names as primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let reply = self
            .sentinel
            .command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name])
            .ok()?;
        reply.split("\r\n").filter_map(|l| l.parse().ok()).last()
    }
}

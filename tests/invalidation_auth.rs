//! Who may invalidate: a Redis ACL that gives the proxy only what it needs and a publisher
//! only `PUBLISH` on the invalidation channel (the recipe in the README, run against a real
//! ACL-enabled redis-server), and signed messages (`[invalidation] secret_file`), published
//! by a real Python snippet as a Flask service would.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::{Origin, RedisServer, get, start_proxy_with};

const ITEMS: &str = r#"
[[route]]
name = "item"
match = "GET /items/{id}"
ttl = "10m"
"#;

/// The README's ACL recipe, verbatim in spirit: the proxy's user may use its own keys and
/// channels with the commands it sends; the publisher may only PUBLISH on the channel; an
/// admin (for the test to look) may do anything; anonymous clients may do nothing.
const ACL: &str = "\
user default off
user admin on >admin-pw ~* &* +@all
user cachalot on >cachalot-pw resetchannels ~cachalot:* &cachalot:* &cache:invalidate -@all +get +mget +set +del +incr +pexpire +pttl +zadd +zscore +zcard +zrangebyscore +zremrangebyscore +evalsha +eval +script|load +scan +publish +subscribe +unsubscribe +ping +info +hello +auth +client|setname +client|id +quit
user publisher on >publisher-pw resetchannels &cache:invalidate -@all +publish
";

/// `redis-cli` as `user`, one command; what it printed.
fn cli(redis: &RedisServer, user: Option<(&str, &str)>, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command.args(["-p", &redis.port().to_string(), "--no-auth-warning"]);
    if let Some((name, password)) = user {
        command.args(["--user", name, "--pass", password]);
    }
    let out = command.args(args).output().expect("redis-cli runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const ADMIN: Option<(&str, &str)> = Some(("admin", "admin-pw"));
const PUBLISHER: Option<(&str, &str)> = Some(("publisher", "publisher-pw"));

/// Waits for a condition the proxy reports (a subscriber, a counter), up to 10 s.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_acl_recipe_lets_the_proxy_work_and_the_publisher_only_publish() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("users.acl");
    std::fs::write(&acl, ACL).unwrap();
    let redis = RedisServer::start_with(&["--aclfile", acl.to_str().unwrap()]);
    let origin = Origin::echo().await;
    let url = format!("redis://cachalot:cachalot-pw@127.0.0.1:{}", redis.port());
    let proxy = start_proxy_with(origin.addr(), &url, ITEMS).await;

    // Hits and the collapse lock (every miss's leader takes it in Redis).
    assert!(get(proxy.addr(), "/items/1", &[]).await.stored());
    assert!(get(proxy.addr(), "/items/1", &[]).await.hit());
    assert_eq!(origin.count(), 1);

    // The invalidation subscription: the publisher's message drops the entry.
    until("the proxy subscribed", async || {
        cli(&redis, ADMIN, &["PUBSUB", "NUMSUB", "cache:invalidate"]).ends_with("1\n")
    })
    .await;
    let heard = cli(
        &redis,
        PUBLISHER,
        &["PUBLISH", "cache:invalidate", r#"{"keys":["item:1"]}"#],
    );
    assert_eq!(heard.trim(), "1");
    until("the invalidation applied", async || {
        cli(&redis, ADMIN, &["EXISTS", "cachalot:gen:{item:1}"]).trim() == "1"
    })
    .await;
    let refetched = get(proxy.addr(), "/items/1", &[]).await;
    assert!(refetched.stored(), "{}", refetched.cache_status());
    assert_eq!(origin.count(), 2);
    assert_eq!(
        get(proxy.admin_addr(), "/health/cache", &[]).await.status,
        200
    );

    // No command the proxy sent was refused.
    let denied = cli(&redis, ADMIN, &["ACL", "LOG"]);
    assert!(denied.trim().is_empty(), "ACL LOG: {denied}");

    // The publisher can publish on the channel and do nothing else.
    for refused in [
        &["GET", "cachalot:{item:1}"][..],
        &["DEL", "cachalot:{item:1}"],
        &["SET", "cachalot:{item:1}", "forged"],
        &["PUBLISH", "cachalot:fill", "stored item:1"],
        &["PUBLISH", "cachalot:dropped", "[]"],
        &["FLUSHALL"],
        &["KEYS", "*"],
    ] {
        let reply = cli(&redis, PUBLISHER, refused);
        assert!(reply.contains("NOPERM"), "{refused:?}: {reply}");
    }
    // And a client without credentials can do nothing at all.
    let anonymous = cli(
        &redis,
        None,
        &["PUBLISH", "cache:invalidate", r#"{"keys":["item:1"]}"#],
    );
    assert!(anonymous.contains("NOAUTH"), "{anonymous}");
    assert!(get(proxy.addr(), "/items/1", &[]).await.hit());
}

/// Publishes `message` on `channel` from Python: HMAC-SHA256 over the JSON with the secret
/// in `secret_file` (when given), sent as raw RESP over a socket, as a Flask service would
/// with redis-py's `publish`. Prints the number of subscribers that heard it.
fn python_publish(port: u16, channel: &str, json: &str, secret_file: Option<&str>) -> String {
    const SNIPPET: &str = r#"
import hashlib, hmac, socket, sys
port, channel, body, secret_file = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4]
if secret_file:
    secret = open(secret_file, "rb").read().rstrip(b"\r\n")
    body = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode() + b" " + body
args = [b"PUBLISH", channel.encode(), body]
command = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
with socket.create_connection(("127.0.0.1", port)) as s:
    s.sendall(command)
    print(s.recv(64).decode().strip())
"#;
    let out = Command::new("python3")
        .args(["-c", SNIPPET, &port.to_string(), channel, json])
        .arg(secret_file.unwrap_or(""))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A counter's value in the proxy's `/metrics` (0 when it has no sample yet).
async fn metric(proxy: &cachalot::Server, series: &str) -> u64 {
    get(proxy.admin_addr(), "/metrics", &[])
        .await
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn with_a_secret_only_signed_messages_invalidate() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("invalidation.secret");
    std::fs::write(&secret, "4f1c8a0e9b7d6c5a4f1c8a0e9b7d6c5a\n").unwrap();
    let wrong = dir.path().join("wrong.secret");
    std::fs::write(&wrong, "not the proxy's secret, but long\n").unwrap();
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let routes = format!(
        "{ITEMS}\n[invalidation]\nsecret_file = {:?}\n",
        secret.display().to_string()
    );
    let proxy = start_proxy_with(origin.addr(), &redis.url(), &routes).await;
    assert!(get(proxy.addr(), "/items/1", &[]).await.stored());
    until("the proxy subscribed", async || {
        redis
            .command(&["PUBSUB", "NUMSUB", "cache:invalidate"])
            .unwrap()
            .ends_with(":1\r\n")
    })
    .await;

    let drop_item = r#"{"keys":["item:1"],"reason":"revoked"}"#;
    let unsigned = r#"cachalot_invalidation_messages_rejected_total{reason="unsigned"}"#;
    let forged = r#"cachalot_invalidation_messages_rejected_total{reason="bad_signature"}"#;
    assert_eq!(
        python_publish(redis.port(), "cache:invalidate", drop_item, None),
        ":1"
    );
    until("the unsigned message counted", async || {
        metric(&proxy, unsigned).await == 1
    })
    .await;
    let wrong = wrong.display().to_string();
    assert_eq!(
        python_publish(redis.port(), "cache:invalidate", drop_item, Some(&wrong)),
        ":1"
    );
    until("the forged message counted", async || {
        metric(&proxy, forged).await == 1
    })
    .await;
    // Messages are applied in order: both were ignored, the entry is still served.
    assert!(get(proxy.addr(), "/items/1", &[]).await.hit());

    let secret = secret.display().to_string();
    assert_eq!(
        python_publish(redis.port(), "cache:invalidate", drop_item, Some(&secret)),
        ":1"
    );
    let applied = r#"cachalot_invalidations_total{source="pubsub",outcome="applied"}"#;
    until("the signed message applied", async || {
        metric(&proxy, applied).await == 1
    })
    .await;
    let refetched = get(proxy.addr(), "/items/1", &[]).await;
    assert!(refetched.stored(), "{}", refetched.cache_status());
    assert_eq!(origin.count(), 2);
    assert_eq!(metric(&proxy, unsigned).await, 1);
    assert_eq!(metric(&proxy, forged).await, 1);
}

#[tokio::test]
async fn cachalot_purge_signs_what_it_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("invalidation.secret");
    std::fs::write(&secret, "4f1c8a0e9b7d6c5a4f1c8a0e9b7d6c5a\n").unwrap();
    let redis = RedisServer::start();
    let origin = Origin::echo().await;
    let routes = format!(
        "{ITEMS}\n[invalidation]\nsecret_file = {:?}\n",
        secret.display().to_string()
    );
    let proxy = start_proxy_with(origin.addr(), &redis.url(), &routes).await;
    until("the proxy subscribed", async || {
        redis
            .command(&["PUBSUB", "NUMSUB", "cache:invalidate"])
            .unwrap()
            .ends_with(":1\r\n")
    })
    .await;

    let config = dir.path().join("cachalot.toml");
    std::fs::write(
        &config,
        support::policy_text(origin.addr(), &redis.url(), &routes),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cachalot"))
        .args(["purge", "--key", "item:1", "--config"])
        .arg(&config)
        .output()
        .expect("cachalot runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1 subscriber heard it"), "{stdout}");

    let applied = r#"cachalot_invalidations_total{source="pubsub",outcome="applied"}"#;
    until("the signed purge applied", async || {
        metric(&proxy, applied).await == 1
    })
    .await;
    let rejected = metric(
        &proxy,
        r#"cachalot_invalidation_messages_rejected_total{reason="unsigned"}"#,
    )
    .await
        + metric(
            &proxy,
            r#"cachalot_invalidation_messages_rejected_total{reason="bad_signature"}"#,
        )
        .await;
    assert_eq!(rejected, 0);
}

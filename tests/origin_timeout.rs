//! How long the origin may take is a per-route decision, and a reload changes it: a route's
//! `timeout` wins over `[origin] timeout` on fills and on forwarded requests alike, requests
//! that match no route keep the global one, and an edit of either applies from the next
//! request (one reload, no restart).

mod support;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Origin, RedisServer, Reply, get, policy_text, send};

/// Every origin answer takes this long: longer than the short timeouts, shorter than the
/// long ones.
const ORIGIN_DELAY: Duration = Duration::from_millis(900);

fn routes(quick: &str) -> String {
    format!(
        r#"
[[route]]
name = "quick"
match = "GET /quick/{{id}}"
ttl = "1m"
timeout = "{quick}"

[[route]]
name = "report"
match = "/report/{{id}}"
cache = false
timeout = "{quick}"

[[route]]
name = "patient"
match = "GET /patient/{{id}}"
ttl = "1m"
"#
    )
}

fn write(path: &Path, text: &str) {
    let mut file = std::fs::File::create(path).expect("create policy");
    file.write_all(text.as_bytes()).expect("write policy");
    file.sync_all().expect("sync policy");
}

fn metric(name_and_labels: &str) -> u64 {
    let needle = format!("{name_and_labels} ");
    cachalot::observe::metrics::render()
        .lines()
        .find_map(|line| line.strip_prefix(&needle)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_route_timeout_wins_and_a_reload_changes_both() {
    let redis = RedisServer::start();
    let origin = Origin::start(|_, _| Reply::ok("slow but fine").delay(ORIGIN_DELAY)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cachalot.toml");
    // `[origin] timeout = "2s"` in the harness's policy.
    let first = policy_text(origin.addr(), &redis.url(), &routes("300ms"));
    assert!(first.contains("timeout = \"2s\""));
    write(&path, &first);
    let policy = cachalot::Policy::load(&path).unwrap();
    let server = cachalot::Server::start_watching(policy, path.clone())
        .await
        .unwrap();
    let proxy = server.addr();

    // The route's 300 ms: a miss and a forwarded read and write all get 504.
    assert_eq!(get(proxy, "/quick/1", &[]).await.status, 504);
    assert_eq!(get(proxy, "/report/1", &[]).await.status, 504);
    let post = send(
        proxy,
        http::Method::POST,
        "/report/1",
        &[],
        bytes::Bytes::from_static(b"x"),
    )
    .await;
    assert_eq!(post.status, 504);
    assert_eq!(
        metric(r#"cachalot_origin_requests_total{route="quick",status="timeout"}"#),
        1
    );
    assert_eq!(
        metric(r#"cachalot_origin_requests_total{route="report",status="timeout"}"#),
        2
    );
    // The global 2 s: a cached route without its own, and a path no route names.
    let patient = get(proxy, "/patient/1", &[]).await;
    assert_eq!(patient.status, 200);
    assert_eq!(patient.text(), "slow but fine");
    assert_eq!(get(proxy, "/unrouted", &[]).await.status, 200);
    assert_eq!(origin.count(), 5, "every request reached the origin once");

    // One edit: the route waits 3 s, everything else 500 ms.
    let applied = metric(r#"cachalot_policy_reloads_total{outcome="applied"}"#);
    let second = policy_text(origin.addr(), &redis.url(), &routes("3s")).replacen(
        "timeout = \"2s\"",
        "timeout = \"500ms\"",
        1,
    );
    write(&path, &second);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(r#"cachalot_policy_reloads_total{outcome="applied"}"#) == applied {
        assert!(Instant::now() < deadline, "the edit was never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(proxy, "/quick/2", &[]).await.status, 200);
    assert_eq!(get(proxy, "/report/2", &[]).await.status, 200);
    assert_eq!(get(proxy, "/patient/2", &[]).await.status, 504);
    assert_eq!(get(proxy, "/unrouted", &[]).await.status, 504);
    assert_eq!(
        metric(r#"cachalot_policy_reloads_total{outcome="applied"}"#),
        applied + 1,
        "one edit, one reload"
    );
    server.shutdown().await;
}

#[test]
fn a_route_timeout_is_a_duration() {
    let text = |timeout: &str| {
        format!(
            "[origin]\nurl = \"http://127.0.0.1:5000\"\n\n[[route]]\nmatch = \"GET /a\"\nttl = \"1m\"\ntimeout = {timeout}\n"
        )
    };
    let zero = cachalot::Policy::parse(&text("\"0s\""), "t.toml").unwrap_err();
    assert_eq!(zero.field, "route[0].timeout", "{zero}");
    assert!(zero.to_string().contains("longer than zero"), "{zero}");
    let number = cachalot::Policy::parse(&text("5"), "t.toml").unwrap_err();
    assert!(number.to_string().contains("route[0].timeout"), "{number}");
    let policy = cachalot::Policy::parse(&text("\"250ms\""), "t.toml").unwrap();
    let route = policy.routes.iter().next().unwrap();
    assert_eq!(route.timeout, Some(Duration::from_millis(250)));
    assert_eq!(
        policy.origin_timeout(Some(route)),
        Duration::from_millis(250)
    );
    assert_eq!(policy.origin_timeout(None), Duration::from_secs(30));
}

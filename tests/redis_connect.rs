//! Connecting like production does: TLS (`rediss://`) against a real TLS-only redis-server
//! with a CA and certificates made for the test, client certificates, passwords from the
//! URL, an ACL user, `password_file`, `REDIS_PASSWORD` and the managed-Redis variables
//! (`REDIS_HOST`, `REDIS_PORT`, `REDIS_SSL`, `REDIS_ACCESS_KEY`); and the first errors a
//! user meets, as `cachalot check --connect` reports them.

mod support;

use std::net::TcpListener;
use std::process::Output;
use support::tls::{Certificates, TlsRedis};
use support::{Origin, RedisServer, check_connect, get, start_proxy_redis};

const ITEMS: &str = r#"
[[route]]
name = "item"
match = "GET /items/{id}"
ttl = "10m"
"#;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_connects(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    assert!(stdout(out).contains("PING answered in"), "{}", stdout(out));
}

/// Fails, and the message contains every one of `parts`.
#[track_caller]
fn assert_fails_saying(out: &Output, parts: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(out));
    let message = stderr(out);
    println!("{}", message.trim());
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

fn ca_file(certs: &Certificates, name: &str) -> String {
    format!("tls_ca_file = {:?}\n", certs.path(name))
}

#[tokio::test]
async fn the_proxy_caches_through_tls_with_the_policy_s_ca() {
    let certs = Certificates::generate();
    let redis = TlsRedis::start(&certs, "no", &[]);
    let origin = Origin::echo().await;
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let proxy = start_proxy_redis(origin.addr(), &url, &ca_file(&certs, "ca.crt"), ITEMS).await;
    let first = get(proxy.addr(), "/items/1", &[]).await;
    assert!(first.stored(), "{}", first.cache_status());
    let second = get(proxy.addr(), "/items/1", &[]).await;
    assert!(second.hit(), "{}", second.cache_status());
    assert_eq!(origin.count(), 1);
    proxy.shutdown().await;

    let out = check_connect(Some(&url), &ca_file(&certs, "ca.crt"), &[]);
    assert_connects(&out);
    assert!(stdout(&out).contains("TLS"), "{}", stdout(&out));
}

#[test]
fn a_server_that_requires_client_certificates_gets_one() {
    let certs = Certificates::generate();
    let redis = TlsRedis::start(&certs, "yes", &[]);
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let without = check_connect(Some(&url), &ca_file(&certs, "ca.crt"), &[]);
    assert_fails_saying(&without, &["TLS handshake with 127.0.0.1", "tls_cert_file"]);
    let client = format!(
        "{}tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        ca_file(&certs, "ca.crt"),
        certs.path("client.crt"),
        certs.path("client.key")
    );
    assert_connects(&check_connect(Some(&url), &client, &[]));
}

#[test]
fn an_untrusted_server_certificate_names_the_host_and_tls_ca_file() {
    let certs = Certificates::generate();
    let redis = TlsRedis::start(&certs, "no", &[]);
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let out = check_connect(Some(&url), &ca_file(&certs, "other-ca.crt"), &[]);
    assert_fails_saying(
        &out,
        &[
            &format!("TLS handshake with 127.0.0.1:{}", redis.port()),
            "not trusted",
            "tls_ca_file",
        ],
    );
}

#[test]
fn tls_to_a_plain_port_and_plain_to_a_tls_port_say_which_to_use() {
    let certs = Certificates::generate();
    let plain = RedisServer::start();
    let tls = TlsRedis::start(&certs, "no", &[]);
    let out = check_connect(
        Some(&format!("rediss://127.0.0.1:{}", plain.port())),
        &ca_file(&certs, "ca.crt"),
        &[],
    );
    assert_fails_saying(&out, &["does not speak TLS", "use redis://", "6380"]);
    let out = check_connect(Some(&format!("redis://127.0.0.1:{}", tls.port())), "", &[]);
    assert_fails_saying(
        &out,
        &[&format!("127.0.0.1:{}", tls.port()), "use rediss://"],
    );
}

#[test]
fn a_missing_or_wrong_password_says_where_passwords_go() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let url = format!("redis://127.0.0.1:{}", redis.port());
    assert_fails_saying(
        &check_connect(Some(&url), "", &[]),
        &[
            "requires a password",
            "NOAUTH",
            "REDIS_PASSWORD",
            "password_file",
        ],
    );
    let wrong = format!("redis://:nope@127.0.0.1:{}", redis.port());
    let out = check_connect(Some(&wrong), "", &[]);
    assert_fails_saying(&out, &["rejected the credentials", "WRONGPASS"]);
    assert!(!stderr(&out).contains("nope"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("nope"), "{}", stdout(&out));

    assert_connects(&check_connect(
        Some(&format!("redis://:s3cret@127.0.0.1:{}", redis.port())),
        "",
        &[],
    ));
    // The environment's password wins over a wrong one in the URL.
    assert_connects(&check_connect(
        Some(&wrong),
        "",
        &[("REDIS_PASSWORD", "s3cret")],
    ));
}

#[test]
fn an_acl_user_connects_with_user_and_password_in_the_url() {
    let redis = RedisServer::start_with(&["--user", "app", "on", ">apppass", "~*", "&*", "+@all"]);
    let ok = format!("redis://app:apppass@127.0.0.1:{}", redis.port());
    assert_connects(&check_connect(Some(&ok), "", &[]));
    let wrong = format!("redis://app:wrong@127.0.0.1:{}", redis.port());
    assert_fails_saying(&check_connect(Some(&wrong), "", &[]), &["WRONGPASS"]);
}

#[tokio::test]
async fn a_mounted_password_file_is_used_and_its_newline_ignored() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let secret = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(secret.path(), "s3cret\n").expect("secret written");
    let extra = format!("password_file = {:?}\n", secret.path());
    let url = format!("redis://127.0.0.1:{}", redis.port());
    assert_connects(&check_connect(Some(&url), &extra, &[]));

    let origin = Origin::echo().await;
    let proxy = start_proxy_redis(origin.addr(), &url, &extra, ITEMS).await;
    assert!(get(proxy.addr(), "/items/7", &[]).await.stored());
    let hit = get(proxy.addr(), "/items/7", &[]).await;
    assert!(hit.hit(), "{}", hit.cache_status());
    proxy.shutdown().await;

    let missing = check_connect(Some(&url), "password_file = \"/nonexistent/secret\"\n", &[]);
    assert_fails_saying(&missing, &["redis.password_file", "/nonexistent/secret"]);
}

#[test]
fn the_managed_redis_variables_select_tls_on_6380_style_settings() {
    let certs = Certificates::generate();
    let redis = TlsRedis::start(&certs, "no", &["--requirepass", "accesskey"]);
    let port = redis.port().to_string();
    let env = [
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", port.as_str()),
        ("REDIS_SSL", "true"),
        ("REDIS_ACCESS_KEY", "accesskey"),
    ];
    let out = check_connect(None, &ca_file(&certs, "ca.crt"), &env);
    assert_connects(&out);
    assert!(
        stdout(&out).contains(&format!("rediss://127.0.0.1:{port}")),
        "{}",
        stdout(&out)
    );
    // Without REDIS_PORT, TLS means 6380 (nothing listens there in the test).
    let out = check_connect(
        None,
        &ca_file(&certs, "ca.crt"),
        &[("REDIS_HOST", "127.0.0.1"), ("REDIS_SSL", "true")],
    );
    assert_fails_saying(&out, &["127.0.0.1:6380"]);
    let out = check_connect(
        None,
        "",
        &[("REDIS_HOST", "127.0.0.1"), ("REDIS_SSL", "maybe")],
    );
    assert_fails_saying(&out, &["REDIS_SSL", "true or false"]);
}

#[test]
fn tls_files_with_a_plain_url_or_unreadable_are_policy_errors() {
    let certs = Certificates::generate();
    let out = check_connect(
        Some("redis://127.0.0.1:6390"),
        &ca_file(&certs, "ca.crt"),
        &[],
    );
    assert_fails_saying(&out, &["redis.url", "use rediss://"]);
    let out = check_connect(
        Some("rediss://127.0.0.1:6390"),
        "tls_ca_file = \"/nonexistent/ca.pem\"\n",
        &[],
    );
    assert_fails_saying(&out, &["tls_ca_file", "/nonexistent/ca.pem"]);
    let out = check_connect(
        Some("rediss://127.0.0.1:6390"),
        &format!("tls_cert_file = {:?}\n", certs.path("client.crt")),
        &[],
    );
    assert_fails_saying(&out, &["tls_cert_file needs tls_key_file"]);
}

#[test]
fn an_unreachable_port_and_a_silent_server_are_told_apart() {
    let refused = support::redis::free_port();
    let out = check_connect(Some(&format!("redis://127.0.0.1:{refused}")), "", &[]);
    assert_fails_saying(
        &out,
        &[
            &format!("nothing accepts connections at 127.0.0.1:{refused}"),
            "check the host and port",
        ],
    );

    // Accepts connections and never answers: the kernel completes the handshake.
    let silent = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let out = check_connect(Some(&format!("redis://127.0.0.1:{port}")), "", &[]);
    assert_fails_saying(
        &out,
        &[
            &format!("no answer from 127.0.0.1:{port} within 1s"),
            "redis.timeout",
        ],
    );
    println!("silent server reported after {:?}", started.elapsed());
    drop(silent);
}

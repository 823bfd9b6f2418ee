//! `https://` origins: a real TLS origin (tokio-rustls, with a CA and leaf made by `openssl`
//! for the test) behind the real proxy. Hits and misses, one kept-alive TLS connection for
//! many requests, the server name and Host the origin sees, and certificates the proxy must
//! refuse (wrong name, untrusted CA) answered 502 with nothing stored.

mod support;

use bytes::Bytes;
use cachalot::{Policy, Server};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use support::routes::CREDENTIAL;
use support::tls::Certificates;
use support::{HOST, RedisServer, get};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What the TLS origin saw: completed handshakes (one per connection), the server name each
/// client sent, and each request's `Host` and target.
#[derive(Default)]
struct Log {
    handshakes: usize,
    server_names: Vec<Option<String>>,
    requests: Vec<(String, String)>,
}

/// An HTTPS/1.1 origin on a free loopback port serving `name.crt`/`name.key`.
struct TlsOrigin {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl TlsOrigin {
    async fn start(certs: &Certificates, name: &str) -> Self {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(certs.path(&format!("{name}.crt")))
                .expect("certificate file")
                .collect::<Result<_, _>>()
                .expect("PEM certificates");
        let key = PrivateKeyDer::from_pem_file(certs.path(&format!("{name}.key"))).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let log = Arc::clone(&shared);
                tokio::spawn(async move {
                    // A refused handshake is the client's verdict: nothing to serve.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    {
                        let mut log = log.lock().unwrap();
                        log.handshakes += 1;
                        log.server_names
                            .push(tls.get_ref().1.server_name().map(str::to_owned));
                    }
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let log = Arc::clone(&log);
                        async move {
                            let host = request
                                .headers()
                                .get(http::header::HOST)
                                .map_or("", |v| v.to_str().unwrap_or(""))
                                .to_owned();
                            let target = request.uri().to_string();
                            let n = {
                                let mut log = log.lock().unwrap();
                                log.requests.push((host, target.clone()));
                                log.requests.len()
                            };
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(format!("{target} #{n}")),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, log }
    }

    fn handshakes(&self) -> usize {
        self.log.lock().unwrap().handshakes
    }

    fn requests(&self) -> usize {
        self.log.lock().unwrap().requests.len()
    }
}

/// A policy in front of `https://localhost:<port>` (the name the test certificate carries),
/// with `origin_extra` in `[origin]`.
fn policy_text(origin: &TlsOrigin, redis: &RedisServer, origin_extra: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
admin = "127.0.0.1:0"
hosts = ["{HOST}"]

[origin]
url = "https://localhost:{port}"
timeout = "5s"
{origin_extra}

[redis]
url = "{redis_url}"
prefix = "cachalot"
timeout = "300ms"

{CREDENTIAL}
"#,
        port = origin.addr.port(),
        redis_url = redis.url(),
    )
}

fn ca_file(path: &Path) -> String {
    format!("tls_ca_file = {:?}", path.display().to_string())
}

/// The entries in Redis (the fill's collapse lock, released on its own, is not one).
fn stored(redis: &RedisServer) -> Vec<String> {
    let mut keys = redis.keys("cachalot:*");
    keys.retain(|key| !key.starts_with("cachalot:lock:"));
    keys
}

async fn start(origin: &TlsOrigin, redis: &RedisServer, origin_extra: &str) -> Server {
    let policy = Policy::parse(&policy_text(origin, redis, origin_extra), "test.toml")
        .unwrap_or_else(|e| panic!("test policy is invalid: {e}"));
    Server::start(policy).await.expect("proxy starts")
}

#[tokio::test]
async fn misses_and_hits_through_an_https_origin_on_one_kept_alive_connection() {
    let certs = Certificates::generate();
    let redis = RedisServer::start();
    let origin = TlsOrigin::start(&certs, "server").await;
    let proxy = start(&origin, &redis, &ca_file(&certs.path("ca.crt"))).await;

    let first = get(proxy.addr(), "/api/credentials/a", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "/api/credentials/a #1");
    assert!(first.stored(), "{}", first.cache_status());
    let again = get(proxy.addr(), "/api/credentials/a", &[]).await;
    assert!(again.hit(), "{}", again.cache_status());
    assert_eq!(again.body, first.body);
    assert_eq!(origin.requests(), 1);

    // Nine more misses, one after another: all on the first TLS connection.
    for id in 1..10 {
        let got = get(proxy.addr(), &format!("/api/credentials/m{id}"), &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), format!("/api/credentials/m{id} #{}", id + 1));
    }
    assert_eq!(origin.requests(), 10);
    assert_eq!(
        origin.handshakes(),
        1,
        "every request reuses the pooled TLS connection"
    );

    {
        let log = origin.log.lock().unwrap();
        // SNI is the origin URL's host; Host is the client's, as for http:// origins.
        assert_eq!(log.server_names, [Some("localhost".to_owned())]);
        assert!(
            log.requests.iter().all(|(host, _)| host == HOST),
            "{:?}",
            log.requests
        );
        assert_eq!(log.requests[0].1, "/api/credentials/a");
    }
    assert_eq!(stored(&redis).len(), 10);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_and_nothing_is_stored() {
    let certs = Certificates::generate();
    certs.signed("wrong", "subjectAltName=DNS:wrong.example");
    let redis = RedisServer::start();
    let origin = TlsOrigin::start(&certs, "wrong").await;
    let proxy = start(&origin, &redis, &ca_file(&certs.path("ca.crt"))).await;

    let got = get(proxy.addr(), "/api/credentials/a", &[]).await;
    assert_eq!(got.status, 502);
    assert_eq!(origin.requests(), 0);
    assert_eq!(origin.handshakes(), 0);
    assert_eq!(stored(&redis), Vec::<String>::new());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_refused() {
    let certs = Certificates::generate();
    let redis = RedisServer::start();
    let origin = TlsOrigin::start(&certs, "server").await;

    // tls_ca_file replaces the system roots: a different CA does not vouch for this one.
    let other = start(&origin, &redis, &ca_file(&certs.path("other-ca.crt"))).await;
    let got = get(other.addr(), "/api/credentials/a", &[]).await;
    assert_eq!(got.status, 502);
    other.shutdown().await;

    // Nor do the system roots, without tls_ca_file, trust a CA made by the test.
    let system = start(&origin, &redis, "").await;
    let got = get(system.addr(), "/api/credentials/a", &[]).await;
    assert_eq!(got.status, 502);
    system.shutdown().await;

    assert_eq!(origin.requests(), 0);
    assert_eq!(origin.handshakes(), 0);
    assert_eq!(stored(&redis), Vec::<String>::new());
}

#[tokio::test]
async fn check_shows_the_https_origin_and_its_ca() {
    let certs = Certificates::generate();
    let redis = RedisServer::start();
    let origin = TlsOrigin::start(&certs, "server").await;
    let ca = certs.path("ca.crt");
    let policy = Policy::parse(&policy_text(&origin, &redis, &ca_file(&ca)), "test.toml")
        .expect("valid policy");
    let first_line = policy.describe().lines().next().unwrap().to_owned();
    assert!(
        first_line.contains(&format!(
            "origin https://localhost:{}/ (TLS, CA {})",
            origin.addr.port(),
            ca.display()
        )),
        "{first_line}"
    );
}

/// A CA file that is missing or holds no certificate, or one given for an http:// origin,
/// is a policy error naming the file, the line and the field.
#[tokio::test]
async fn a_bad_ca_file_is_a_policy_error_with_file_line_and_field() {
    let certs = Certificates::generate();
    let redis = RedisServer::start();
    let origin = TlsOrigin::start(&certs, "server").await;
    let missing = certs.path("missing.crt");
    let not_pem = certs.path("server.ext");
    let line_of = |text: &str| {
        text.lines()
            .position(|l| l.starts_with("tls_ca_file"))
            .unwrap()
            + 1
    };

    for (path, says) in [
        (&missing, "cannot read PEM certificates"),
        (&not_pem, "holds no PEM certificate"),
    ] {
        let text = policy_text(&origin, &redis, &ca_file(path));
        let error = Policy::parse(&text, "test.toml").unwrap_err().to_string();
        assert!(
            error.contains(&format!("test.toml:{}", line_of(&text))),
            "{error}"
        );
        assert!(error.contains("origin.tls_ca_file"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains(says), "{error}");
    }

    let text = policy_text(&origin, &redis, &ca_file(&certs.path("ca.crt")))
        .replace("https://", "http://");
    let error = Policy::parse(&text, "test.toml").unwrap_err().to_string();
    assert!(
        error.contains(&format!("test.toml:{}", line_of(&text))),
        "{error}"
    );
    assert!(
        error.contains("only applies to an https:// origin"),
        "{error}"
    );
}

//! HTTP/2 cookie crumbs (issue 20 §1): an HTTP/2 client may send each cookie as its own
//! `cookie` field; RFC 9113 §8.2.3 requires them joined with `"; "` into one `Cookie`
//! before the request goes on over HTTP/1.1. Checked with the `h2` crate as the client and a
//! raw origin that logs the head it received, byte for byte.

mod support;

use cachalot::{Policy, Server};
use support::logging_origin::LoggingOrigin;
use support::{RedisServer, policy_text_listen};
use tokio::net::TcpStream;

const ROUTES: &str = r#"
[[route]]
match = "/account"
cache = false
"#;

#[tokio::test]
async fn http2_cookie_fields_reach_the_origin_as_one_cookie_line() {
    let redis = RedisServer::start();
    let origin = LoggingOrigin::start().await;
    let text = policy_text_listen(origin.addr(), &redis.url(), "", "", ROUTES);
    let proxy = Server::start(Policy::parse(&text, "test.toml").unwrap())
        .await
        .unwrap();

    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get("http://shop.example/account")
        .header("cookie", "session=crumb-secret")
        .header("cookie", "theme=dark")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);

    let heads = origin.heads();
    assert_eq!(heads.len(), 1);
    let cookies: Vec<&str> = heads[0]
        .lines()
        .filter(|line| line.to_ascii_lowercase().starts_with("cookie:"))
        .collect();
    assert_eq!(
        cookies,
        ["cookie: session=crumb-secret; theme=dark"],
        "{}",
        heads[0]
    );
    proxy.shutdown().await;
}

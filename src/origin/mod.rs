//! The origin: a pooled HTTP/1.1 client to the API behind the proxy, and the header hygiene
//! a proxy owes both sides (hop-by-hop headers removed, `X-Forwarded-*` added).
//!
//! An `https://` origin goes through hyper-rustls over the same pooled client: the server
//! name (SNI) and the name the certificate must carry are the URL's host, verification is
//! always on, and connections are kept alive and reused exactly as plain ones are.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::http::hop_by_hop::strip_hop_by_hop;
use crate::policy::OriginSettings;
use metrics::SharedString;

/// What the proxy sends to the origin: a client's streamed body (cut off past
/// `limits.max_body`), or nothing (for fills).
pub type OriginBody = Either<Limited<Incoming>, Empty<Bytes>>;

/// Why the origin gave no response.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("origin unreachable: {0}")]
    Connect(String),
    #[error("origin did not answer within {0:?}")]
    Timeout(Duration),
    #[error("origin request failed: {0}")]
    Failed(String),
    /// The origin's response could be framed two ways (see [`Origin::send`]): not forwarded.
    #[error("origin sent both Content-Length and Transfer-Encoding")]
    AmbiguousFraming,
    /// The client's streamed body went over `limits.max_body`: the origin request was
    /// abandoned mid-body.
    #[error("the request body is larger than limits.max_body")]
    BodyTooLarge,
}

impl OriginError {
    /// 502 for an origin that cannot be reached or broke the exchange, 504 for a slow one.
    pub fn status(&self) -> StatusCode {
        match self {
            OriginError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            OriginError::Connect(_) | OriginError::Failed(_) | OriginError::AmbiguousFraming => {
                StatusCode::BAD_GATEWAY
            }
            OriginError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// The longest a TCP connect to the origin may take, whatever the request's timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The API behind the proxy.
pub struct Origin {
    client: Client<HttpsConnector<HttpConnector>, OriginBody>,
    base: Uri,
}

impl Origin {
    pub fn new(settings: &OriginSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Each request's own timeout bounds the connect too (see `send`); this one keeps a
        // black-holed address from holding a pool slot past it.
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        // The TLS layer hands `https://` to this connector as plain TCP.
        connector.enforce_http(false);
        let tls = HttpsConnectorBuilder::new();
        let connector = match &settings.tls {
            // Only https:// is accepted: an origin that says https is never reached in the clear.
            Some(config) => tls.with_tls_config(config.as_ref().clone()).https_only(),
            // The policy refuses anything but http:// and https://, so this is http://.
            None => tls.with_tls_config(trusts_nothing()).https_or_http(),
        }
        .enable_http1()
        .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            // Without a timer the idle timeout is silently ignored (hyper-util#186).
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .set_host(false)
            .build(connector);
        Self {
            client,
            base: settings.url.clone(),
        }
    }

    /// The origin's URI for a request's path and query.
    pub fn uri(&self, path_and_query: &str) -> Uri {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            path_and_query
                .parse()
                .unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).expect("origin base URI with a path is valid")
    }

    /// Sends a request and waits for the response head, at most `timeout` (the route's, see
    /// [`Policy::origin_timeout`](crate::policy::Policy::origin_timeout)). `route` labels the request in metrics (the route's label, or `-`).
    ///
    /// A response with both `Content-Length` and `Transfer-Encoding` is refused (502, never
    /// stored), as nginx does: hyper frames it by the transfer coding, but the length says
    /// something else, and a body that holds a second response in the gap is how an origin
    /// (or whatever sits in front of it) splits the connections behind the proxy. RFC 9112
    /// §6.3 would let the proxy drop the length and forward; which of the two framings the
    /// origin meant cannot be known, so neither is passed on. The origin connection is not
    /// reused: the body is dropped unread.
    pub async fn send(
        &self,
        request: Request<OriginBody>,
        route: SharedString,
        timeout: Duration,
    ) -> Result<Response<Incoming>, OriginError> {
        let started = std::time::Instant::now();
        let uri = request.uri().clone();
        let result = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(OriginError::Timeout(timeout)),
            Ok(Ok(response)) if has_two_framings(response.headers()) => {
                tracing::warn!(uri = %uri, "origin sent both Content-Length and Transfer-Encoding; answering 502");
                Err(OriginError::AmbiguousFraming)
            }
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(OriginError::Connect(error_chain(&e))),
            Ok(Err(e)) if caused_by::<LengthLimitError>(&e) => Err(OriginError::BodyTooLarge),
            Ok(Err(e)) => Err(OriginError::Failed(error_chain(&e))),
        };
        let status: SharedString = match &result {
            Ok(response) => response.status().as_u16().to_string().into(),
            Err(OriginError::Timeout(_)) => SharedString::const_str("timeout"),
            Err(OriginError::Connect(_)) => SharedString::const_str("unreachable"),
            Err(OriginError::Failed(_)) => SharedString::const_str("failed"),
            Err(OriginError::AmbiguousFraming) => SharedString::const_str("ambiguous-framing"),
            Err(OriginError::BodyTooLarge) => SharedString::const_str("body-too-large"),
        };
        metrics::counter!("cachalot_origin_requests_total", "route" => route.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("cachalot_origin_duration_seconds", "route" => route)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// The TLS configuration of a plain `http://` origin's connector, which never makes a TLS
/// connection: with no roots, none could ever be verified.
fn trusts_nothing() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// Builds the origin request from the client's head: same method and headers (minus
/// hop-by-hop), `Host` as the proxy settled it (see `admit`), `X-Forwarded-For`/`-Proto`
/// added.
pub fn request_head(
    origin: &Origin,
    client_head: &http::request::Parts,
    path_and_query: &str,
    client_ip: IpAddr,
) -> http::request::Builder {
    let mut headers = client_head.headers.clone();
    strip_hop_by_hop(&mut headers);
    // `Connection: host` must not take the Host away: the origin would fall back to its own
    // address in the URLs it builds, for a response keyed on the client's authority.
    if let Some(host) = client_head.headers.get(header::HOST) {
        headers.insert(header::HOST, host.clone());
    }
    append_forwarded_for(&mut headers, client_ip);
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    let mut builder = Request::builder()
        .method(client_head.method.clone())
        .uri(origin.uri(path_and_query))
        .version(Version::HTTP_11);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    builder
}

fn append_forwarded_for(headers: &mut HeaderMap, client_ip: IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    // Several header lines are one list (RFC 9110 §5.3): keep every earlier hop.
    let mut hops: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = client_ip.to_string();
    hops.push(&client);
    if let Ok(value) = HeaderValue::from_str(&hops.join(", ")) {
        headers.insert(name, value);
    }
}

/// Whether a response says how long it is in two ways (RFC 9112 §6.3).
fn has_two_framings(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING) && headers.contains_key(header::CONTENT_LENGTH)
}

/// Whether `E` is somewhere in the error's chain of causes.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<E>() {
            return true;
        }
        cause = e.source();
    }
    false
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

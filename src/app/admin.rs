//! The admin listener: health for load balancers and people, metrics, the live status page,
//! and the purge API. Never served on the public port, so nothing here is reachable through
//! the proxy.
//!
//! `/healthz` says the process is up; `/readyz` says it takes new requests, and turns 503
//! the moment a graceful shutdown starts (the admin listener keeps answering until the
//! public one has drained), so Kubernetes takes the pod out of its Service before the
//! in-flight requests are done.
//!
//! Health, metrics and the status page (`/`, `/status.json`) are open: a load balancer has
//! no token, and the numbers hold no secret. Purging is not: it needs
//! `Authorization: Bearer <token>`, with the token from `CACHALOT_ADMIN_TOKEN`. Without a
//! configured token the purge API is off and says so (403); it is never open by default.
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /purge` `{"keys": [...], "tags": [...], "prefix": "..."}` | 200 `{"dropped": N}` |
//! | `PURGE /api/credentials/abc` | 200 `{"dropped": 1, "key": "credential:abc"}`; 404 if no cached route takes it |
//! | either, while Redis is down | 202 `{"queued": true}`: applied before the cache is used again |
//!
//! A purge is applied in Redis, which every instance shares, so one request reaches them
//! all; nothing needs to be published.

use crate::app::status_page;
use crate::net::body::ProxyBody;
use crate::request::proxy::Proxy;
use crate::store::Applied;
use crate::store::message::{Invalidation, Source};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

/// The environment variable that holds the purge API's bearer token.
pub const TOKEN_ENV: &str = "CACHALOT_ADMIN_TOKEN";

/// Largest `POST /purge` body: thousands of keys, and still no way to make the process
/// buffer without bound.
pub const MAX_PURGE_BODY: usize = 64 * 1024;

/// Fields a purge body may have. Anything else is refused rather than ignored: a typo such
/// as `"tag"` would otherwise purge less than the operator believes.
const PURGE_FIELDS: [&str; 4] = ["keys", "tags", "prefix", "reason"];

/// Settings of the admin listener that come from the environment, not the policy file: a
/// secret does not belong in a file that is committed and printed by `check`.
#[derive(Clone, Default)]
pub struct AdminConfig {
    /// SHA-256 of the purge API's bearer token; `None` turns the purge API off. Only the
    /// digest is kept: comparing digests compares 32 bytes whatever the lengths of the token
    /// and the guess, so timing reveals neither the token's bytes nor its length.
    token: Option<[u8; 32]>,
}

impl AdminConfig {
    /// Reads `CACHALOT_ADMIN_TOKEN` (once, when the server starts).
    pub fn from_env() -> Self {
        Self::with_token(std::env::var(TOKEN_ENV).ok())
    }

    /// A config with this token; `None` or a blank token leaves the purge API off.
    pub fn with_token(token: Option<String>) -> Self {
        let token = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        Self {
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
        }
    }

    /// Whether the purge API answers at all.
    pub fn purge_enabled(&self) -> bool {
        self.token.is_some()
    }
}

/// Never prints the token.
impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.purge_enabled() { "set" } else { "unset" };
        f.debug_struct("AdminConfig")
            .field("token", &token)
            .finish()
    }
}

/// Answers one admin request. `stopping` turns true when the public listener starts its
/// graceful shutdown.
pub async fn handle(
    proxy: Arc<Proxy>,
    config: AdminConfig,
    stopping: watch::Receiver<bool>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    if request.method().as_str() == "PURGE" {
        return match refusal(&config, request.headers()) {
            Some(refused) => refused,
            None => purge_target(&proxy, &request).await,
        };
    }
    let path = request.uri().path();
    if path == "/purge" {
        if request.method() != Method::POST {
            return allow(
                "POST",
                "use POST /purge with a JSON body, or PURGE <path>\n",
            );
        }
        return match refusal(&config, request.headers()) {
            Some(refused) => refused,
            None => purge_body(&proxy, request).await,
        };
    }
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    match path {
        "/" | "/status.json" | "/healthz" | "/readyz" | "/health/cache" | "/metrics" if !read => {
            allow("GET, HEAD", "use GET\n")
        }
        "/" => {
            let mut response = text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                status_page::PAGE,
            );
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(status_page::PAGE_CSP),
            );
            response
        }
        "/status.json" => {
            let status = status_page::snapshot(&proxy).await;
            json_response(
                StatusCode::OK,
                &serde_json::to_value(status).expect("the status serializes"),
            )
        }
        // The process is up and accepting: it serves, with or without Redis.
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        // Whether new requests are welcome: not once shutdown has begun. Redis being down
        // does not make the proxy unready: it serves from the origin meanwhile.
        "/readyz" if *stopping.borrow() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        ),
        "/readyz" => text(StatusCode::OK, "text/plain", "ready\n"),
        // Whether the cache works right now; the proxy keeps serving either way.
        "/health/cache" => match proxy.store.ping().await {
            Ok(()) => text(StatusCode::OK, "application/json", "{\"redis\":\"ok\"}\n"),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                "{\"redis\":\"down\"}\n",
            ),
        },
        "/metrics" => {
            let mut response = Response::new(ProxyBody::full(crate::observe::metrics::render()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /, /status.json, /healthz, /readyz, /health/cache, /metrics, POST /purge or PURGE <path>\n",
        ),
    }
}

/// The answer to a purge without the configured bearer token; `None` lets it through. The
/// comparison is of SHA-256 digests in constant time: it takes the same time wherever the
/// tokens differ and whatever their lengths, so the answer's timing reveals neither how much
/// of a guess was right nor how long the token is.
fn refusal(config: &AdminConfig, headers: &HeaderMap) -> Option<Response<ProxyBody>> {
    let Some(expected) = &config.token else {
        tracing::warn!("purge refused: the purge API is off ({TOKEN_ENV} is not set)");
        return Some(json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": format!("the purge API is off: set {TOKEN_ENV} in the proxy's environment to enable it")}),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let (challenge, message) = match given {
        None => (
            "Bearer realm=\"cachalot\"",
            "purging needs Authorization: Bearer <token>",
        ),
        Some(token) if bool::from(Sha256::digest(token.as_bytes()).ct_eq(expected)) => {
            return None;
        }
        Some(_) => (
            "Bearer realm=\"cachalot\", error=\"invalid_token\"",
            "the bearer token is not the purge API's token",
        ),
    };
    tracing::warn!("purge refused: {message}");
    let mut response = json_response(StatusCode::UNAUTHORIZED, &json!({ "error": message }));
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    Some(response)
}

/// `POST /purge`: drops the keys, tags and/or prefix the JSON body names.
async fn purge_body(proxy: &Arc<Proxy>, request: Request<Incoming>) -> Response<ProxyBody> {
    let body = match Limited::new(request.into_body(), MAX_PURGE_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": format!("the body is larger than {MAX_PURGE_BODY} bytes; purge in several requests or by tag or prefix")}),
            );
        }
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("cannot read the body: {e}")}),
            );
        }
    };
    let invalidation = match parse_purge(&body) {
        Ok(invalidation) => invalidation,
        Err(reason) => return json_response(StatusCode::BAD_REQUEST, &json!({ "error": reason })),
    };
    match proxy.invalidate(&invalidation, Source::Purge).await {
        Applied::Dropped(n) => json_response(StatusCode::OK, &json!({ "dropped": n })),
        Applied::Queued => queued(json!({ "queued": true })),
    }
}

/// A purge body: an invalidation as other services publish it, with no unknown fields.
fn parse_purge(body: &[u8]) -> Result<Invalidation, String> {
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| {
            format!("expected a JSON object such as {{\"keys\": [\"credential:abc\"]}}: {e}")
        })?;
    if let Some(unknown) = fields.keys().find(|k| !PURGE_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {unknown:?}; valid: {}",
            PURGE_FIELDS.join(", ")
        ));
    }
    Invalidation::parse(body)
}

/// `PURGE <path>`: drops what a GET of that path and query is cached under.
async fn purge_target(proxy: &Arc<Proxy>, request: &Request<Incoming>) -> Response<ProxyBody> {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let Some(key) = proxy.key_for_target(target) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no cached route takes GET {target}: nothing is stored for it")}),
        );
    };
    let invalidation = Invalidation {
        keys: vec![key.clone()],
        reason: Some(format!("PURGE {target}")),
        ..Invalidation::default()
    };
    match proxy.invalidate(&invalidation, Source::Purge).await {
        Applied::Dropped(n) => json_response(StatusCode::OK, &json!({ "dropped": n, "key": key })),
        Applied::Queued => queued(json!({ "queued": true, "key": key })),
    }
}

/// Redis is down: the purge is queued and applied before the cache is used again.
fn queued(body: serde_json::Value) -> Response<ProxyBody> {
    json_response(StatusCode::ACCEPTED, &body)
}

fn allow(methods: &'static str, message: &'static str) -> Response<ProxyBody> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", message);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(methods));
    response
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = no_store(status, ProxyBody::full(format!("{body}\n")));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, content_type: &'static str, body: &'static str) -> Response<ProxyBody> {
    let mut response = no_store(status, ProxyBody::full(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn no_store(status: StatusCode, body: ProxyBody) -> Response<ProxyBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let config = AdminConfig::with_token(Some("s3cret-token".into()));
        assert!(refusal(&config, &bearer("Bearer s3cret-token")).is_none());
        assert!(refusal(&config, &bearer("bearer s3cret-token")).is_none());
        for wrong in [
            "Bearer s3cret",
            "Bearer s3cret-token2",
            "Basic s3cret-token",
            "s3cret-token",
        ] {
            let refused = refusal(&config, &bearer(wrong)).unwrap();
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{wrong}");
            assert!(refused.headers().contains_key(header::WWW_AUTHENTICATE));
        }
        let refused = refusal(&config, &HeaderMap::new()).unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn without_a_token_the_purge_api_is_off() {
        for config in [
            AdminConfig::default(),
            AdminConfig::with_token(Some("  ".into())),
        ] {
            let refused = refusal(&config, &bearer("Bearer ")).unwrap();
            assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let config = AdminConfig::with_token(Some("hunter2".into()));
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn purge_bodies_name_something_and_nothing_unknown() {
        let parsed = parse_purge(br#"{"keys": ["a"], "tags": ["t"], "prefix": "p:"}"#).unwrap();
        assert_eq!(parsed.keys, ["a"]);
        assert_eq!(parsed.tags, ["t"]);
        for bad in [
            &br#"{"tag": ["t"]}"#[..],
            b"{}",
            b"[]",
            b"not json",
            br#"{"prefix": ""}"#,
        ] {
            assert!(
                parse_purge(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

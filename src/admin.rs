//! The admin listener: health for load balancers and people. Never served on the public
//! port, so nothing here is reachable through the proxy.

use crate::body::ProxyBody;
use crate::proxy::Proxy;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;

/// Answers one admin request.
pub async fn handle(proxy: Arc<Proxy>, request: Request<Incoming>) -> Response<ProxyBody> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    match request.uri().path() {
        // The process is up and accepting: it serves, with or without Redis.
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
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
            let mut response = Response::new(ProxyBody::full(crate::metrics::render()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /healthz or /health/cache\n",
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

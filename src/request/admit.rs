//! What the proxy settles in a client's request head before anything routes it: which host
//! it is for, whether its target is one the proxy serves, and the header lines the origin
//! would read differently from the cache. Each is decided once here, so the key and the
//! origin request cannot disagree about it.
//!
//! - The authority (see `authority`): one valid value, or 400; not in `[listen] hosts`
//!   (when set), 421. The one `Host` the origin then sees is that value in normal form.
//! - Asterisk-form: `*` means "the server in general" and only with OPTIONS (RFC 9110
//!   §9.3.7); `GET *` is 400. `OPTIONS *` is answered here: the server the client asks about
//!   is the proxy, and an origin framework would route `*` as if it were a path.
//! - Header names with `_` are dropped (nginx's `underscores_in_headers off`): WSGI servers
//!   turn `-` and `_` into the same environ key, so `X_Forwarded_Host` would slip past every
//!   rule written for `X-Forwarded-Host`. `[listen] underscores_in_headers = true` keeps them.
//! - Several `Cookie` lines (HTTP/2 sends each cookie as its own field) become one, joined
//!   with `"; "` as RFC 9113 §8.2.3 requires before a request goes on over HTTP/1.1; two lines
//!   would reach Werkzeug as one value joined with `,`, which is not a cookie separator.

use crate::phase::Refusal;
use crate::policy::ListenSettings;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};

/// A request the proxy answers itself instead of forwarding.
pub struct Answer {
    pub status: StatusCode,
    /// Why, for `Cache-Status` (`OptionsStar` for an `OPTIONS *`, which is not refused).
    pub why: Refusal,
    pub text: String,
}

/// Checks and settles `request`'s head (see the module documentation). Returns the
/// request's authority in normal form (`None`: no usable Host, HTTP/1.0 without one).
pub fn admit<B>(
    request: &mut Request<B>,
    listen: &ListenSettings,
) -> Result<Option<String>, Answer> {
    if request.uri().path() == "*" {
        return Err(if request.method() == Method::OPTIONS {
            Answer {
                status: StatusCode::OK,
                why: Refusal::OptionsStar,
                text: String::new(),
            }
        } else {
            refuse(
                StatusCode::BAD_REQUEST,
                Refusal::BadHost,
                "the asterisk-form target '*' is only for OPTIONS",
            )
        });
    }
    let authority =
        crate::http::authority::of_request(request.version(), request.uri(), request.headers())
            .map_err(|why| refuse(StatusCode::BAD_REQUEST, Refusal::BadHost, why))?;
    if !listen.hosts.is_empty() && !authority.as_ref().is_some_and(|a| listen.hosts.contains(a)) {
        return Err(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            Refusal::MisdirectedHost,
            "this proxy does not serve that host",
        ));
    }
    let headers = request.headers_mut();
    headers.remove(header::HOST);
    if let Some(authority) = &authority {
        let value = HeaderValue::from_str(authority).expect("a normal authority is a valid value");
        headers.insert(header::HOST, value);
    }
    if !listen.underscores_in_headers {
        drop_underscored(headers);
    }
    join_cookies(headers);
    Ok(authority)
}

fn refuse(status: StatusCode, refusal: Refusal, why: &str) -> Answer {
    Answer {
        status,
        why: refusal,
        text: format!(
            "cachalot: {}: {why}\n",
            status.canonical_reason().unwrap_or("refused")
        ),
    }
}

fn drop_underscored(headers: &mut HeaderMap) {
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        tracing::debug!(header = %name, "dropped a header name with '_'");
        headers.remove(name);
    }
}

fn join_cookies(headers: &mut HeaderMap) {
    let mut lines = headers.get_all(header::COOKIE).iter();
    if lines.next().is_none() || lines.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for line in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(line.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_crumbs_become_one_line() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("session=crumb-secret"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark"));
        join_cookies(&mut headers);
        let lines: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(lines, ["session=crumb-secret; theme=dark"]);
    }
}

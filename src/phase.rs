//! The one vocabulary for what happened to a request: the same words appear in the
//! `Cache-Status` header (RFC 9211), in the logs and (later) in metric labels, so a header a
//! user sees with curl points straight at the code path that produced it.

use crate::policy::route::Route;
use http::HeaderValue;
use std::fmt::{self, Write};
use std::sync::Arc;

/// The request's cache phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Served from a fresh stored entry.
    Hit,
    /// Fetched from the origin because nothing fresh was stored.
    Miss,
    /// Waited for another request's fetch (in this process or another) and served its result.
    Collapsed,
    /// Not a request the cache handles (no route, `cache = false`, a method that is not read).
    Pass,
    /// A cacheable route, but this request or its response must not use the cache.
    Bypass,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Hit => "hit",
            Phase::Miss => "miss",
            Phase::Collapsed => "collapsed",
            Phase::Pass => "pass",
            Phase::Bypass => "bypass",
        }
    }
}

/// Why a request or response did not go through the cache normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoRoute,
    RoutePass,
    Method,
    Authorization,
    Cookie,
    Upgrade,
    RedisUnavailable,
    Status,
    SetCookie,
    NoStore,
    Private,
    NoCache,
    /// A `Cache-Control`, `Pragma` or `Surrogate-Control` line could not be read: not stored.
    UnreadableDirectives,
    Vary,
    TooLarge,
    CollapseTimeout,
    NotShared,
    Invalidated,
    OriginError,
    L1,
    NoFreshness,
    StaleWhileRevalidate,
    StaleIfError,
    EarlyRefresh,
    ClientMaxStale,
    ClientNoStore,
    OnlyIfCached,
    /// The path would mean something else to the origin (`%2F`, control characters): 400.
    BadPath,
    /// The request's `Transfer-Encoding` could be framed two ways (see `framing`): 400.
    BadFraming,
    /// The request body is larger than `limits.max_body`: 413.
    BodyTooLarge,
    /// The route already holds `max_variants` variants of this key; this one is not stored.
    TooManyVariants,
    /// No usable `Host` (HTTP/1.0 without one): forwarded, never stored, since the origin
    /// would build its URLs from its own address.
    NoHost,
    /// The request's authority is missing or unreadable (see `authority`), or its target is
    /// `*` for a method other than OPTIONS: 400.
    BadHost,
    /// `[listen] hosts` does not name the request's authority: 421.
    MisdirectedHost,
}

impl Reason {
    /// How many reasons there are, for tables indexed by `reason as usize`: the last
    /// variant's index plus one. (A reason added after it is still counted, by name.)
    pub const COUNT: usize = Reason::MisdirectedHost as usize + 1;

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoRoute => "no-route",
            Reason::RoutePass => "route-pass",
            Reason::Method => "method",
            Reason::Authorization => "authorization",
            Reason::Cookie => "cookie",
            Reason::Upgrade => "upgrade",
            Reason::RedisUnavailable => "redis-unavailable",
            Reason::Status => "status-not-stored",
            Reason::SetCookie => "set-cookie",
            Reason::NoStore => "no-store",
            Reason::Private => "private",
            Reason::NoCache => "no-cache",
            Reason::UnreadableDirectives => "unreadable-directives",
            Reason::Vary => "vary",
            Reason::TooLarge => "too-large",
            Reason::CollapseTimeout => "collapse-timeout",
            Reason::NotShared => "not-shared",
            Reason::Invalidated => "invalidated-during-fill",
            Reason::OriginError => "origin-error",
            Reason::L1 => "l1",
            Reason::NoFreshness => "no-freshness",
            Reason::StaleWhileRevalidate => "stale-while-revalidate",
            Reason::StaleIfError => "stale-if-error",
            Reason::EarlyRefresh => "early-refresh",
            Reason::ClientMaxStale => "max-stale",
            Reason::ClientNoStore => "client-no-store",
            Reason::OnlyIfCached => "only-if-cached",
            Reason::BadPath => "bad-path",
            Reason::BadFraming => "bad-framing",
            Reason::BodyTooLarge => "body-too-large",
            Reason::TooManyVariants => "too-many-variants",
            Reason::NoHost => "no-host",
            Reason::BadHost => "bad-host",
            Reason::MisdirectedHost => "misdirected-host",
        }
    }
}

/// Everything `Cache-Status` reports for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    pub phase: Phase,
    pub reason: Option<Reason>,
    /// The route's name, when it has one (shown in `detail`).
    pub route: Option<Arc<str>>,
    /// The route's label for logs and metrics (its name, else its `match`), if a route matched.
    pub label: Option<Arc<str>>,
    /// Seconds of freshness left, for responses served from a stored entry.
    pub ttl: Option<u64>,
    /// The origin's status, when the origin was asked.
    pub fwd_status: Option<u16>,
    /// Whether this response was stored.
    pub stored: bool,
    /// A stored response was found, but stale: it was revalidated, or served stale.
    pub stale: bool,
}

impl CacheStatus {
    pub fn new(phase: Phase) -> Self {
        Self {
            phase,
            reason: None,
            route: None,
            label: None,
            ttl: None,
            fwd_status: None,
            stored: false,
            stale: false,
        }
    }

    pub fn because(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn on_route(mut self, route: &Route) -> Self {
        self.route = route.name.clone();
        self.label = Some(Arc::clone(&route.label));
        self
    }

    /// The route's label as a metric label value (`-` when no route matched).
    pub fn metric_route(&self) -> metrics::SharedString {
        self.label.clone().map_or_else(
            || metrics::SharedString::const_str("-"),
            metrics::SharedString::from_shared,
        )
    }

    /// The header value, e.g. `cachalot; hit; ttl=540; detail=credential`.
    pub fn header_value(&self) -> HeaderValue {
        let mut text = String::with_capacity(64);
        let _ = write!(text, "{self}");
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .unwrap_or_else(|_| HeaderValue::from_static("cachalot"))
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cachalot")?;
        match self.phase {
            // Served stale after the origin was asked and failed (stale-if-error).
            Phase::Hit | Phase::Miss
                if self.stale
                    && (self.fwd_status.is_some() || self.reason == Some(Reason::StaleIfError)) =>
            {
                f.write_str("; fwd=stale")?
            }
            Phase::Hit => f.write_str("; hit")?,
            Phase::Miss if self.stale => f.write_str("; fwd=stale")?,
            Phase::Pass if self.reason == Some(Reason::Method) => f.write_str("; fwd=method")?,
            Phase::Pass | Phase::Bypass if self.reason != Some(Reason::RedisUnavailable) => {
                f.write_str("; fwd=bypass")?
            }
            _ => f.write_str("; fwd=uri-miss")?,
        }
        if let Some(status) = self.fwd_status {
            write!(f, "; fwd-status={status}")?;
        }
        if self.phase == Phase::Collapsed {
            f.write_str("; collapsed")?;
        }
        if self.stored {
            f.write_str("; stored")?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "; ttl={ttl}")?;
        }
        match (&self.route, self.reason) {
            (Some(route), Some(reason)) => write!(f, "; detail={route}/{}", reason.as_str()),
            (Some(route), None) => write!(f, "; detail={route}"),
            (None, Some(reason)) => write!(f, "; detail={}", reason.as_str()),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_documented_forms() {
        let mut hit = CacheStatus::new(Phase::Hit);
        hit.route = Some(Arc::from("credential"));
        hit.ttl = Some(540);
        assert_eq!(hit.to_string(), "cachalot; hit; ttl=540; detail=credential");

        let mut miss = CacheStatus::new(Phase::Miss);
        miss.fwd_status = Some(200);
        miss.stored = true;
        assert_eq!(
            miss.to_string(),
            "cachalot; fwd=uri-miss; fwd-status=200; stored"
        );

        let mut bypass = CacheStatus::new(Phase::Bypass).because(Reason::Authorization);
        bypass.route = Some(Arc::from("c"));
        assert_eq!(
            bypass.to_string(),
            "cachalot; fwd=bypass; detail=c/authorization"
        );

        let down = CacheStatus::new(Phase::Bypass).because(Reason::RedisUnavailable);
        assert_eq!(
            down.to_string(),
            "cachalot; fwd=uri-miss; detail=redis-unavailable"
        );

        let mut revalidated = CacheStatus::new(Phase::Miss);
        revalidated.stale = true;
        revalidated.fwd_status = Some(304);
        revalidated.stored = true;
        assert_eq!(
            revalidated.to_string(),
            "cachalot; fwd=stale; fwd-status=304; stored"
        );
        let mut while_revalidating =
            CacheStatus::new(Phase::Hit).because(Reason::StaleWhileRevalidate);
        while_revalidating.stale = true;
        assert_eq!(
            while_revalidating.to_string(),
            "cachalot; hit; detail=stale-while-revalidate"
        );

        let method = CacheStatus::new(Phase::Pass).because(Reason::Method);
        assert_eq!(method.to_string(), "cachalot; fwd=method; detail=method");
    }
}

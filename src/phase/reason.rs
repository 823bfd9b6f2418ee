//! Why a request or response did not go through the cache normally: the reason inside a
//! phase, and the `detail` word `Cache-Status` and the logs give it.

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
    StatusNotStored,
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
    InvalidatedDuringFill,
    OriginError,
    L1,
    NoFreshness,
    StaleWhileRevalidate,
    StaleIfError,
    EarlyRefresh,
    MaxStale,
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
            Reason::StatusNotStored => "status-not-stored",
            Reason::SetCookie => "set-cookie",
            Reason::NoStore => "no-store",
            Reason::Private => "private",
            Reason::NoCache => "no-cache",
            Reason::UnreadableDirectives => "unreadable-directives",
            Reason::Vary => "vary",
            Reason::TooLarge => "too-large",
            Reason::CollapseTimeout => "collapse-timeout",
            Reason::NotShared => "not-shared",
            Reason::InvalidatedDuringFill => "invalidated-during-fill",
            Reason::OriginError => "origin-error",
            Reason::L1 => "l1",
            Reason::NoFreshness => "no-freshness",
            Reason::StaleWhileRevalidate => "stale-while-revalidate",
            Reason::StaleIfError => "stale-if-error",
            Reason::EarlyRefresh => "early-refresh",
            Reason::MaxStale => "max-stale",
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

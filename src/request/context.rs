//! What the request's stages work with, instead of the whole `Proxy`: Redis, the origin
//! client, one policy snapshot for the whole request, and the in-process flights. Lookup,
//! fill, fetch and forward take a `&Stages`; the background refresh clones it. So none of
//! them needs `proxy.rs`, which drives them.

use crate::net::body::ProxyBody;
use crate::observe::verify::Verifications;
use crate::origin::Origin;
use crate::phase::Outcome;
use crate::policy::Policy;
use crate::request::collapse::Flights;
use crate::store::Store;
use http::Response;
use std::sync::Arc;

/// The shared parts one request uses, with the policy it started with.
#[derive(Clone)]
pub(crate) struct Stages {
    pub store: Arc<Store>,
    pub origin: Arc<Origin>,
    pub policy: Arc<Policy>,
    pub flights: Arc<Flights>,
    /// Shadow verification's samplers, bound and findings (see `verify`).
    pub verifications: Arc<Verifications>,
}

/// A stage's answer: the response, and what happened to the request.
pub(crate) type Answer = (Response<ProxyBody>, Outcome);

//! One request's way through the proxy: admit the head, decide from the policy, look up,
//! then deliver a hit, fill a miss (collapsed per key) or forward untouched.

pub mod admit;
pub(crate) mod cacheable;
pub mod collapse;
pub(crate) mod context;
pub mod decide;
pub mod detach;
pub mod fill;
pub mod proxy;
pub(crate) mod respond;
pub mod storable;

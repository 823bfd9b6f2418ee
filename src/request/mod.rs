//! One request's way through the proxy: admit the head, decide from the policy, look up,
//! then deliver a hit, fill a miss (collapsed per key) or forward untouched.

pub mod admit;
pub(crate) mod build_entry;
pub(crate) mod cacheable;
pub mod collapse;
pub(crate) mod compress;
pub(crate) mod context;
pub mod decide;
pub mod detach;
pub(crate) mod fetch;
pub mod fill;
pub(crate) mod lookup;
pub mod proxy;
pub(crate) mod respond;
pub mod storable;
pub(crate) mod verify;

//! HTTP rules that need neither the policy nor Redis: request framing and paths, the
//! authority, request ids, freshness and targeted cache-control fields, hop-by-hop
//! headers, `Vary`, ranges and tags, content codings and what is worth compressing.

pub mod accept_encoding;
pub mod authority;
pub mod coding;
pub mod compressible;
pub mod date;
pub mod directives;
pub mod escape;
pub mod framing;
pub mod freshness;
pub mod hop_by_hop;
pub mod path;
pub mod range;
pub mod request_id;
pub mod tags;
pub mod targeted;
pub mod vary;

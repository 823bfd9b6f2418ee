//! The form a fetched body is stored in: compressed here, once, when its entry is built (so
//! no hit ever compresses, and Redis holds the smaller form), or the origin's own gzip, br
//! or zstd recognised and checked to decode within the route's size limit, so that a client
//! that does not accept it can be sent it decoded. Anything else, and every response with
//! `Cache-Control: no-transform`, is stored as it came.
//! Apart from `build_entry`, which stays a pure function of the response and the clock,
//! because the work here is CPU time that large bodies do off the request's thread.

use crate::http::coding::Coding;
use crate::http::compressible::{compressible, forbids_transform};
use crate::phase::Reason;
use crate::policy::CompressionSettings;
use crate::policy::route::CacheRule;
use bytes::Bytes;
use http::HeaderMap;
use http::header;

/// A body as its entry holds it.
pub(crate) struct StoredBody {
    pub bytes: Bytes,
    /// See `Entry::coding`.
    pub coding: Option<Coding>,
    /// See `Entry::coded_by_origin`.
    pub coded_by_origin: bool,
}

/// Bodies up to this size are coded on the request's own task (tens of microseconds);
/// larger ones on the blocking pool, so that a multi-megabyte body does not hold up the
/// other connections sharing the worker thread.
const INLINE: usize = 64 * 1024;

/// The stored form of a fetched body, and its headers as stored (`Content-Encoding` and
/// `Content-Length` go when the coding is recorded in the entry instead). Err: an origin
/// body in a coding the proxy knows that does not decode within `max_object_size` (too
/// large, or not valid): not stored, and the body handed back to go out as it came.
pub(crate) async fn storage_form(
    headers: &mut HeaderMap,
    bytes: Bytes,
    rule: &CacheRule,
    settings: &CompressionSettings,
) -> Result<StoredBody, (Reason, Bytes)> {
    // `no-transform` (RFC 9110 §7.7): not even decoded for a client; stored as it came.
    if forbids_transform(headers) {
        return Ok(StoredBody::as_is(bytes));
    }
    if let Some(coding) = Coding::of_response(headers) {
        let limit = rule.max_object_size;
        let checked = off_thread(bytes, move |bytes| {
            coding.decode(bytes, limit).map(drop).map_err(|e| match e {
                crate::http::coding::DecodeError::TooLarge(_) => Reason::TooLarge,
                crate::http::coding::DecodeError::Corrupt(_) => Reason::OriginError,
            })
        })
        .await;
        return match checked {
            (Ok(()), bytes) => {
                headers.remove(header::CONTENT_ENCODING);
                headers.remove(header::CONTENT_LENGTH);
                Ok(StoredBody {
                    bytes,
                    coding: Some(coding),
                    coded_by_origin: true,
                })
            }
            (Err(reason), bytes) => Err((reason, bytes)),
        };
    }
    let worth_it = settings.enabled
        && rule.compress
        && bytes.len() as u64 >= settings.min_size
        && compressible(headers, &settings.types);
    if !worth_it {
        return Ok(StoredBody::as_is(bytes));
    }
    let (coding, level) = (settings.coding, settings.level);
    let (packed, bytes) = off_thread(bytes, move |bytes| coding.encode(bytes, level)).await;
    // Stored compressed only when that is smaller.
    if packed.len() >= bytes.len() {
        return Ok(StoredBody::as_is(bytes));
    }
    headers.remove(header::CONTENT_LENGTH);
    Ok(StoredBody {
        bytes: Bytes::from(packed),
        coding: Some(coding),
        coded_by_origin: false,
    })
}

impl StoredBody {
    /// A body stored as it came.
    pub fn as_is(bytes: Bytes) -> Self {
        Self {
            bytes,
            coding: None,
            coded_by_origin: false,
        }
    }
}

/// Runs `work` over the body, on the blocking pool when it is large; hands the body back.
async fn off_thread<T: Send + 'static>(
    bytes: Bytes,
    work: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> (T, Bytes) {
    if bytes.len() <= INLINE {
        return (work(&bytes), bytes);
    }
    tokio::task::spawn_blocking(move || (work(&bytes), bytes))
        .await
        .expect("coding a body does not panic")
}

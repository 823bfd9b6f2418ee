//! Percent-encoding as the cache key needs it (RFC 3986 §2): values equal after
//! normalisation give the same text, values that differ never do. Paths, tags, `Vary`
//! values and key templates all escape the same way, so it sits with the HTTP rules rather
//! than in the policy.

use std::fmt::Write;

/// Appends `value` percent-encoded: unreserved characters and `keep` stay, existing escapes
/// are normalised (unreserved ones decoded, hex upper-cased), everything else is escaped.
/// Values equal after RFC 3986 normalisation give the same text; values that differ never do.
pub fn escape_into(out: &mut String, value: &str, keep: &[u8]) {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let Some(decoded) = bytes.get(i + 1..i + 3).and_then(hex_pair)
        {
            if is_unreserved(decoded) {
                out.push(decoded as char);
            } else {
                let _ = write!(out, "%{decoded:02X}");
            }
            i += 3;
            continue;
        }
        if is_unreserved(b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        i += 1;
    }
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(pair).ok()?;
    u8::from_str_radix(text, 16).ok()
}

pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

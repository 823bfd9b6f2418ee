//! Which responses are worth compressing: text formats by media type, never a format that is
//! compressed already (images, audio, video, archives, fonts in WOFF), and never a response
//! that forbids transformation (`Cache-Control: no-transform`, RFC 9110 §7.7).

use http::{HeaderMap, header};

/// The media types compressed unless the policy lists its own: text, and the formats APIs
/// and pages send that are text under another name.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "+json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "+xml",
    "application/x-ndjson",
    "application/x-www-form-urlencoded",
    "application/wasm",
    "font/ttf",
    "font/otf",
    "image/bmp",
    "image/x-icon",
    "image/vnd.microsoft.icon",
];

/// Formats that are compressed inside already: compressing them again costs CPU and saves
/// nothing, so no policy can ask for it.
const ALREADY_COMPRESSED: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/heic",
    "image/jxl",
    "video/*",
    "audio/*",
    "font/woff",
    "font/woff2",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/zstd",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/x-rar-compressed",
    "application/vnd.rar",
    "application/pdf",
];

/// One entry of a types list: `type/subtype`, `type/*`, or `+suffix` (any type with that
/// structured-syntax suffix, RFC 6838 §4.2.8: `+json` takes `application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePattern(String);

impl TypePattern {
    /// Reads one pattern, lower-cased; refuses what is not one, and formats that are
    /// compressed already.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pattern = text.trim().to_ascii_lowercase();
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        let valid = match pattern.split_once('/') {
            Some((kind, "*")) => token(kind) && kind != "*",
            Some((kind, subtype)) => token(kind) && token(subtype),
            None => pattern.strip_prefix('+').is_some_and(token),
        };
        if !valid {
            return Err(format!(
                "{text:?} is not a media type pattern; write \"type/subtype\", \"type/*\" or \"+suffix\" (e.g. \"application/json\", \"text/*\", \"+json\")"
            ));
        }
        if let Some(packed) = ALREADY_COMPRESSED
            .iter()
            .find(|packed| matches(packed, &pattern) || matches(&pattern, packed))
        {
            return Err(format!(
                "{text:?} takes {packed}, which is compressed already: compressing it again costs CPU and saves nothing"
            ));
        }
        Ok(Self(pattern))
    }

    /// Whether a media type (`type/subtype`, lower case, no parameters) is taken.
    fn takes(&self, media_type: &str) -> bool {
        matches(&self.0, media_type)
    }
}

/// Whether `pattern` takes `media_type` (either may be a `type/*`).
fn matches(pattern: &str, media_type: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix('+') {
        return media_type
            .rsplit_once('+')
            .is_some_and(|(_, theirs)| theirs == suffix);
    }
    match (pattern.split_once('/'), media_type.split_once('/')) {
        (Some((kind, "*")), Some((theirs, _))) => kind == theirs,
        (Some((kind, _)), Some((theirs, "*"))) => kind == theirs,
        _ => pattern == media_type,
    }
}

/// Whether a response may be compressed for storage: a media type in `types` (never one
/// compressed already), no content coding of its own, and no `no-transform`.
pub fn compressible(headers: &HeaderMap, types: &[TypePattern]) -> bool {
    let Some(media_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
    else {
        return false;
    };
    let encoded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
    !encoded
        && !forbids_transform(headers)
        && !ALREADY_COMPRESSED.iter().any(|p| matches(p, &media_type))
        && types.iter().any(|t| t.takes(&media_type))
}

/// `Cache-Control: no-transform` (RFC 9110 §7.7): the body goes out as the origin sent it.
pub fn forbids_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|line| {
        line.as_bytes()
            .split(|&b| b == b',')
            .any(|directive| directive.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn defaults() -> Vec<TypePattern> {
        DEFAULT_TYPES
            .iter()
            .map(|t| TypePattern::parse(t).unwrap())
            .collect()
    }

    fn response(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn text_types_are_taken_and_compressed_formats_never() {
        let types = defaults();
        for taken in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
            "text/html",
            "text/css",
            "image/svg+xml",
            "application/javascript",
        ] {
            let headers = response(&[("content-type", taken)]);
            assert!(compressible(&headers, &types), "{taken}");
        }
        for refused in [
            "image/png",
            "application/zip",
            "application/octet-stream",
            "video/mp4",
        ] {
            let headers = response(&[("content-type", refused)]);
            assert!(!compressible(&headers, &types), "{refused}");
        }
        assert!(!compressible(&response(&[]), &types));
    }

    #[test]
    fn encoded_and_no_transform_responses_are_left_alone() {
        let types = defaults();
        let json = ("content-type", "application/json");
        assert!(!compressible(
            &response(&[json, ("content-encoding", "gzip")]),
            &types
        ));
        assert!(compressible(
            &response(&[json, ("content-encoding", "identity")]),
            &types
        ));
        assert!(!compressible(
            &response(&[json, ("cache-control", "max-age=60, No-Transform")]),
            &types
        ));
    }

    #[test]
    fn patterns_are_checked() {
        assert!(TypePattern::parse("text/*").is_ok());
        assert!(TypePattern::parse("+json").is_ok());
        assert!(TypePattern::parse("json").is_err());
        assert!(TypePattern::parse("*/*").is_err());
        assert!(TypePattern::parse("text/ html").is_err());
        let packed = TypePattern::parse("image/*").unwrap_err();
        assert!(packed.contains("compressed already"), "{packed}");
        assert!(TypePattern::parse("image/PNG").is_err());
    }
}

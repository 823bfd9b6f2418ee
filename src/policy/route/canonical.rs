//! One spelling per value: the canonical form of a typed path parameter.
//!
//! Werkzeug's converters accept many spellings of one value: `<int:id>` takes `42`, `0042`
//! and `４２` (any Unicode decimal digits, as Python's `\d` and `int()` do) and hands the
//! view the number 42; `<uuid:id>` takes upper and lower case; `<float:x>` takes `1.50` and
//! `01.5`. A cache that keyed on the spelling would keep one entry per alias, which a write
//! to the canonical URL never invalidates and which a client can mint without end. So each
//! converter here accepts exactly what Werkzeug's accepts and yields the value as the view
//! sees it, written one way:
//!
//! | converter | accepts (as Werkzeug) | canonical form |
//! | --- | --- | --- |
//! | `int` | one or more Unicode decimal digits (`\d+`), no sign | ASCII digits, no leading zeros (`0` for zero) |
//! | `float` | `\d+\.\d+`, no sign or exponent | the shortest decimal that reads back as the same double, with a `.` (`42.5`, `1.0`) |
//! | `uuid` | 8-4-4-4-12 ASCII hex digits, either case | lower case |
//! | `string` | any non-empty segment | as sent; lower case when the route says `case = "insensitive"` |
//! | `path` | the rest of the path | as sent (already normalised, see `crate::http::path`) |
//!
//! A float too large for a double (309 digits or more before the point) is not a match: the
//! proxy would have no canonical spelling for it.
//!
//! Values arrive as they appear in a normalised path: unreserved characters plain, anything
//! else percent-escaped (`%EF%BC%94` is `４`). Canonical values are written the same way.

use icu_properties::CodePointMapData;
use icu_properties::props::GeneralCategory;
use std::borrow::Cow;
use std::fmt::Write;

/// A typed Werkzeug converter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    Int,
    Float,
    Uuid,
}

impl Converter {
    /// The converter a pattern names (`<int:x>` names `int`).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "int" => Some(Converter::Int),
            "float" => Some(Converter::Float),
            "uuid" => Some(Converter::Uuid),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Converter::Int => "int",
            Converter::Float => "float",
            Converter::Uuid => "uuid",
        }
    }

    /// The canonical form of `raw` (one segment of a normalised path), or `None` when the
    /// converter does not accept it: then the route does not match.
    pub fn canonical(self, raw: &str) -> Option<Cow<'_, str>> {
        match self {
            Converter::Int => int(raw),
            Converter::Float => float(raw),
            Converter::Uuid => uuid(raw),
        }
    }
}

fn int(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        // The common case: ASCII digits, borrowed, at most trimmed.
        let trimmed = raw.trim_start_matches('0');
        return Some(Cow::Borrowed(if trimmed.is_empty() {
            "0"
        } else {
            trimmed
        }));
    }
    let digits = ascii_digits(&decode(raw)?)?;
    let trimmed = digits.trim_start_matches('0');
    Some(Cow::Owned(if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }))
}

fn float(raw: &str) -> Option<Cow<'_, str>> {
    let text = decode(raw)?;
    let (whole, fraction) = text.split_once('.')?;
    let whole = ascii_digits(whole)?;
    let fraction = ascii_digits(fraction)?;
    let value: f64 = format!("{whole}.{fraction}").parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    // `Display` writes the shortest digits that read back as the same double, never an
    // exponent; Werkzeug's pattern needs the point.
    let mut canonical = value.to_string();
    if !canonical.contains('.') {
        canonical.push_str(".0");
    }
    Some(if canonical == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(canonical)
    })
}

fn uuid(raw: &str) -> Option<Cow<'_, str>> {
    let groups: Vec<&str> = raw.split('-').collect();
    let shaped = groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !shaped {
        return None;
    }
    Some(if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(raw.to_ascii_lowercase())
    } else {
        Cow::Borrowed(raw)
    })
}

/// A string parameter declared case-insensitive: Unicode lower case when the value is
/// UTF-8 (as the origin decodes it), ASCII lower case otherwise. Characters the value sent
/// plain stay plain, the rest are escaped as a normalised path escapes them.
pub fn lowercase(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') && !raw.bytes().any(|b| b.is_ascii_uppercase()) {
        return Cow::Borrowed(raw);
    }
    let bytes = percent_decode(raw);
    let folded = match String::from_utf8(bytes) {
        Ok(text) => text.to_lowercase().into_bytes(),
        Err(e) => e.into_bytes().to_ascii_lowercase(),
    };
    let plain = |b: u8| {
        crate::http::escape::is_unreserved(b)
            || (b.is_ascii() && b != b'%' && raw.as_bytes().contains(&b))
    };
    let mut out = String::with_capacity(raw.len());
    for b in folded {
        if plain(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(out)
    }
}

/// The value as text, escapes decoded; `None` when it is not UTF-8 (Werkzeug decodes with
/// replacement characters, which no typed converter accepts).
fn decode(raw: &str) -> Option<String> {
    String::from_utf8(percent_decode(raw)).ok()
}

fn percent_decode(raw: &str) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// `text` as ASCII digits when every character is a decimal digit (Unicode category Nd,
/// what Python's `\d` and `int()` accept); `None` when one is not, or `text` is empty.
fn ascii_digits(text: &str) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    text.chars()
        .map(|c| digit_value(c).map(|d| char::from(b'0' + d)))
        .collect()
}

/// The value of a decimal digit of any script. Unicode encodes every set of decimal digits
/// as a run of ten consecutive code points, zero first, so a digit's value is its distance
/// from the start of its block of consecutive digits, modulo ten (blocks such as the
/// mathematical digits hold several runs back to back).
fn digit_value(c: char) -> Option<u8> {
    if let Some(d) = c.to_digit(10) {
        return u8::try_from(d).ok();
    }
    let categories = CodePointMapData::<GeneralCategory>::new();
    let is_digit = |c: u32| {
        char::from_u32(c).is_some_and(|c| categories.get(c) == GeneralCategory::DecimalNumber)
    };
    let code = u32::from(c);
    if !is_digit(code) {
        return None;
    }
    let mut start = code;
    while start > 0 && is_digit(start - 1) {
        start -= 1;
    }
    u8::try_from((code - start) % 10).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(c: Converter, raw: &str) -> Option<String> {
        c.canonical(raw).map(Cow::into_owned)
    }

    #[test]
    fn ints_of_every_spelling_are_one_value() {
        let int = |raw| canon(Converter::Int, raw);
        assert_eq!(int("42").as_deref(), Some("42"));
        assert_eq!(int("0042").as_deref(), Some("42"));
        assert_eq!(int("000").as_deref(), Some("0"));
        // Fullwidth ４２, Arabic-Indic ٤٢, mathematical bold 𝟒𝟐, mixed.
        assert_eq!(int("%EF%BC%94%EF%BC%92").as_deref(), Some("42"));
        assert_eq!(int("%D9%A4%D9%A2").as_deref(), Some("42"));
        assert_eq!(int("%F0%9D%9F%92%F0%9D%9F%90").as_deref(), Some("42"));
        assert_eq!(int("0%EF%BC%94%D9%A2").as_deref(), Some("42"));
        // Longer than any machine integer: Python's int() has no limit, neither has this.
        let long = "9".repeat(40);
        assert_eq!(int(&long), Some(long.clone()));
        for bad in [
            "",
            "-1",
            "+1",
            "4_2",
            "42a",
            "4.2",
            "%C2%B2",
            "%E2%85%A0",
            "%FF",
        ] {
            assert_eq!(int(bad), None, "{bad}");
        }
    }

    #[test]
    fn floats_read_back_as_the_same_double() {
        let float = |raw| canon(Converter::Float, raw);
        assert_eq!(float("42.5").as_deref(), Some("42.5"));
        assert_eq!(float("0042.50").as_deref(), Some("42.5"));
        assert_eq!(float("1.0").as_deref(), Some("1.0"));
        assert_eq!(float("1.000").as_deref(), Some("1.0"));
        assert_eq!(float("0.1000000000000000000001").as_deref(), Some("0.1"));
        assert_eq!(float("%EF%BC%94%EF%BC%92.5").as_deref(), Some("42.5"));
        let huge = format!("{}.0", "9".repeat(400));
        for bad in [
            "42",
            ".5",
            "5.",
            "1e5",
            "-1.0",
            "1.2.3",
            "inf",
            "NaN",
            huge.as_str(),
        ] {
            assert_eq!(float(bad), None, "{bad}");
        }
    }

    #[test]
    fn uuids_are_lower_case() {
        let uuid = |raw| canon(Converter::Uuid, raw);
        let lower = "550e8400-e29b-41d4-a716-446655440000";
        assert_eq!(uuid(lower).as_deref(), Some(lower));
        let upper = lower.to_uppercase();
        assert_eq!(uuid(&upper).as_deref(), Some(lower));
        for bad in [
            "550e8400e29b41d4a716446655440000",
            "{550e8400-e29b-41d4-a716-446655440000}",
            "550e8400-e29b-41d4-a716-44665544000g",
            "550e8400-e29b-41d4-a716-4466554400000",
        ] {
            assert_eq!(uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn case_folding_keeps_the_path_s_escaping() {
        assert_eq!(lowercase("alice"), "alice");
        assert!(matches!(lowercase("alice"), Cow::Borrowed(_)));
        assert_eq!(lowercase("Alice"), "alice");
        assert_eq!(lowercase("%C3%84BC"), "%C3%A4bc");
        assert_eq!(lowercase("A;B%3B"), "a;b;");
        // Not UTF-8: only ASCII letters fold.
        assert_eq!(lowercase("A%FF"), "a%FF");
    }
}

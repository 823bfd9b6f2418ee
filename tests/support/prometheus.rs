//! The Prometheus text format, parsed strictly enough to catch a malformed exposition: a
//! scrape of `/metrics` as samples to sum, with the checks tests/metrics.rs runs on every
//! family (one TYPE and HELP each, a family's lines together, histograms complete and
//! cumulative).

use super::get;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
    /// `# TYPE` per family name.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// The sum of samples named `name` whose labels include every `(key, value)` given;
    /// 0 when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum::<f64>()
            + 0.0
    }

    pub fn named(&self, name: &str) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

pub async fn scrape(admin: SocketAddr) -> Scrape {
    let got = get(admin, "/metrics", &[]).await;
    assert_eq!(got.status, 200, "/metrics: {}", got.text());
    let content_type = got.header("content-type");
    assert!(
        content_type.starts_with("text/plain"),
        "/metrics content-type: {content_type}"
    );
    parse(&got.text())
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if text
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// One sample line: `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ', '\t']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut consumed = None;
        loop {
            // Label name up to '=' (or the closing brace, after a trailing comma or none).
            let mut label = String::new();
            let mut closed = false;
            for (i, c) in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' if label.is_empty() => {
                        consumed = Some(i + 1);
                        closed = true;
                        break;
                    }
                    _ => label.push(c),
                }
            }
            if closed {
                break;
            }
            if !valid_label_name(&label) {
                return Err(format!("invalid label name {label:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {label} has no quoted value"));
            }
            let mut value = String::new();
            let mut terminated = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape \\{other:?} in label {label}")),
                    },
                    '"' => {
                        terminated = true;
                        break;
                    }
                    '\n' => return Err("raw newline in a label value".into()),
                    _ => value.push(c),
                }
            }
            if !terminated {
                return Err(format!("unterminated value of label {label}"));
            }
            if labels.insert(label.clone(), value).is_some() {
                return Err(format!("label {label} appears twice"));
            }
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    consumed = Some(i + 1);
                    break;
                }
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
        rest = &after[consumed.ok_or("unterminated label set")?..];
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or("no value")?;
    let value = parse_value(value_text).ok_or_else(|| format!("bad value {value_text:?}"))?;
    if let Some(timestamp) = fields.next()
        && timestamp.parse::<i64>().is_err()
    {
        return Err(format!("bad timestamp {timestamp:?}"));
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The family a sample belongs to: a histogram's or summary's `_bucket`, `_sum`, `_count`
/// belong to the declared family.
pub fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
        {
            return base;
        }
    }
    name
}

/// Parses and validates an exposition; panics naming the line at the first violation.
pub fn parse(text: &str) -> Scrape {
    try_parse(text).unwrap_or_else(|why| panic!("/metrics {why}\n---\n{text}"))
}

/// Parses and validates an exposition: the first violation, naming its line.
pub fn try_parse(text: &str) -> Result<Scrape, String> {
    let mut samples = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    let mut with_samples = BTreeSet::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let fail = |why: &str| Err(format!("line {}: {why}: {line:?}", n + 1));
        if line.trim().is_empty() {
            continue;
        }
        // The family this line belongs to; its lines must be together.
        let family = if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // other comments are allowed
            }
            let name = words.next().unwrap_or("");
            if !valid_metric_name(name) {
                return fail("HELP or TYPE for an invalid name");
            }
            if with_samples.contains(name) {
                return fail("HELP or TYPE after the family's samples");
            }
            if keyword == "HELP" {
                if !helps.insert(name.to_string()) {
                    return fail("a second HELP for one family");
                }
            } else {
                let kind = words.next().unwrap_or("");
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return fail("unknown TYPE");
                }
                if types.insert(name.to_string(), kind.to_string()).is_some() {
                    return fail("a second TYPE for one family");
                }
            }
            name.to_string()
        } else {
            let sample = match parse_sample(line) {
                Ok(sample) => sample,
                Err(why) => return fail(&why),
            };
            let family = family_of(&sample.name, &types).to_string();
            if !series.insert((sample.name.clone(), sample.labels.clone())) {
                return fail("the same series twice");
            }
            let kind = types.get(&family).map(String::as_str);
            if kind == Some("counter") && (sample.value.is_nan() || sample.value < 0.0) {
                return fail("a counter below zero");
            }
            if matches!(kind, Some("counter" | "gauge")) && sample.name != family {
                return fail("a counter or gauge sample named unlike its family");
            }
            with_samples.insert(family.clone());
            samples.push(sample);
            family
        };
        if current.as_deref() != Some(family.as_str()) {
            if closed.contains(&family) {
                return fail("a family's lines are not together");
            }
            if let Some(previous) = current.take() {
                closed.insert(previous);
            }
            current = Some(family);
        }
    }
    Ok(Scrape {
        text: text.to_string(),
        samples,
        types,
    })
}

/// Checks one histogram family; panics at the first violation.
pub fn check_histogram(scrape: &Scrape, family: &str) {
    if let Err(why) = try_check_histogram(scrape, family) {
        panic!("{why}\n---\n{}", scrape.text);
    }
}

/// Checks one histogram family: `_bucket` (with `le`), `_sum` and `_count` for every
/// series, an `le="+Inf"` bucket equal to `_count`, buckets cumulative.
pub fn try_check_histogram(scrape: &Scrape, family: &str) -> Result<(), String> {
    macro_rules! ensure {
        ($ok:expr, $($why:tt)+) => {
            let ok: bool = $ok;
            if !ok {
                return Err(format!($($why)+));
            }
        };
    }
    let bucket = format!("{family}_bucket");
    let mut buckets: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in scrape.named(&bucket) {
        let mut labels = sample.labels.clone();
        let le = labels.remove("le");
        let le = le.as_deref().and_then(parse_value);
        ensure!(le.is_some(), "{bucket} without a numeric le: {sample:?}");
        buckets
            .entry(labels)
            .or_default()
            .push((le.unwrap_or_default(), sample.value));
    }
    ensure!(!buckets.is_empty(), "{family}: no {bucket} samples");
    let count = format!("{family}_count");
    let sum = format!("{family}_sum");
    ensure!(
        scrape.named(&count).count() == buckets.len(),
        "{family}: not one _count per series"
    );
    ensure!(
        scrape.named(&sum).count() == buckets.len(),
        "{family}: not one _sum per series"
    );
    ensure!(
        scrape.named(family).count() == 0,
        "{family}: a histogram has no bare samples"
    );
    for (labels, mut series) in buckets {
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
        let inf = series.iter().find(|(le, _)| *le == f64::INFINITY);
        ensure!(inf.is_some(), "{family}{labels:?}: no le=\"+Inf\" bucket");
        for pair in series.windows(2) {
            ensure!(
                pair[0].1 <= pair[1].1,
                "{family}{labels:?}: buckets are not cumulative: {series:?}"
            );
        }
        let with_labels = |s: &&Sample| s.labels == labels;
        let counted = scrape.named(&count).find(with_labels);
        ensure!(
            counted.is_some_and(|c| inf.is_some_and(|inf| inf.1 == c.value)),
            "{family}{labels:?}: no _count, or the le=\"+Inf\" bucket is not _count"
        );
        let summed = scrape.named(&sum).find(with_labels);
        ensure!(
            summed.is_some_and(|s| s.value >= 0.0),
            "{family}{labels:?}: no _sum, or a negative one"
        );
    }
    Ok(())
}

/// The value of the `/metrics` line that starts with `line_start` (a series and its
/// trailing space), 0 when absent: a quick read of one counter, without the checks of
/// [`scrape`].
pub async fn counter(admin: SocketAddr, line_start: &str) -> u64 {
    let metrics = get(admin, "/metrics", &[]).await.text();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(line_start))
        .map_or(0, |v| v.trim().parse().unwrap())
}

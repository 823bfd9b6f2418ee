//! The stored codings side by side on real documents: compressed size, and the time to
//! encode (once per fill) and to decode (per hit of a client that does not accept the
//! stored coding), through the proxy's own `Coding`.
//!
//!     cargo bench --bench codings -- FILE...
//!
//! `bench/run --compression` runs it on the example API's JSON and a 32 KiB JSON document;
//! docs/benchmarks.md ("Compression") has the figures.

use cachalot::http::coding::Coding;
use std::time::{Duration, Instant};

/// Each measurement repeats for at least this long and reports the median of its batches.
const MEASURE: Duration = Duration::from_millis(300);

fn median_us(mut work: impl FnMut()) -> f64 {
    let mut batches = Vec::new();
    let started = Instant::now();
    while started.elapsed() < MEASURE || batches.len() < 5 {
        let batch = Instant::now();
        for _ in 0..10 {
            work();
        }
        batches.push(batch.elapsed().as_secs_f64() * 1e6 / 10.0);
    }
    batches.sort_by(f64::total_cmp);
    batches[batches.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; the documents are the other arguments.
    let files: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if files.is_empty() {
        eprintln!("usage: cargo bench --bench codings -- FILE...");
        std::process::exit(2);
    }
    println!("document\tbytes\tcoding\tlevel\tstored_bytes\tratio_pct\tencode_us\tdecode_us");
    for file in &files {
        let body = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let name = std::path::Path::new(file)
            .file_name()
            .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
        for (coding, level) in [
            (Coding::Gzip, 1),
            (Coding::Gzip, 6),
            (Coding::Gzip, 9),
            (Coding::Br, 4),
            (Coding::Br, 5),
            (Coding::Br, 9),
            (Coding::Br, 11),
            (Coding::Zstd, 3),
            (Coding::Zstd, 9),
            (Coding::Zstd, 19),
        ] {
            let packed = coding.encode(&body, level);
            assert_eq!(
                coding.decode(&packed, body.len() as u64).unwrap(),
                body,
                "{name}: {coding:?} does not round-trip"
            );
            let encode = median_us(|| {
                std::hint::black_box(coding.encode(std::hint::black_box(&body), level));
            });
            let decode = median_us(|| {
                std::hint::black_box(coding.decode(std::hint::black_box(&packed), 1 << 30))
                    .unwrap();
            });
            println!(
                "{name}\t{}\t{}\t{level}\t{}\t{:.1}\t{encode:.1}\t{decode:.1}",
                body.len(),
                coding.token(),
                packed.len(),
                100.0 * packed.len() as f64 / body.len() as f64,
            );
        }
    }
}

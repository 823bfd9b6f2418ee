//! The `cachalot` binary: parse the command line, hand over to the library.

use clap::Parser;

/// mimalloc: the hot path allocates many small, short-lived buffers (header maps, keys, the
/// Redis reply), across worker threads; mimalloc's per-thread free lists serve those faster
/// than glibc's allocator (measured in `bench/run`, see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cachalot::cli::Cli::parse().run()
}

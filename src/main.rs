//! The `cachalot` binary: parse the command line, hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    cachalot::cli::Cli::parse().run()
}

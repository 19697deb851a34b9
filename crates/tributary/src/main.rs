//! The `tributary` server binary. Everything lives in the library; see `tributary --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tributary::run(tributary::Cli::parse())
}

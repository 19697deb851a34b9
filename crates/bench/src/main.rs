//! The `tributary-bench` binary. Everything lives in the library; see `tributary-bench --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    bench::run(bench::Cli::parse())
}

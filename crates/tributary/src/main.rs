//! The `tributary` server binary. Everything lives in the library; see `tributary --help`.

fn main() -> std::process::ExitCode {
    tributary::main()
}

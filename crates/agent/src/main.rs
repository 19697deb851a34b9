//! The `tributary-agent` binary. Everything lives in the library; see `tributary-agent --help`.

fn main() -> std::process::ExitCode {
    agent::main()
}

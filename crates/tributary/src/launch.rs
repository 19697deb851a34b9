//! A command as a process, the same for `tributary` and `tributary-bench`: its resolved
//! settings, logging on standard error, the async runtime, and an exit status from its outcome.

use std::process::ExitCode;

use crate::logging;
use crate::settings::Settings;

/// Runs `command` with `settings` to an exit status: an error (in the settings or from the
/// command) is printed with its causes and exits 1.
pub fn launch(
    settings: anyhow::Result<Settings>,
    command: impl AsyncFnOnce(Settings) -> anyhow::Result<ExitCode>,
) -> ExitCode {
    let settings = match settings {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(settings)) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! What the benchmarks print about the machine they ran on.

/// Cores, and the CPU model where the system says it.
pub fn describe() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cores} cores ({model}), {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

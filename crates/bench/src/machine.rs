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

/// This process's resident set size in bytes now (`VmRSS` of `/proc/self/status`), where the
/// system says it.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kilobytes = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kilobytes * 1024)
}

/// Samples [`resident_bytes`] every second until `stop` turns true: what the platform's roles
/// hold while a benchmark drives them, to print as [`Residency`].
pub fn sample_residency(
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        loop {
            samples.extend(resident_bytes());
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = stop.changed() => {
                    samples.extend(resident_bytes());
                    return samples;
                }
            }
        }
    })
}

/// Resident memory over a run: where it started, where it stood once the first quarter (the
/// warm-up) was over, its peak after that, and where it ended.
#[derive(Debug, Clone, Copy)]
pub struct Residency {
    pub start: u64,
    pub warm: u64,
    pub peak_after_warm_up: u64,
    pub end: u64,
}

impl Residency {
    pub fn of(samples: &[u64]) -> Option<Self> {
        let start = *samples.first()?;
        let warm_index = samples.len() / 4;
        let warm = samples[warm_index];
        let peak_after_warm_up = samples[warm_index..].iter().copied().max()?;
        Some(Self {
            start,
            warm,
            peak_after_warm_up,
            end: *samples.last()?,
        })
    }
}

impl std::fmt::Display for Residency {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        write!(
            formatter,
            "start {:.1} MiB, after the warm-up (first quarter) {:.1} MiB, peak after it {:.1} MiB, \
             end {:.1} MiB (growth after the warm-up {:+.1} MiB)",
            mib(self.start),
            mib(self.warm),
            mib(self.peak_after_warm_up),
            mib(self.end),
            mib(self.end) - mib(self.warm)
        )
    }
}

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

/// CPU seconds used so far by this process, by the children it has reaped (a baseline tool it
/// ran to completion, such as `pg_recvlogical`) and by a managed cluster's server processes
/// (Linux `/proc`; zero where unreadable).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    at: std::time::Instant,
    own: f64,
    children: f64,
    postgres: Option<f64>,
}

/// CPU used between two [`CpuSample`]s, in seconds, with the wall time between them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuUse {
    pub wall: f64,
    pub own: f64,
    pub children: f64,
    pub postgres: Option<f64>,
}

impl CpuSample {
    /// Now, with the cluster whose data directory is `pgdata` when there is one.
    pub(crate) fn take(pgdata: Option<&std::path::Path>) -> Self {
        let own = process_cpu_seconds("self", false).unwrap_or(0.0);
        Self {
            at: std::time::Instant::now(),
            own,
            children: process_cpu_seconds("self", true).map_or(0.0, |all| all - own),
            postgres: pgdata.map(postgres_cpu_seconds),
        }
    }

    /// What was used since `start`.
    pub(crate) fn since(&self, start: &CpuSample) -> CpuUse {
        CpuUse {
            wall: self.at.duration_since(start.at).as_secs_f64().max(0.001),
            own: self.own - start.own,
            children: self.children - start.children,
            postgres: self
                .postgres
                .zip(start.postgres)
                .map(|(now, then)| now - then),
        }
    }
}

impl std::ops::Add for CpuUse {
    type Output = Self;

    /// Two phases' use together.
    fn add(self, other: Self) -> Self {
        Self {
            wall: self.wall + other.wall,
            own: self.own + other.own,
            children: self.children + other.children,
            postgres: self
                .postgres
                .zip(other.postgres)
                .map(|(one, other)| one + other),
        }
    }
}

/// How long a phase took, the CPU it used and the WAL the platform's cluster wrote during it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    pub(crate) elapsed: std::time::Duration,
    pub(crate) cpu: CpuUse,
    pub(crate) wal_bytes: u64,
}

impl Measured {
    /// Times `phase`.
    pub(crate) async fn of<T>(
        database: &store::Database,
        pgdata: Option<&std::path::Path>,
        phase: impl AsyncFnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<(T, Self)> {
        let cpu_at_start = CpuSample::take(pgdata);
        let wal_at_start = store::service::bench_support::wal_position(&database.service).await?;
        let started = std::time::Instant::now();
        let outcome = phase().await?;
        let elapsed = started.elapsed();
        let cpu = CpuSample::take(pgdata).since(&cpu_at_start);
        let wal_bytes = store::service::bench_support::wal_position(&database.service)
            .await?
            .saturating_sub(wal_at_start);
        Ok((
            outcome,
            Self {
                elapsed,
                cpu,
                wal_bytes,
            },
        ))
    }

    pub(crate) fn rate(&self, events: u64) -> f64 {
        events as f64 / self.elapsed.as_secs_f64()
    }
}

/// User plus system time of a process from `/proc/<pid>/stat`, with that of its reaped
/// children when asked (the postmaster collects its exited backends' time that way). Linux
/// reports it in USER_HZ ticks, 100 a second.
pub(crate) fn process_cpu_seconds(pid: &str, with_children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 to 17 of stat(5): utime, stime, cutime, cstime; `fields` starts at field 3.
    let tick = |field: usize| {
        fields
            .get(field - 3)
            .and_then(|value| value.parse::<f64>().ok())
    };
    let mut ticks = tick(14)? + tick(15)?;
    if with_children {
        ticks += tick(16)? + tick(17)?;
    }
    Some(ticks / 100.0)
}

/// CPU seconds of a managed cluster: its postmaster (with the backends it has reaped) and its
/// live server processes, found by their working directory, which is the data directory.
fn postgres_cpu_seconds(pgdata: &std::path::Path) -> f64 {
    let Ok(pgdata) = std::fs::canonicalize(pgdata) else {
        return 0.0;
    };
    let postmaster = std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().map(|line| line.trim().to_owned()));
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    processes
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.to_owned();
            pid.parse::<u32>().ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            (cwd == pgdata).then(|| {
                let is_postmaster = postmaster.as_deref() == Some(pid.as_str());
                process_cpu_seconds(&pid, is_postmaster).unwrap_or(0.0)
            })
        })
        .sum()
}

//! PostgreSQL settings for Tributary's workload, sized to the machine: a write-heavy stream of
//! small transactions (bronze, the bus log, the read models) beside analytical reads over the
//! rollups. PostgreSQL's defaults are sized for a small shared host (128 MB of buffers, a
//! checkpoint at every gigabyte of WAL), so a busy platform spends its time in checkpoints and
//! reading back pages it just evicted.
//!
//! The managed cluster gets these settings in a file of their own (`tributary-tuning.conf`,
//! rewritten at every start, included by `postgresql.conf`; `ALTER SYSTEM` still overrides
//! them); a given server gets the same advice from `tributary db check`.

use std::path::Path;

use sqlx::{Connection, PgConnection};

/// What the settings are sized from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// Memory available to the server: the machine's, or its control group's limit if lower.
    pub memory_bytes: u64,
    pub cpus: usize,
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

impl Machine {
    /// This machine, as `/proc/meminfo` and the cgroup v2 memory limit say (4 GiB when neither
    /// can be read).
    pub fn detect() -> Self {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total(&text))
            .unwrap_or(4 * GIB);
        let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok());
        Self {
            memory_bytes: limit.map_or(total, |limit| limit.min(total)),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// How a setting's value compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// A size of at least this many bytes.
    Bytes(u64),
    /// A duration of at least this many seconds.
    Seconds(u64),
    /// A fraction of at least this.
    AtLeast(f64),
    /// Anything but `off`.
    On,
}

/// One recommended setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub name: &'static str,
    pub target: Target,
    pub why: &'static str,
}

impl Setting {
    /// The value as `postgresql.conf` writes it.
    pub fn value(&self) -> String {
        match self.target {
            Target::Bytes(bytes) if bytes % GIB == 0 => format!("{}GB", bytes / GIB),
            Target::Bytes(bytes) => format!("{}MB", bytes / MIB),
            Target::Seconds(seconds) if seconds % 60 == 0 => format!("{}min", seconds / 60),
            Target::Seconds(seconds) => format!("{seconds}s"),
            Target::AtLeast(fraction) => format!("{fraction}"),
            Target::On => "on".to_owned(),
        }
    }
}

/// `bytes` rounded down to a whole number of mebibytes, at least `floor`, at most `ceiling`.
fn clamp_mib(bytes: u64, floor: u64, ceiling: u64) -> u64 {
    (bytes.clamp(floor, ceiling) / MIB) * MIB
}

/// The settings for `machine`.
pub fn recommended(machine: &Machine) -> Vec<Setting> {
    let memory = machine.memory_bytes;
    vec![
        Setting {
            name: "shared_buffers",
            target: Target::Bytes(clamp_mib(memory / 4, 128 * MIB, 8 * GIB)),
            why: "a quarter of the memory (at most 8 GB): the recent bronze partitions, the read \
                  models and the rollups stay cached",
        },
        Setting {
            name: "effective_cache_size",
            target: Target::Bytes(clamp_mib(memory / 2, 256 * MIB, 64 * GIB)),
            why: "half the memory: tells the planner the operating system caches the rest, so it \
                  prefers the analytics indexes",
        },
        Setting {
            name: "work_mem",
            target: Target::Bytes(clamp_mib(memory / 512, 4 * MIB, 64 * MIB)),
            why: "sorts and hashes of the grouped series and the rollups stay in memory",
        },
        Setting {
            name: "maintenance_work_mem",
            target: Target::Bytes(clamp_mib(memory / 16, 64 * MIB, GIB)),
            why: "vacuum of the busy tables and index builds of new partitions finish sooner",
        },
        Setting {
            name: "max_wal_size",
            target: Target::Bytes(4 * GIB),
            why: "fewer checkpoints under a steady write stream (each one rewrites every \
                  changed page once more into the WAL)",
        },
        Setting {
            name: "min_wal_size",
            target: Target::Bytes(GIB),
            why: "WAL segments are recycled rather than created under load",
        },
        Setting {
            name: "checkpoint_timeout",
            target: Target::Seconds(15 * 60),
            why: "checkpoints spread out over time instead of every five minutes",
        },
        Setting {
            name: "checkpoint_completion_target",
            target: Target::AtLeast(0.9),
            why: "a checkpoint's writes are spread over the interval",
        },
        Setting {
            name: "wal_compression",
            target: Target::On,
            why: "full-page images after a checkpoint take less WAL",
        },
    ]
}

/// The file the managed cluster reads them from.
pub const CONF_FILE: &str = "tributary-tuning.conf";

/// `settings` as a `postgresql.conf` fragment, for `machine`.
pub fn conf(machine: &Machine, settings: &[Setting]) -> String {
    let mut out = format!(
        "# Written by tributary at every start, for this machine ({} of memory, {} CPUs): see\n\
         # docs/operations.md. ALTER SYSTEM (postgresql.auto.conf) overrides these.\n",
        bytes_text(machine.memory_bytes),
        machine.cpus
    );
    for setting in settings {
        out.push_str(&format!("{} = '{}'\n", setting.name, setting.value()));
    }
    out
}

/// Writes [`conf`] for this machine into `pgdata` and makes sure `postgresql.conf` includes
/// it; the server reads it at its next start. Returns the settings written.
pub fn write_managed(pgdata: &Path) -> std::io::Result<(Machine, Vec<Setting>)> {
    let machine = Machine::detect();
    let settings = recommended(&machine);
    std::fs::write(pgdata.join(CONF_FILE), conf(&machine, &settings))?;
    let main = pgdata.join("postgresql.conf");
    let text = std::fs::read_to_string(&main)?;
    let include = format!("include_if_exists = '{CONF_FILE}'");
    if !text.lines().any(|line| line.trim() == include) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&main)?;
        writeln!(
            file,
            "\n# Tributary's settings for this machine's size.\n{include}"
        )?;
    }
    Ok((machine, settings))
}

/// A size as people read it (`6.0 GiB`).
fn bytes_text(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

/// One setting of a server against its recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    pub name: &'static str,
    /// As the server shows it (`SHOW`).
    pub current: String,
    pub recommended: String,
    pub ok: bool,
    pub why: &'static str,
}

/// The server's value of each recommended setting against it, read as its administrative
/// login.
pub async fn check(
    settings: &crate::ConnectionSettings,
    machine: &Machine,
) -> Result<Vec<Advice>, crate::StoreError> {
    let mut connection = PgConnection::connect_with(&settings.admin).await?;
    let advice = check_on(&mut connection, machine).await?;
    connection.close().await?;
    Ok(advice)
}

/// [`check`] on an open connection.
pub async fn check_on(
    connection: &mut PgConnection,
    machine: &Machine,
) -> Result<Vec<Advice>, sqlx::Error> {
    let settings = recommended(machine);
    let names: Vec<&str> = settings.iter().map(|setting| setting.name).collect();
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select name, setting, unit from pg_settings where name = any($1) order by name",
    )
    .bind(&names)
    .fetch_all(connection)
    .await?;
    Ok(settings
        .into_iter()
        .filter_map(|setting| {
            let (_, current, unit) = rows.iter().find(|row| row.0 == setting.name)?;
            Some(Advice {
                name: setting.name,
                ok: meets(&setting.target, current, unit.as_deref()),
                current: shown(current, unit.as_deref()),
                recommended: setting.value(),
                why: setting.why,
            })
        })
        .collect())
}

/// The size of one `unit` of `pg_settings`, in bytes or seconds.
fn unit_factor(unit: Option<&str>) -> Option<f64> {
    Some(match unit? {
        "B" => 1.0,
        "kB" => 1024.0,
        "8kB" => 8192.0,
        "16kB" => 16384.0,
        "MB" => MIB as f64,
        "16MB" => (16 * MIB) as f64,
        "ms" => 0.001,
        "s" => 1.0,
        "min" => 60.0,
        _ => return None,
    })
}

/// Whether a `pg_settings` value in `unit` meets `target`.
fn meets(target: &Target, value: &str, unit: Option<&str>) -> bool {
    let amount = || -> Option<f64> { Some(value.parse::<f64>().ok()? * unit_factor(unit)?) };
    match *target {
        Target::Bytes(bytes) => amount().is_some_and(|have| have >= bytes as f64),
        Target::Seconds(seconds) => amount().is_some_and(|have| have >= seconds as f64),
        Target::AtLeast(fraction) => value.parse::<f64>().is_ok_and(|have| have >= fraction),
        Target::On => value != "off",
    }
}

/// A `pg_settings` value with its unit, as people read it (`786432 × 8kB` is `6144MB`).
fn shown(value: &str, unit: Option<&str>) -> String {
    match (value.parse::<f64>(), unit, unit_factor(unit)) {
        (Ok(amount), Some(unit), Some(factor)) if unit.ends_with('B') => {
            let bytes = amount * factor;
            if bytes >= GIB as f64 && bytes % GIB as f64 == 0.0 {
                format!("{}GB", bytes / GIB as f64)
            } else {
                format!("{}MB", (bytes / MIB as f64).round())
            }
        }
        (Ok(amount), Some(_), Some(factor)) => format!("{}s", amount * factor),
        _ => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_machine_within_their_bounds() {
        let big = recommended(&Machine {
            memory_bytes: 24 * GIB,
            cpus: 2,
        });
        let value = |settings: &[Setting], name: &str| {
            settings
                .iter()
                .find(|setting| setting.name == name)
                .unwrap()
                .value()
        };
        assert_eq!(value(&big, "shared_buffers"), "6GB");
        assert_eq!(value(&big, "effective_cache_size"), "12GB");
        assert_eq!(value(&big, "work_mem"), "48MB");
        assert_eq!(value(&big, "maintenance_work_mem"), "1GB");
        assert_eq!(value(&big, "max_wal_size"), "4GB");
        assert_eq!(value(&big, "checkpoint_timeout"), "15min");
        let small = recommended(&Machine {
            memory_bytes: 300 * MIB,
            cpus: 1,
        });
        assert_eq!(value(&small, "shared_buffers"), "128MB");
        assert_eq!(value(&small, "work_mem"), "4MB");
        let huge = recommended(&Machine {
            memory_bytes: 512 * GIB,
            cpus: 64,
        });
        assert_eq!(value(&huge, "shared_buffers"), "8GB");
    }

    #[test]
    fn server_values_are_compared_in_their_units() {
        assert!(meets(&Target::Bytes(6 * GIB), "786432", Some("8kB")));
        assert!(!meets(&Target::Bytes(6 * GIB), "16384", Some("8kB")));
        assert!(meets(&Target::Bytes(4 * GIB), "4096", Some("MB")));
        assert!(!meets(&Target::Bytes(4 * GIB), "1024", Some("MB")));
        assert!(meets(&Target::Seconds(900), "900", Some("s")));
        assert!(!meets(&Target::Seconds(900), "300", Some("s")));
        assert!(meets(&Target::AtLeast(0.9), "0.9", None));
        assert!(meets(&Target::On, "pglz", None));
        assert!(!meets(&Target::On, "off", None));
        assert_eq!(shown("786432", Some("8kB")), "6GB");
        assert_eq!(shown("16384", Some("8kB")), "128MB");
        assert_eq!(shown("300", Some("s")), "300s");
        assert_eq!(
            mem_total("MemTotal:       24592876 kB\n"),
            Some(24_592_876 * 1024)
        );
    }
}

//! A private PostgreSQL cluster managed under the platform's data directory.
//!
//! Used when no database URL is configured, and by the test harness. The cluster is created with
//! the PostgreSQL server binaries already installed on the machine (nothing is downloaded), runs
//! with `wal_level=logical` so the same cluster can serve as a demo source database, listens on a
//! unix socket inside the data directory and on one loopback port, and requires a password
//! (SCRAM) for every connection, loopback included.
//!
//! Layout under the data directory:
//!
//! ```text
//! postgres/            the cluster (PGDATA), owned by the server's OS user
//! run/                 the unix socket
//! postgres.log         the server log
//! credentials.json     generated passwords of the admin, app and service roles (mode 0600)
//! ```

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;

use crate::connect::{ConnectionSettings, RoleCredentials};

/// The database the managed cluster serves the platform from.
pub const PLATFORM_DATABASE: &str = "tributary";
/// The cluster's bootstrap superuser.
pub const ADMIN_ROLE: &str = "tributary_admin";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found: install the \
         `postgresql` package (Debian/Ubuntu: `apt-get install postgresql`), put its bin directory \
         on PATH with pg_config, or set TRIBUTARY_PG_BINDIR"
    )]
    BinariesNotFound,
    #[error(
        "running as root, and PostgreSQL refuses to run as root: no unprivileged OS user \
         {0:?} exists to run it as; create one (`useradd --system {0}`) or set TRIBUTARY_PG_OS_USER"
    )]
    NoUnprivilegedUser(String),
    #[error(
        "the PostgreSQL server runs as OS user {user:?}, which cannot enter {dir}: choose a data \
         directory it can reach (for example under /var/lib or /srv) or make {dir} traversable"
    )]
    Unreachable { user: String, dir: PathBuf },
    #[error("{command} failed ({status}); see {log}\n{stderr}")]
    CommandFailed {
        command: &'static str,
        status: String,
        stderr: String,
        log: PathBuf,
    },
    #[error("the PostgreSQL server did not accept connections within {0:?}; see {1}")]
    StartTimeout(Duration, PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {source}")]
    Credentials {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A throwaway cluster for tests of what runs against a customer's database (the agent's
/// source): superuser `postgres`, trust authentication on loopback only, and the given
/// `postgresql.conf` settings (e.g. `wal_level`). Stopped when dropped.
#[derive(Debug)]
pub struct ScratchCluster {
    binaries: PgBinaries,
    user: ServerUser,
    root: PathBuf,
    port: u16,
}

impl ScratchCluster {
    /// Creates and starts a cluster under `root` (an empty directory the caller owns).
    pub fn start(root: &Path, settings: &[(&str, &str)]) -> Result<Self, ClusterError> {
        Self::start_with_files(root, settings, &[])
    }

    /// [`ScratchCluster::start`], with `files` (name, content) placed in the data directory
    /// first, readable by the server only (e.g. a TLS certificate and key for `ssl = on`).
    pub fn start_with_files(
        root: &Path,
        settings: &[(&str, &str)],
        files: &[(&str, &[u8])],
    ) -> Result<Self, ClusterError> {
        let binaries = PgBinaries::locate()?;
        let user = ServerUser::resolve()?;
        fs::create_dir_all(root).map_err(io_error(root))?;
        let root = fs::canonicalize(root).map_err(io_error(root))?;
        let pgdata = root.join("postgres");
        user.check_reachable(&pgdata)?;
        fs::create_dir_all(&pgdata).map_err(io_error(&pgdata))?;
        fs::set_permissions(&pgdata, fs::Permissions::from_mode(0o700))
            .map_err(io_error(&pgdata))?;
        user.give(&pgdata)?;
        let mut command = user.command(binaries.command("initdb"));
        command.arg("-D").arg(&pgdata).args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
            "--auth=trust",
        ]);
        run(command, "initdb", &root.join("postgres.log"))?;
        for (name, content) in files {
            let path = pgdata.join(name);
            write_private(&path, content)?;
            user.give(&path)?;
        }
        let conf = pgdata.join("postgresql.conf");
        let mut text = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
            root.join("run").display()
        );
        for (name, value) in settings {
            text.push_str(&format!("{name} = '{value}'\n"));
        }
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(io_error(&conf))?;
        let port = free_loopback_port().map_err(io_error(&root))?;
        start_server(&binaries, &user, &root, port)?;
        Ok(Self {
            binaries,
            user,
            root,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Immediate shutdown (like a crash): the cluster is thrown away anyway.
    pub fn stop(&self) -> Result<(), ClusterError> {
        stop_server(&self.binaries, &self.user, &self.root, "immediate")
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// `pg_ctl stop -m MODE` on the cluster under `root`, unless no server runs there.
fn stop_server(
    binaries: &PgBinaries,
    user: &ServerUser,
    root: &Path,
    mode: &str,
) -> Result<(), ClusterError> {
    let pgdata = root.join("postgres");
    if running_port(&pgdata).is_none() {
        return Ok(());
    }
    let mut command = user.command(binaries.command("pg_ctl"));
    command
        .arg("stop")
        .arg("-D")
        .arg(&pgdata)
        .args(["-m", mode, "-w", "-t", "60"]);
    run(command, "pg_ctl stop", &root.join("postgres.log"))?;
    Ok(())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the PostgreSQL server binaries are, found the way the README documents.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    /// `TRIBUTARY_PG_BINDIR`, then `pg_config --bindir`, then the newest
    /// `/usr/lib/postgresql/*/bin`; the first that holds initdb, pg_ctl and postgres wins.
    pub fn locate() -> Result<Self, ClusterError> {
        let mut candidates = Vec::new();
        if let Some(dir) = std::env::var_os("TRIBUTARY_PG_BINDIR") {
            candidates.push(PathBuf::from(dir));
        }
        if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
            && output.status.success()
        {
            let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            candidates.push(PathBuf::from(dir));
        }
        let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .collect();
        versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        candidates.extend(versioned.into_iter().map(|(_, dir)| dir));

        Self::first_complete(candidates)
    }

    /// The first directory holding all three server binaries.
    pub fn first_complete(candidates: Vec<PathBuf>) -> Result<Self, ClusterError> {
        candidates
            .into_iter()
            .find(|dir| {
                ["initdb", "pg_ctl", "postgres"]
                    .iter()
                    .all(|binary| dir.join(binary).is_file())
            })
            .map(|bin_dir| Self { bin_dir })
            .ok_or(ClusterError::BinariesNotFound)
    }

    fn command(&self, binary: &str) -> Command {
        Command::new(self.path(binary))
    }

    /// Where one of the server's programs is, e.g. `pg_recvlogical`.
    pub fn path(&self, binary: &str) -> PathBuf {
        self.bin_dir.join(binary)
    }
}

/// Generated passwords of the cluster's roles, kept beside the cluster with mode 0600.
#[derive(Serialize, Deserialize)]
struct StoredCredentials {
    admin_password: String,
    app_password: String,
    service_password: String,
}

/// The OS identity the server runs as: the current user, or an unprivileged one when root.
#[derive(Debug, Clone)]
struct ServerUser {
    name: String,
    uid: Uid,
    gid: Gid,
    switch: bool,
}

impl ServerUser {
    fn resolve() -> Result<Self, ClusterError> {
        let current = Uid::current();
        if !current.is_root() {
            let name = User::from_uid(current)
                .ok()
                .flatten()
                .map_or_else(|| current.to_string(), |user| user.name);
            return Ok(Self {
                name,
                uid: current,
                gid: Gid::current(),
                switch: false,
            });
        }
        let name = std::env::var("TRIBUTARY_PG_OS_USER").unwrap_or_else(|_| "postgres".into());
        match User::from_name(&name) {
            Ok(Some(user)) if !user.uid.is_root() => Ok(Self {
                name,
                uid: user.uid,
                gid: user.gid,
                switch: true,
            }),
            _ => Err(ClusterError::NoUnprivilegedUser(name)),
        }
    }

    fn command(&self, mut command: Command) -> Command {
        if self.switch {
            command.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
        command
    }

    fn give(&self, path: &Path) -> Result<(), ClusterError> {
        if self.switch {
            nix::unistd::chown(path, Some(self.uid), Some(self.gid))
                .map_err(|errno| io_error(path)(errno.into()))?;
        }
        Ok(())
    }

    /// Every ancestor of `dir` must be enterable by the server's OS user.
    fn check_reachable(&self, dir: &Path) -> Result<(), ClusterError> {
        if !self.switch {
            return Ok(());
        }
        for ancestor in dir.ancestors().skip(1) {
            let Ok(metadata) = fs::metadata(ancestor) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            let mode = metadata.mode();
            let enterable = mode & 0o001 != 0
                || (metadata.uid() == self.uid.as_raw() && mode & 0o100 != 0)
                || (metadata.gid() == self.gid.as_raw() && mode & 0o010 != 0);
            if !enterable {
                return Err(ClusterError::Unreachable {
                    user: self.name.clone(),
                    dir: ancestor.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// A private cluster under a data directory. Dropping it does not stop the server; call
/// [`ManagedCluster::stop`] (the platform does on SIGINT/SIGTERM).
#[derive(Debug)]
pub struct ManagedCluster {
    binaries: PgBinaries,
    user: ServerUser,
    root: PathBuf,
    port: u16,
    credentials: ConnectionSettings,
    started_here: bool,
    /// The settings this start gave the server for the machine's size (`None` when it adopted
    /// a running server, which keeps what it started with).
    tuning: Option<(crate::tuning::Machine, Vec<crate::tuning::Setting>)>,
}

impl ManagedCluster {
    /// Creates the cluster on first use and starts it unless it already runs (a platform killed
    /// with SIGKILL leaves its server behind; the next start adopts it rather than failing).
    pub fn start(data_dir: &Path) -> Result<Self, ClusterError> {
        let binaries = PgBinaries::locate()?;
        let user = ServerUser::resolve()?;
        fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
        let root = fs::canonicalize(data_dir).map_err(io_error(data_dir))?;
        user.check_reachable(&root.join("postgres"))?;

        let pgdata = root.join("postgres");
        let credentials = if pgdata.join("PG_VERSION").is_file() {
            read_credentials(&root)?
        } else {
            initialise(&binaries, &user, &root)?
        };

        let (port, tuning) = match running_port(&pgdata) {
            Some(port) => (port, None),
            None => {
                // Sized at every start, so a cluster moved to a larger machine grows with it.
                let tuning = crate::tuning::write_managed(&pgdata).map_err(io_error(&pgdata))?;
                user.give(&pgdata.join(crate::tuning::CONF_FILE))?;
                let port = free_loopback_port().map_err(io_error(&root))?;
                start_server(&binaries, &user, &root, port)?;
                (port, Some(tuning))
            }
        };
        let cluster = Self {
            binaries,
            user,
            credentials: connection_settings(&root, port, credentials),
            root,
            port,
            started_here: tuning.is_some(),
            tuning,
        };
        cluster.wait_until_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    pub fn data_dir(&self) -> &Path {
        &self.root
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// True when this call started the server, false when it adopted a running one.
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// The settings this start gave the server, and the machine they were sized for.
    pub fn tuning(&self) -> Option<&(crate::tuning::Machine, Vec<crate::tuning::Setting>)> {
        self.tuning.as_ref()
    }

    /// How to connect as the admin, app and service roles.
    pub fn connection_settings(&self) -> &ConnectionSettings {
        &self.credentials
    }

    /// Fast shutdown: open sessions are ended, the server exits and nothing is left running.
    pub fn stop(&self) -> Result<(), ClusterError> {
        stop_server(&self.binaries, &self.user, &self.root, "fast")
    }

    fn wait_until_ready(&self, budget: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + budget;
        loop {
            let mut command = self.binaries.command("pg_isready");
            command
                .arg("-h")
                .arg(self.socket_dir())
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-q");
            // pg_isready may be absent from a minimal server install; fall back to the socket.
            let ready = match command.status() {
                Ok(status) => status.success(),
                Err(_) => self
                    .socket_dir()
                    .join(format!(".s.PGSQL.{}", self.port))
                    .exists(),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClusterError::StartTimeout(
                    budget,
                    self.root.join("postgres.log"),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn initialise(
    binaries: &PgBinaries,
    user: &ServerUser,
    root: &Path,
) -> Result<StoredCredentials, ClusterError> {
    let credentials = StoredCredentials {
        admin_password: crate::random_token(24),
        app_password: crate::random_token(24),
        service_password: crate::random_token(24),
    };
    let pgdata = root.join("postgres");
    // A half-made cluster from an interrupted initdb is useless; start over.
    if pgdata.exists() {
        fs::remove_dir_all(&pgdata).map_err(io_error(&pgdata))?;
    }
    fs::create_dir_all(&pgdata).map_err(io_error(&pgdata))?;
    fs::set_permissions(&pgdata, fs::Permissions::from_mode(0o700)).map_err(io_error(&pgdata))?;
    user.give(&pgdata)?;

    let init_dir = root.join("postgres-init");
    fs::create_dir_all(&init_dir).map_err(io_error(&init_dir))?;
    fs::set_permissions(&init_dir, fs::Permissions::from_mode(0o700))
        .map_err(io_error(&init_dir))?;
    user.give(&init_dir)?;
    let password_file = init_dir.join("password");
    write_private(&password_file, credentials.admin_password.as_bytes())?;
    user.give(&password_file)?;

    let mut command = user.command(binaries.command("initdb"));
    command
        .arg("-D")
        .arg(&pgdata)
        .args([
            "-U",
            ADMIN_ROLE,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ])
        .args(["--auth=scram-sha-256"])
        .arg(format!("--pwfile={}", password_file.display()));
    let result = run(command, "initdb", &root.join("postgres.log"));
    let _ = fs::remove_dir_all(&init_dir);
    result?;

    let conf = pgdata.join("postgresql.conf");
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .map_err(io_error(&conf))?;
    writeln!(
        file,
        "\n# Added by tributary: a private cluster reachable only on loopback and its socket.\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{}'\n\
         unix_socket_permissions = 0700\n\
         wal_level = logical\n\
         max_replication_slots = 16\n\
         max_wal_senders = 16\n\
         password_encryption = 'scram-sha-256'\n\
         fsync = on\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n",
        root.join("run").display()
    )
    .map_err(io_error(&conf))?;

    // Written last: its presence with PG_VERSION means the cluster is complete.
    let path = root.join("credentials.json");
    let json = serde_json::to_vec_pretty(&credentials).expect("credentials serialise");
    write_private(&path, &json)?;
    Ok(credentials)
}

fn start_server(
    binaries: &PgBinaries,
    user: &ServerUser,
    root: &Path,
    port: u16,
) -> Result<(), ClusterError> {
    let run_dir = root.join("run");
    fs::create_dir_all(&run_dir).map_err(io_error(&run_dir))?;
    fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o700)).map_err(io_error(&run_dir))?;
    user.give(&run_dir)?;
    let log = root.join("postgres.log");
    if !log.exists() {
        write_private(&log, b"")?;
    }
    user.give(&log)?;

    let mut command = user.command(binaries.command("pg_ctl"));
    command
        .arg("start")
        .arg("-D")
        .arg(root.join("postgres"))
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "60", "-o"])
        .arg(format!("-p {port}"));
    // pg_ctl's server keeps our stdout open otherwise, and whoever reads it would never see EOF.
    command.stdout(std::process::Stdio::null());
    run(command, "pg_ctl start", &log)?;
    Ok(())
}

/// The port of the server running on `pgdata`, if one is running (postmaster.pid names a live
/// process).
fn running_port(pgdata: &Path) -> Option<u16> {
    let pid_file = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let mut lines = pid_file.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    alive.then_some(port)
}

fn read_credentials(root: &Path) -> Result<StoredCredentials, ClusterError> {
    let path = root.join("credentials.json");
    let bytes = fs::read(&path).map_err(io_error(&path))?;
    serde_json::from_slice(&bytes).map_err(|source| ClusterError::Credentials { path, source })
}

fn connection_settings(
    root: &Path,
    port: u16,
    credentials: StoredCredentials,
) -> ConnectionSettings {
    let base = PgConnectOptions::new()
        .socket(root.join("run"))
        .port(port)
        .database(PLATFORM_DATABASE);
    ConnectionSettings {
        admin: base
            .clone()
            .username(ADMIN_ROLE)
            .password(&credentials.admin_password),
        admin_database: "postgres".into(),
        app: RoleCredentials::Password(SecretString::from(credentials.app_password)),
        service: RoleCredentials::Password(SecretString::from(credentials.service_password)),
        manage_role_passwords: true,
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ClusterError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(bytes).map_err(io_error(path))
}

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn run(mut command: Command, name: &'static str, log: &Path) -> Result<Output, ClusterError> {
    let output = command.output().map_err(io_error(log))?;
    if output.status.success() {
        return Ok(output);
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    stderr.truncate(4000);
    Err(ClusterError::CommandFailed {
        command: name,
        status: output.status.to_string(),
        stderr,
        log: log.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_port_ignores_missing_and_dead_servers() {
        let dir = tempfile_dir();
        assert_eq!(running_port(&dir), None);
        // pid 0x7fffffff does not exist.
        fs::write(dir.join("postmaster.pid"), "2147483647\n/x\n1\n5999\n").unwrap();
        assert_eq!(running_port(&dir), None);
        let own = std::process::id();
        fs::write(dir.join("postmaster.pid"), format!("{own}\n/x\n1\n5999\n")).unwrap();
        assert_eq!(running_port(&dir), Some(5999));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_binaries_name_the_package_to_install() {
        let error =
            PgBinaries::first_complete(vec![PathBuf::from("/nonexistent/bin")]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("TRIBUTARY_PG_BINDIR"), "{message}");
    }

    fn tempfile_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tributary-cluster-{}", crate::random_token(8)));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}

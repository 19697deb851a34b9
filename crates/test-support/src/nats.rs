//! A private NATS server with JetStream for tests: started on a free loopback port with a store
//! directory of its own, restartable in place (as after a crash), killed on drop.
//!
//! The binary is `TRIBUTARY_NATS_SERVER_BIN`, else `nats-server` on `PATH`, else
//! `/usr/sbin/nats-server` (Debian's `nats-server` package). Without one the test fails: tests
//! never skip. Tests that do not restart the server may use a shared server named by
//! `TRIBUTARY_TEST_NATS_URL` instead ([`TestNats`]).

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `nats-server -js` child process of this test.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream on a free port of 127.0.0.1, and waits until it accepts
    /// connections.
    ///
    /// # Panics
    ///
    /// When no `nats-server` binary is found, or the server does not come up.
    pub fn start() -> Self {
        let binary = find_binary();
        let dir = tempfile::Builder::new()
            .prefix("tributary-nats-")
            .tempdir()
            .expect("create a temporary directory for nats-server");
        let port = free_port();
        let mut server = Self {
            binary,
            port,
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL (as a crash would) and starts it again on the same port and
    /// store directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The server's combined stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn spawn(&mut self) {
        let log_offset = self.log().len();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the nats-server log file");
        let store = self.dir.path().join("jetstream");
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("start {}: {error}", self.binary.display()));
        spawn_watchdog(child.id());
        self.child = Some(child);
        self.wait_until_ready(log_offset);
    }

    /// Waits until the port accepts connections and the log written since `log_offset` says the
    /// server (JetStream included) is ready.
    fn wait_until_ready(&mut self, log_offset: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                panic!(
                    "nats-server exited with {status} before accepting connections; its log:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok()
                && self
                    .log()
                    .get(log_offset..)
                    .is_some_and(|written| written.contains("Server is ready"))
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "nats-server did not accept connections on port {} within {START_TIMEOUT:?}; \
                     its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A NATS server for a test that does not restart it: the shared one named by
/// `TRIBUTARY_TEST_NATS_URL`, or else a private [`NatsServer`].
#[derive(Debug)]
pub struct TestNats {
    url: String,
    _server: Option<NatsServer>,
}

impl TestNats {
    pub fn start() -> Self {
        match std::env::var("TRIBUTARY_TEST_NATS_URL") {
            Ok(url) if !url.trim().is_empty() => Self {
                url: url.trim().to_owned(),
                _server: None,
            },
            _ => {
                let server = NatsServer::start();
                Self {
                    url: server.url(),
                    _server: Some(server),
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

fn find_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TRIBUTARY_NATS_SERVER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TRIBUTARY_NATS_SERVER_BIN names {}, which is not a file",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(path) = on_path {
        return path;
    }
    let debian = Path::new("/usr/sbin/nats-server");
    if debian.is_file() {
        return debian.to_path_buf();
    }
    panic!(
        "nats-server not found: install the Debian package `nats-server` (apt-get install \
         nats-server), put nats-server on PATH, or set TRIBUTARY_NATS_SERVER_BIN"
    );
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// Kills the server when this test process is gone, however it ends (the server is not our
/// process group's, so a killed test run would leave it behind otherwise).
fn spawn_watchdog(server_pid: u32) {
    let script = "while kill -0 \"$WATCHED\" 2>/dev/null && kill -0 \"$SERVER\" 2>/dev/null; \
                  do sleep 0.5; done; \
                  kill -0 \"$WATCHED\" 2>/dev/null || kill -9 \"$SERVER\" 2>/dev/null";
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("WATCHED", std::process::id().to_string())
        .env("SERVER", server_pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

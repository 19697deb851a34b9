//! Running the built binary and looking at what it leaves behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_tributary");

/// A data directory the PostgreSQL server's OS user can reach (a tempfile dir is 0700).
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("tributary-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn pgdata(&self) -> PathBuf {
        self.0.join("postgres")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn tributary(data_dir: &DataDir, args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("--data-dir")
        .arg(&data_dir.0)
        .args(args)
        .env_remove("TRIBUTARY_DATABASE_URL")
        .output()
        .expect("run tributary")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A running `tributary up`.
pub struct Platform {
    pub child: Child,
    pub web_addr: String,
    /// The metrics listener's address (`--metrics-addr 127.0.0.1:0`, so tests never collide).
    pub metrics_addr: String,
    pub stderr: mpsc::Receiver<String>,
}

impl Platform {
    pub fn start(data_dir: &DataDir) -> Self {
        start_platform_with(data_dir, &[]).0
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.web_addr, path)
    }

    /// `/metrics` from the metrics listener.
    pub fn metrics(&self) -> (u16, String) {
        http_get(&self.metrics_addr, "/metrics")
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn stop_with(
        mut self,
        signal: nix::sys::signal::Signal,
    ) -> (std::process::ExitStatus, Vec<String>) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.stderr.try_iter().collect());
            }
            assert!(
                Instant::now() < deadline,
                "tributary up did not exit within 60s of {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Platform {
    /// A test that ends without stopping its platform (or fails first) stops it here, so no
    /// `tributary up`, and no managed server of it, outlives the test.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_get_with(addr, path, None)
}

/// GET `path` with `Authorization: Bearer <bearer>` when given: (status, body).
pub fn http_get_with(addr: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the web address");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let authorization = bearer
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{authorization}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// POST `body` (JSON) to `path` with `Authorization: Bearer <bearer>`: (status, body).
pub fn http_post_json(addr: &str, path: &str, bearer: &str, body: &str) -> (u16, String) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json"
    );
    let (status, _, body) = http_exchange(addr, &head, body);
    (status, body)
}

/// One HTTP/1.1 exchange: `head` (request line and headers, without the blank line) and
/// `body`; answers (status, the `Set-Cookie` values' `name=value`, body).
fn http_exchange(addr: &str, head: &str, body: &str) -> (u16, Vec<String>, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the web address");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (headers, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let cookies = headers
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie").then(|| {
                value
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
        })
        .collect();
    (status, cookies, body.to_owned())
}

/// Signs in at `/auth` as a browser would (its anti-forgery cookie and token, then the form):
/// the `Cookie` header value of the signed-in session.
pub fn sign_in(addr: &str, email: &str, password: &str) -> String {
    let (status, cookies, page) = http_exchange(addr, "GET /auth HTTP/1.1", "");
    assert_eq!(status, 200, "{page}");
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-in page's anti-forgery token");
    let form = format!(
        "email={}&password={}&csrf={}",
        form_encode(email),
        form_encode(password),
        form_encode(csrf)
    );
    let (status, session, body) = http_exchange(
        addr,
        &format!(
            "POST /auth/sign-in HTTP/1.1\r\nCookie: {}\r\n\
             Content-Type: application/x-www-form-urlencoded",
            cookies.join("; ")
        ),
        &form,
    );
    assert_eq!(status, 303, "signing in as {email}: {body}");
    let mut jar: Vec<String> = cookies;
    for cookie in session {
        let name = cookie.split('=').next().unwrap_or_default().to_owned();
        jar.retain(|kept| !kept.starts_with(&format!("{name}=")));
        jar.push(cookie);
    }
    jar.join("; ")
}

/// GET `path` with the session `cookie` of [`sign_in`]: (status, body).
pub fn http_get_signed_in(addr: &str, path: &str, cookie: &str) -> (u16, String) {
    let (status, _, body) = http_exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nCookie: {cookie}"),
        "",
    );
    (status, body)
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Processes whose working directory is `pgdata`: every PostgreSQL server process of a
/// cluster chdirs there, whatever its title says.
pub fn server_processes(pgdata: &Path) -> Vec<u32> {
    let pgdata = std::fs::canonicalize(pgdata).unwrap_or_else(|_| pgdata.to_owned());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            (cwd == pgdata).then_some(pid)
        })
        .collect()
}

/// Waits until no server process of `pgdata` is left, or fails naming them.
pub fn assert_no_server_left(pgdata: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = server_processes(pgdata);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL processes left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tributary up` with `extra` arguments (such as `--bus nats://...`), and the edge URL it
/// printed (`https://127.0.0.1:PORT/`).
pub fn start_platform_with(data_dir: &DataDir, extra: &[&str]) -> (Platform, String) {
    let mut child = Command::new(BINARY)
        .args([
            "up",
            "--web-addr",
            "127.0.0.1:0",
            "--edge-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data_dir.0)
        .args(extra)
        .env_remove("TRIBUTARY_DATABASE_URL")
        .env_remove("TRIBUTARY_BUS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tributary up");
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let (stderr_tx, stderr_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = stderr_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut web_addr, mut edge_url, mut metrics_addr) = (None, None, None);
    while web_addr.is_none() || edge_url.is_none() || metrics_addr.is_none() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(remaining) {
            Ok(line) => {
                let line = line.trim();
                if let Some(url) = line.strip_prefix("web:") {
                    let url = url
                        .trim()
                        .trim_start_matches("http://")
                        .trim_end_matches('/');
                    web_addr = Some(url.to_owned());
                } else if let Some(rest) = line.strip_prefix("edge:") {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    edge_url = Some(url.to_owned());
                } else if let Some(url) = line.strip_prefix("metrics:") {
                    let url = url.trim().trim_start_matches("http://");
                    metrics_addr = Some(url.trim_end_matches("/metrics").to_owned());
                }
            }
            Err(_) => {
                let _ = child.kill();
                let log: Vec<String> = stderr_rx.try_iter().collect();
                panic!(
                    "tributary up printed no web, edge and metrics address within 90s; stderr:\n{}",
                    log.join("\n")
                );
            }
        }
    }
    let platform = Platform {
        child,
        web_addr: web_addr.expect("seen"),
        metrics_addr: metrics_addr.expect("seen"),
        stderr: stderr_rx,
    };
    (platform, edge_url.expect("seen"))
}

/// The platform database of a managed cluster, as the platform's app and service roles, for
/// checks from a test: the passwords the cluster generated (`credentials.json`) and the port of
/// the running server (`postgres/postmaster.pid`).
pub async fn platform_database(data_dir: &DataDir) -> store::Database {
    let credentials: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.0.join("credentials.json")).unwrap())
            .unwrap();
    let pid_file = std::fs::read_to_string(data_dir.pgdata().join("postmaster.pid")).unwrap();
    let port: u16 = pid_file
        .lines()
        .nth(3)
        .and_then(|line| line.trim().parse().ok())
        .expect("postmaster.pid names the port on its fourth line");
    let url = |role: &str, key: &str| {
        let password = credentials[key].as_str().expect("a generated password");
        secrecy::SecretString::from(format!(
            "postgres://{role}:{password}@127.0.0.1:{port}/tributary"
        ))
    };
    let settings = store::ConnectionSettings::from_url(
        &url("tributary_admin", "admin_password"),
        Some(&url(store::APP_ROLE, "app_password")),
        Some(&url(store::SERVICE_ROLE, "service_password")),
        &data_dir.0,
    )
    .expect("connection settings");
    store::Database::connect(&settings)
        .await
        .expect("connect to the platform database")
}

/// `tributary up` with its demo, once the demo's simulated agent has streamed power readings
/// into the read models (within `limit` of the start); and the demo's `demo.json` (its tenant
/// and the owner's login).
pub async fn demo_with_readings(
    data_dir: &DataDir,
    limit: Duration,
) -> (Platform, serde_json::Value) {
    let started = Instant::now();
    let (platform, _) = start_platform_with(data_dir, &[]);
    let demo: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.0.join("demo.json")).unwrap()).unwrap();
    let tenant: domain::TenantId = demo["tenant_id"].as_str().unwrap().parse().unwrap();
    let database = platform_database(data_dir).await;
    loop {
        let (power, ..) =
            store::service::bench_support::metric_counts(&database.service, tenant, "power_kw")
                .await
                .unwrap();
        if power > 0 {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "no power readings materialized within {limit:?} of the start"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    database.close().await;
    (platform, demo)
}

/// Signs the demo's owner in, in a real browser, on the platform at `base`.
pub async fn sign_in_as_demo_owner(
    client: &test_support::browser::Client,
    base: &str,
    demo: &serde_json::Value,
) {
    test_support::browser::sign_in_as(
        client,
        base,
        demo["web_login"]["email"].as_str().unwrap(),
        demo["web_login"]["password"].as_str().unwrap(),
    )
    .await;
}

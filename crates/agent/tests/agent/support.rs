//! The agent's end-to-end fixtures: a real platform (`tributary up`, which the workspace's test
//! run builds beside this binary), sources created and paired through the real pairing flow,
//! agents run as processes, and bronze read back to compare with the source.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sqlx::{Connection, PgConnection};

pub const AGENT: &str = env!("CARGO_BIN_EXE_tributary-agent");

pub fn platform_binary() -> PathBuf {
    let path = Path::new(AGENT).with_file_name("tributary");
    assert!(
        path.exists(),
        "{} is missing: the agent's end-to-end tests need the platform binary (cargo build -p tributary, or run the whole workspace's tests)",
        path.display()
    );
    path
}

/// A temporary directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "tributary-agent-e2e-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running platform on fixed ports, so that it can be stopped and started again at the same
/// address (an edge outage).
pub struct Platform {
    pub data_dir: PathBuf,
    pub web: String,
    pub edge: String,
    /// The metrics listener (`--metrics-addr 127.0.0.1:0`, so parallel platforms never collide).
    pub metrics: String,
    edge_port: u16,
    child: Option<Child>,
}

impl Platform {
    pub fn start(data_dir: &Path) -> Self {
        let mut platform = Self {
            data_dir: data_dir.to_owned(),
            web: String::new(),
            edge: String::new(),
            metrics: String::new(),
            edge_port: free_port(),
            child: None,
        };
        platform.restart();
        platform
    }

    /// Starts the platform (again), on the same edge port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the platform is running");
        let mut child = Command::new(platform_binary())
            .args([
                "up",
                "--no-demo",
                "--web-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
                "--edge-addr",
            ])
            .arg(format!("127.0.0.1:{}", self.edge_port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env_remove("TRIBUTARY_DATABASE_URL")
            .env_remove("TRIBUTARY_BUS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut web, mut edge, mut metrics) = (None, None, None);
        while web.is_none() || edge.is_none() || metrics.is_none() {
            let line = lines
                .next()
                .expect("tributary up printed its addresses")
                .unwrap();
            let line = line.trim();
            if let Some(url) = line.strip_prefix("web:") {
                web = Some(
                    url.trim()
                        .trim_start_matches("http://")
                        .trim_end_matches('/')
                        .to_owned(),
                );
            } else if let Some(url) = line.strip_prefix("metrics:") {
                metrics = Some(
                    url.trim()
                        .trim_start_matches("http://")
                        .trim_end_matches("/metrics")
                        .to_owned(),
                );
            } else if let Some(rest) = line.strip_prefix("edge:") {
                edge = Some(
                    rest.split_whitespace()
                        .next()
                        .unwrap()
                        .trim_end_matches('/')
                        .to_owned(),
                );
            }
        }
        // Keep draining stdout so the platform never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        self.web = web.unwrap();
        self.edge = edge.unwrap();
        self.metrics = metrics.unwrap();
        self.child = Some(child);
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            assert!(
                child.wait().unwrap().success(),
                "the platform exits 0 on SIGTERM"
            );
        }
    }

    /// SIGKILL: the platform gets no chance to stop its database server, which the next
    /// [`Platform::restart`] adopts.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn tributary(&self, args: &[&str]) -> String {
        let output = Command::new(platform_binary())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .env_remove("TRIBUTARY_DATABASE_URL")
            .env_remove("TRIBUTARY_BUS")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tributary {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A new tenant and source of `kind`; pairs an agent state directory with it and returns
    /// the source id.
    pub fn pair(&self, kind: &str, state_dir: &Path) -> String {
        let created = self.tributary(&[
            "tenant",
            "create",
            "--name",
            "Acme",
            "--industry",
            "energy",
            "--region",
            "eu",
        ]);
        let tenant = created.split_whitespace().nth(2).unwrap().to_owned();
        let source = self.tributary(&[
            "source", "create", "--tenant", &tenant, "--name", kind, "--kind", kind,
        ]);
        let token = source
            .lines()
            .skip_while(|line| !line.starts_with("pairing token"))
            .nth(1)
            .unwrap()
            .trim()
            .to_owned();
        let paired = Command::new(AGENT)
            .args([
                "pair",
                "--edge",
                &self.edge,
                "--token",
                &token,
                "--state-dir",
            ])
            .arg(state_dir)
            .output()
            .unwrap();
        assert!(
            paired.status.success(),
            "{}",
            String::from_utf8_lossy(&paired.stderr)
        );
        // "paired: tenant T, source S; credentials in DIR"
        let out = String::from_utf8_lossy(&paired.stdout).into_owned();
        out.split("source ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A counter or gauge from the platform's `/metrics` (its metrics listener).
    pub fn metric(&self, name: &str) -> f64 {
        http_get(&self.metrics, "/metrics")
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    }

    /// The platform database, as its administrator (reading bronze to check it).
    pub async fn database(&self) -> PgConnection {
        let data_dir = self.data_dir.clone();
        let cluster =
            tokio::task::spawn_blocking(move || store::cluster::ManagedCluster::start(&data_dir))
                .await
                .unwrap()
                .unwrap();
        PgConnection::connect_with(&cluster.connection_settings().admin)
            .await
            .unwrap()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let _ = child.wait();
        }
    }
}

/// A plain HTTP GET; the whole response (status line, headers, body), or "" when nothing
/// listens.
pub fn http_get(address: &str, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

pub fn terminate(child: &Child) {
    // std has no SIGTERM; the agent and the platform stop cleanly on it.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A running agent process.
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    pub fn start(config: &Path) -> Self {
        let log = config.with_extension(format!("{}.log", uuid::Uuid::new_v4().simple()));
        let child = Command::new(AGENT)
            .args(["run", "--config"])
            .arg(config)
            .env("TRIBUTARY_AGENT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            log,
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM; asserts a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&child);
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "the agent exits 0 on SIGTERM:\n{}",
                self.log()
            );
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `tributary-agent ARGS --config CONFIG`.
pub fn agent_command(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(AGENT)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

pub async fn wait_until(what: &str, budget: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + budget;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Tables' rows by table name and key, as JSON objects.
pub type Tables = BTreeMap<String, BTreeMap<String, Map<String, Value>>>;

/// One event read back from bronze.
#[derive(Debug, Clone)]
pub struct BronzeEvent {
    pub op: String,
    pub table: String,
    pub lsn: i64,
    pub seq: i32,
    pub payload: Value,
}

pub async fn bronze_events(platform: &mut PgConnection, source: &str) -> Vec<BronzeEvent> {
    let rows: Vec<(String, String, i64, i32, String)> = sqlx::query_as(
        "select op, schema_name || '.' || table_name, lsn, seq, payload::text \
         from bronze.cdc_events where source_id = $1::text::uuid order by lsn, seq",
    )
    .bind(source)
    .fetch_all(platform)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(op, table, lsn, seq, payload)| BronzeEvent {
            op,
            table,
            lsn,
            seq,
            payload: serde_json::from_str(&payload).unwrap(),
        })
        .collect()
}

/// Applies bronze's events in log order: the tables as the source had them. An update's
/// unchanged columns keep the previous values; one without a previous value is a failure.
pub fn fold(events: &[BronzeEvent]) -> Tables {
    let mut tables = Tables::new();
    for event in events {
        let rows = tables.entry(event.table.clone()).or_default();
        let key = canonical(event.payload["key"].clone()).to_string();
        let after = event.payload["after"]
            .as_object()
            .cloned()
            .map(canonical_map);
        match event.op.as_str() {
            "read" | "insert" => {
                rows.insert(key, after.unwrap());
            }
            "update" => {
                let mut row = after.unwrap();
                if let Some(unchanged) = event.payload.get("unchanged").and_then(Value::as_array) {
                    let previous = rows.get(&key).unwrap_or_else(|| {
                        panic!("an update of {key} with unchanged columns, but no previous row")
                    });
                    for column in unchanged {
                        let column = column.as_str().unwrap();
                        row.insert(column.to_owned(), previous[column].clone());
                    }
                }
                rows.insert(key, row);
            }
            "delete" => {
                rows.remove(&key);
            }
            "truncate" => rows.clear(),
            other => panic!("unexpected op {other}"),
        }
    }
    tables
}

/// The source's tables, as `to_jsonb` prints their rows, keyed like the agent keys them.
pub async fn source_tables(source: &mut PgConnection, tables: &[(&str, &[&str])]) -> Tables {
    let mut out = Tables::new();
    for (table, key) in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select to_jsonb(t)::text from {table} t"
        )))
        .fetch_all(&mut *source)
        .await
        .unwrap();
        let entry = out.entry((*table).to_owned()).or_default();
        for row in rows {
            let row = canonical_map(serde_json::from_str(&row).unwrap());
            let key_map: Map<String, Value> = key
                .iter()
                .map(|column| ((*column).to_owned(), row[*column].clone()))
                .collect();
            entry.insert(Value::Object(key_map).to_string(), row);
        }
    }
    out
}

/// Numbers as doubles, so `15` (to_jsonb of a float) and `15.0` (the agent's) compare equal.
fn canonical(value: Value) -> Value {
    match value {
        Value::Number(number) => number
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Number(number), Value::Number),
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        Value::Object(map) => Value::Object(canonical_map(map)),
        other => other,
    }
}

fn canonical_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .map(|(key, value)| (key, canonical(value)))
        .collect()
}

/// Per table: row count and a checksum of the sorted rows.
pub fn summary(tables: &Tables) -> BTreeMap<String, (usize, String)> {
    use sha2::Digest;
    tables
        .iter()
        .map(|(name, rows)| {
            let mut hasher = sha2::Sha256::new();
            for (key, row) in rows {
                hasher.update(key.as_bytes());
                hasher.update(Value::Object(row.clone()).to_string().as_bytes());
            }
            (
                name.clone(),
                (rows.len(), hex::encode(&hasher.finalize()[..8])),
            )
        })
        .collect()
}

/// Writes an agent configuration for a PostgreSQL source.
pub fn postgres_config(
    dir: &Path,
    edge: &str,
    state_dir: &Path,
    url: &str,
    extra: &str,
) -> PathBuf {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "edge = \"{edge}\"\nstate_dir = \"{}\"\n{extra}\n[source]\nkind = \"postgres\"\nurl = \"{url}\"\nheartbeat_seconds = 1\n",
            state_dir.display()
        ),
    )
    .unwrap();
    config
}

/// The agent's last written status.
pub fn agent_status(state_dir: &Path) -> Value {
    std::fs::read(state_dir.join("status.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// The first row that differs between two sets of tables, for a failure message.
pub fn first_difference(left: &Tables, right: &Tables) -> String {
    for (table, rows) in right {
        let other = left.get(table).cloned().unwrap_or_default();
        for (key, row) in rows {
            match other.get(key) {
                Some(found) if found == row => {}
                found => {
                    return format!("{table} {key}: bronze {found:?}, source {row:?}");
                }
            }
        }
        for key in other.keys() {
            if !rows.contains_key(key) {
                return format!("{table} {key}: in bronze only");
            }
        }
    }
    "none".into()
}

/// A table's rows as the source has them, for a table without a key: each row as canonical
/// JSON text (columns in name order), sorted, identical rows kept: a multiset.
pub async fn source_rows(source: &mut PgConnection, table: &str) -> Vec<String> {
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select to_jsonb(t)::text from {table} t"
    )))
    .fetch_all(&mut *source)
    .await
    .unwrap();
    let mut rows: Vec<String> = rows
        .iter()
        .map(|row| row_text(serde_json::from_str(row).unwrap()))
        .collect();
    rows.sort_unstable();
    rows
}

/// Every row bronze's reads and inserts of `table` carry, as [`source_rows`] prints them.
pub fn bronze_rows(events: &[BronzeEvent], table: &str) -> Vec<String> {
    let mut rows: Vec<String> = events
        .iter()
        .filter(|event| event.table == table && matches!(event.op.as_str(), "read" | "insert"))
        .map(|event| row_text(event.payload["after"].as_object().unwrap().clone()))
        .collect();
    rows.sort_unstable();
    rows
}

fn row_text(row: Map<String, Value>) -> String {
    let sorted: BTreeMap<String, Value> = canonical_map(row).into_iter().collect();
    serde_json::to_string(&sorted).unwrap()
}

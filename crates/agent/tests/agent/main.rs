//! The agent end to end: a real platform (`tributary up`, which the workspace's test run
//! builds beside this binary), a source created and paired, the simulator streaming, bronze
//! filling up, and nothing lost across a SIGKILL of the agent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_tributary-agent");

fn platform_binary() -> PathBuf {
    let path = Path::new(AGENT).with_file_name("tributary");
    assert!(
        path.exists(),
        "{} is missing: the agent's end-to-end test needs the platform binary (cargo build -p tributary, or run the whole workspace's tests)",
        path.display()
    );
    path
}

struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
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

fn tributary(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(platform_binary())
        .arg("--data-dir")
        .arg(data_dir)
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

fn metric(web: &str, name: &str) -> f64 {
    let mut stream = TcpStream::connect(web).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_agent(config: &Path) -> Child {
    Command::new(AGENT)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_paired_simulator_streams_into_bronze_and_survives_sigkill() {
    let scratch = Scratch::new();
    let data_dir = scratch.0.join("platform");
    let mut platform = Command::new(platform_binary())
        .args([
            "up",
            "--web-addr",
            "127.0.0.1:0",
            "--edge-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data_dir)
        .env_remove("TRIBUTARY_DATABASE_URL")
        .env_remove("TRIBUTARY_BUS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(platform.stdout.take().unwrap()).lines();
    let (mut web, mut edge) = (None, None);
    while web.is_none() || edge.is_none() {
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
    let (web, edge) = (web.unwrap(), edge.unwrap());

    let created = tributary(
        &data_dir,
        &[
            "tenant",
            "create",
            "--name",
            "Acme",
            "--industry",
            "energy",
            "--region",
            "eu",
        ],
    );
    let tenant = created.split_whitespace().nth(2).unwrap().to_owned();
    let source = tributary(
        &data_dir,
        &[
            "source",
            "create",
            "--tenant",
            &tenant,
            "--name",
            "sim",
            "--kind",
            "simulator",
        ],
    );
    let token = source
        .lines()
        .skip_while(|line| !line.starts_with("pairing token"))
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();

    let state_dir = scratch.0.join("agent");
    let paired = Command::new(AGENT)
        .args(["pair", "--edge", &edge, "--token", &token, "--state-dir"])
        .arg(&state_dir)
        .output()
        .unwrap();
    assert!(
        paired.status.success(),
        "{}",
        String::from_utf8_lossy(&paired.stderr)
    );
    let config = scratch.0.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "edge = \"{edge}\"\nstate_dir = \"{}\"\n[source]\nkind = \"simulator\"\nevents_per_second = 400\ndevices = 10\n",
            state_dir.display()
        ),
    )
    .unwrap();

    let checked = Command::new(AGENT)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(String::from_utf8_lossy(&checked.stdout).starts_with("ok: the edge"));

    let mut agent = start_agent(&config);
    wait_until("bronze holds the simulator's first events", || {
        metric(&web, "tributary_bronze_events_written_total") >= 800.0
    });
    // SIGKILL mid-stream, then carry on from the spool and the saved position.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let written_before = metric(&web, "tributary_bronze_events_written_total");
    let mut agent = start_agent(&config);
    wait_until("more events arrive after the restart", || {
        metric(&web, "tributary_bronze_events_written_total") >= written_before + 800.0
    });
    nix_term(&agent);
    assert!(
        agent.wait().unwrap().success(),
        "the agent exits 0 on SIGTERM"
    );

    let status = Command::new(AGENT)
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("paired:   tenant"), "{status}");
    // Nothing the agent sent was refused, and bronze holds everything the edge accepted.
    let accepted = metric(&web, "tributary_edge_events_total{status=\"accepted\"}");
    let rejected = metric(&web, "tributary_edge_events_total{status=\"rejected\"}");
    assert_eq!(rejected, 0.0);
    wait_until("bronze holds every accepted event", || {
        metric(&web, "tributary_bronze_events_written_total") >= accepted
    });

    nix_term(&platform);
    assert!(platform.wait().unwrap().success());
}

fn nix_term(child: &Child) {
    // std has no SIGTERM; the agent and the platform stop cleanly on it.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

//! Operations of a running platform: `/metrics` on its own listener, and on the web listener
//! only behind a token; both listeners end on SIGTERM.

use std::net::TcpStream;

use nix::sys::signal::Signal;

use crate::support::{BINARY, DataDir, http_get_with as get_with, start_platform_with};

const TOKEN: &str = "a-metrics-token-of-thirty-two-chars";

#[test]
fn metrics_are_served_on_their_own_listener_and_never_publicly_without_a_token() {
    // A token shorter than 24 characters: the platform refuses to start, naming the setting,
    // before it touches the database.
    let data_dir = DataDir::new();
    let refused = std::process::Command::new(BINARY)
        .args(["up", "--no-demo", "--web-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir.0)
        .env("TRIBUTARY_METRICS_TOKEN", "short-token")
        .env_remove("TRIBUTARY_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("metrics_token (TRIBUTARY_METRICS_TOKEN / --metrics-token)")
            && stderr.contains("at least 24 characters")
            && !stderr.contains("short-token"),
        "{stderr}"
    );
    assert!(!data_dir.pgdata().exists());

    // With a token: the metrics listener answers anyone who reaches it (loopback by default),
    // the web listener only the token.
    let (platform, _) = start_platform_with(&data_dir, &["--no-demo", "--metrics-token", TOKEN]);
    assert_ne!(platform.metrics_addr, platform.web_addr);
    assert!(
        platform.metrics_addr.starts_with("127.0.0.1:"),
        "{}",
        platform.metrics_addr
    );
    let (status, own) = platform.metrics();
    assert_eq!(status, 200);
    assert!(own.contains("tributary_edge_events_total"), "{own}");
    for bearer in [None, Some(""), Some(&TOKEN[1..]), Some("Basic x")] {
        let (status, body) = get_with(&platform.web_addr, "/metrics", bearer);
        assert_eq!(status, 401, "{bearer:?}");
        assert!(!body.contains("tributary_"), "{body}");
    }
    let (status, body) = get_with(&platform.web_addr, "/metrics", Some(TOKEN));
    assert_eq!(status, 200);
    assert!(body.contains("tributary_edge_events_total"), "{body}");
    // The metrics listener serves metrics and nothing else.
    assert_eq!(get_with(&platform.metrics_addr, "/healthz", None).0, 404);

    // SIGTERM ends both listeners and the process cleanly.
    let metrics_addr = platform.metrics_addr.clone();
    let (status, stderr) = platform.stop_with(Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", stderr.join("\n"));
    assert!(
        TcpStream::connect(&metrics_addr).is_err(),
        "still listening"
    );
    assert!(
        !stderr.iter().any(|line| line.contains(TOKEN)),
        "the token was logged"
    );
}

//! The simulator source end to end: paired, streaming into bronze, surviving SIGKILL.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_paired_simulator_streams_into_bronze_and_survives_sigkill() {
    let scratch = Scratch::new();
    let mut platform = Platform::start(&scratch.0.join("platform"));
    let state_dir = scratch.0.join("agent");
    platform.pair("simulator", &state_dir);
    let config = scratch.0.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "edge = \"{}\"\nstate_dir = \"{}\"\n[source]\nkind = \"simulator\"\nevents_per_second = 400\ndevices = 10\n",
            platform.edge,
            state_dir.display()
        ),
    )
    .unwrap();

    let checked = agent_command(&["check"], &config);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );
    assert!(String::from_utf8_lossy(&checked.stdout).starts_with("ok      the edge"));

    let written = "tributary_bronze_events_written_total";
    let mut agent = Agent::start(&config);
    wait_until(
        "bronze holds the simulator's first events",
        Duration::from_secs(60),
        async || platform.metric(written) >= 800.0,
    )
    .await;
    // SIGKILL mid-stream, then carry on from the spool and the saved position.
    agent.kill();
    let written_before = platform.metric(written);
    let mut agent = Agent::start(&config);
    wait_until(
        "more events arrive after the restart",
        Duration::from_secs(60),
        async || platform.metric(written) >= written_before + 800.0,
    )
    .await;
    agent.stop();
    assert!(
        agent.log().contains("connected to the edge edge=")
            && agent.log().contains("protocol=\"HTTP/2\""),
        "the agent speaks HTTP/2 to the edge:\n{}",
        agent.log()
    );

    let status = agent_command(&["status"], &config);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("paired:     tenant"), "{status}");
    assert!(status.contains("state:      stopped"), "{status}");
    // Nothing the agent sent was refused, and bronze holds everything the edge accepted.
    let accepted = platform.metric("tributary_edge_events_total{status=\"accepted\"}");
    let rejected = platform.metric("tributary_edge_events_total{status=\"rejected\"}");
    assert_eq!(rejected, 0.0);
    wait_until(
        "bronze holds every accepted event",
        Duration::from_secs(60),
        async || platform.metric(written) >= accepted,
    )
    .await;
    platform.stop();
}

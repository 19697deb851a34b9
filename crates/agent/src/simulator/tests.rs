//! The simulator's changes: a snapshot first, valid events, ids that a restart reproduces.

use super::*;

#[test]
fn a_fresh_simulator_snapshots_its_fleet_then_streams_changes() {
    let source = SourceId::new_random();
    let mut simulator = Simulator::new(source, 20, 7, Position::start());
    let changes = simulator.next_changes(40);
    assert!(
        changes[..22].iter().all(|change| change.op == Op::Read),
        "2 sites and 20 devices first"
    );
    assert!(changes[22..].iter().all(|change| change.op != Op::Read));
    let mut lsns: Vec<u64> = changes.iter().map(|change| change.lsn.0).collect();
    lsns.dedup();
    assert_eq!(lsns.len(), 40, "every change has its own position");
    for change in &changes {
        assert_eq!(
            change.event_id,
            change.expected_event_id(source),
            "ids derive from the positions"
        );
    }
}

#[test]
fn a_simulator_resumed_from_a_saved_position_continues_where_it_was() {
    let source = SourceId::new_random();
    let mut first = Simulator::new(source, 5, 7, Position::start());
    first.next_changes(10);
    let saved = first.position();
    let next = first.next_changes(5);
    let mut resumed = Simulator::new(source, 5, 7, saved);
    let again = resumed.next_changes(5);
    let lsns =
        |changes: &[ChangeEvent]| changes.iter().map(|change| change.lsn).collect::<Vec<_>>();
    assert_eq!(lsns(&next), lsns(&again));
}

#[test]
fn sessions_start_end_and_are_purged_and_every_change_is_valid() {
    let source = SourceId::new_random();
    let mut simulator = Simulator::new(source, 10, 42, Position::start());
    let changes = simulator.next_changes(2_000);
    let count = |op: Op, table: &str| {
        changes
            .iter()
            .filter(|change| change.op == op && change.table == table)
            .count()
    };
    assert!(count(Op::Insert, "sessions") > 100);
    assert!(count(Op::Update, "sessions") > 100);
    assert!(count(Op::Delete, "sessions") > 10);
    assert!(count(Op::Update, "devices") > 100);
    assert!(count(Op::Insert, "readings") > 1000);
    // Each change passes the edge's own validation.
    let batch = protocol::EventBatch {
        source_id: None,
        tenant_id: None,
        events: changes[..1000].to_vec(),
        types: Vec::new(),
    };
    let body = serde_json::to_vec(&batch).unwrap();
    let decoded = protocol::decode_batch(
        &body,
        domain::TenantId::new_random(),
        source,
        &protocol::Limits::default(),
    )
    .unwrap();
    assert_eq!(decoded.valid().count(), 1000);
}

#[test]
fn the_seed_decides_the_values() {
    let source = SourceId::new_random();
    let values = |seed: u64| {
        let mut simulator = Simulator::new(source, 10, seed, Position::start());
        simulator
            .next_changes(200)
            .into_iter()
            .filter_map(|change| change.after?.get("value").cloned())
            .collect::<Vec<_>>()
    };
    assert_eq!(values(1), values(1));
    assert_ne!(values(1), values(2));
}

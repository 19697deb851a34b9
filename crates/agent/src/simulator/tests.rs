//! The simulator's changes: a snapshot first, valid events, ids that a restart reproduces.

use super::*;

#[test]
fn a_fresh_simulator_snapshots_its_fleet_then_streams_changes() {
    let source = SourceId::new_random();
    let mut simulator = Simulator::new(source, 20, Position::start());
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
    let mut first = Simulator::new(source, 5, Position::start());
    first.next_changes(10);
    let saved = first.position();
    let next = first.next_changes(5);
    let mut resumed = Simulator::new(source, 5, saved);
    let again = resumed.next_changes(5);
    let lsns =
        |changes: &[ChangeEvent]| changes.iter().map(|change| change.lsn).collect::<Vec<_>>();
    assert_eq!(lsns(&next), lsns(&again));
}

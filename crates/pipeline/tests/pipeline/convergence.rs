//! The convergence property: any permutation of an event sequence, with random duplicates and
//! random batch boundaries (from one event to the whole sequence, so duplicates and reorderings
//! fall both inside one batch and across batches), materializes exactly the read models (rows,
//! extras, metrics_min) of applying the sequence once, in order, one event at a time. The
//! sequences mix two tables feeding devices, readings, and truncates of each table.

use domain::{SourceId, TenantId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use store::Database;
use test_support::TestDatabase;

use crate::materializer::{base_time, checksums, event, materialize};

/// One generated change, before it is given a tenant and a position.
#[derive(Debug, Clone)]
enum Step {
    Device {
        op: protocol::Op,
        /// `devices` or `chargers`: both feed devices, and may feed the same one.
        table: &'static str,
        device: u8,
        fields: Vec<(String, Value)>,
        unchanged: Vec<String>,
    },
    Reading {
        op: protocol::Op,
        reading: u8,
        device: u8,
        value: i32,
        second: i64,
    },
    Truncate {
        table: &'static str,
    },
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1000i32..1000).prop_map(|n| json!(n)),
        (-1000i32..1000).prop_map(|n| json!(f64::from(n) / 8.0)),
        "[a-z]{0,6}".prop_map(Value::String),
        (0u32..5).prop_map(|day| json!(format!("2026-11-0{}T12:00:00Z", day + 1))),
        Just(json!({ "nested": [1, "two"] })),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let columns = ["name", "status", "last_seen_at", "x", "y"];
    let device = (
        prop_oneof![
            Just(protocol::Op::Insert),
            Just(protocol::Op::Update),
            Just(protocol::Op::Update),
            Just(protocol::Op::Delete),
        ],
        prop_oneof![3 => Just("devices"), 1 => Just("chargers")],
        0u8..3,
        proptest::collection::vec((0usize..columns.len(), field_value()), 0..5),
        proptest::collection::vec(0usize..columns.len(), 0..2),
    )
        .prop_map(move |(op, table, device, fields, unchanged)| Step::Device {
            op,
            table,
            device,
            fields: fields
                .into_iter()
                .map(|(column, value)| {
                    // Typed columns get values of their type, so no event is dead-lettered.
                    let value = match columns[column] {
                        "name" | "status" => match value {
                            Value::Object(_) | Value::Array(_) => json!("obj"),
                            other => other,
                        },
                        "last_seen_at" => json!("2026-11-20T10:00:00Z"),
                        _ => value,
                    };
                    (columns[column].to_owned(), value)
                })
                .collect(),
            unchanged: unchanged
                .into_iter()
                .map(|c| columns[c].to_owned())
                .collect(),
        });
    let reading = (
        prop_oneof![
            Just(protocol::Op::Insert),
            Just(protocol::Op::Update),
            Just(protocol::Op::Delete),
        ],
        0u8..4,
        0u8..2,
        -50i32..50,
        0i64..180,
    )
        .prop_map(|(op, reading, device, value, second)| Step::Reading {
            op,
            reading,
            device,
            value,
            second,
        });
    let truncate = prop_oneof![
        3 => Just("devices"),
        1 => Just("chargers"),
        1 => Just("readings"),
    ]
    .prop_map(|table| Step::Truncate { table });
    prop_oneof![6 => device, 4 => reading, 1 => truncate]
}

fn envelopes(tenant: TenantId, source: SourceId, steps: &[Step]) -> Vec<protocol::Envelope> {
    steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let lsn = 1000 + index as u64 * 8;
            match step {
                Step::Device {
                    op,
                    table,
                    device,
                    fields,
                    unchanged,
                } => {
                    let id = format!("d{device}");
                    let mut after = Map::new();
                    after.insert("device_id".into(), json!(id));
                    for (column, value) in fields {
                        after.insert(column.clone(), value.clone());
                    }
                    let unchanged: Vec<&str> = if *op == protocol::Op::Update {
                        unchanged
                            .iter()
                            .map(String::as_str)
                            .filter(|column| !after.contains_key(*column))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let after = (*op != protocol::Op::Delete).then_some(Value::Object(after));
                    event(
                        tenant,
                        source,
                        *op,
                        table,
                        lsn,
                        json!({ "device_id": id }),
                        after,
                        &unchanged,
                    )
                }
                Step::Reading {
                    op,
                    reading,
                    device,
                    value,
                    second,
                } => {
                    let measured = (base_time() + time::Duration::seconds(*second))
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap();
                    let after = (*op != protocol::Op::Delete).then(|| {
                        json!({
                            "reading_id": reading, "device_id": format!("d{device}"),
                            "metric": "power_kw",
                            // Tenths have no exact binary form: a sum that depended on the
                            // order readings were added in would show.
                            "value": f64::from(*value) / 10.0,
                            "measured_at": measured,
                        })
                    });
                    event(
                        tenant,
                        source,
                        *op,
                        "readings",
                        lsn,
                        json!({ "reading_id": reading }),
                        after,
                        &[],
                    )
                }
                Step::Truncate { table } => event(
                    tenant,
                    source,
                    protocol::Op::Truncate,
                    table,
                    lsn,
                    json!({}),
                    None,
                    &[],
                ),
            }
        })
        .collect()
}

async fn new_tenant(database: &Database) -> TenantId {
    crate::support::tenant(database, "Prop").await
}

#[test]
fn any_order_and_duplication_gives_the_in_order_read_models() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_test_database, database) = runtime.block_on(async {
        let test_database = TestDatabase::new().await;
        let database = test_database.connect().await;
        (test_database, database)
    });
    let strategy = proptest::collection::vec(step(), 1..40).prop_flat_map(|steps| {
        let count = steps.len();
        (
            Just(steps),
            // Each event's copies: at least one, sometimes three.
            proptest::collection::vec(1usize..4, count),
            any::<u64>(),
            proptest::collection::vec(prop_oneof![3 => 1usize..8, 1 => 8usize..128], 1..10),
        )
    });
    let mut runner = TestRunner::new(Config {
        cases: 40,
        ..Config::default()
    });
    runner
        .run(&strategy, |(steps, copies, seed, batch_sizes)| {
            runtime.block_on(async {
                let source = SourceId::new_random();
                let in_order = new_tenant(&database).await;
                for envelope in envelopes(in_order, source, &steps) {
                    let outcome = materialize(&database, &[envelope]).await;
                    assert!(outcome.dead_lettered.is_empty(), "{outcome:?}");
                }
                let shuffled = new_tenant(&database).await;
                let mut delivered: Vec<protocol::Envelope> = Vec::new();
                for (envelope, copies) in envelopes(shuffled, source, &steps).iter().zip(&copies) {
                    for _ in 0..*copies {
                        delivered.push(envelope.clone());
                    }
                }
                // A deterministic shuffle from the generated seed (Fisher-Yates, xorshift).
                let mut state = seed | 1;
                for index in (1..delivered.len()).rev() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    delivered.swap(index, (state % (index as u64 + 1)) as usize);
                }
                let mut rest = delivered.as_slice();
                let mut sizes = batch_sizes.iter().cycle();
                while !rest.is_empty() {
                    let size = (*sizes.next().unwrap()).min(rest.len());
                    let (batch, remaining) = rest.split_at(size);
                    materialize(&database, batch).await;
                    rest = remaining;
                }
                let expected = checksums(&database, in_order).await;
                let actual = checksums(&database, shuffled).await;
                prop_assert_eq!(actual, expected);
                Ok(())
            })
        })
        .unwrap();
}

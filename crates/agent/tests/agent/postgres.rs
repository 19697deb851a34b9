//! The PostgreSQL source end to end: a real source cluster with `wal_level=logical` started
//! here, the agent as a process, the real platform's edge, and bronze compared with the source.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use store::sources::SourceAction;
use test_support::SourceCluster;

use crate::support::*;

const MINUTE: Duration = Duration::from_secs(60);

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap()
}

async fn run(source: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(source)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

/// Waits until bronze, applied in log order, equals the source's tables; fails when bronze
/// stops growing for two minutes short of that (a million-row snapshot takes longer than that
/// to arrive in a debug build, and is still fine while it arrives).
async fn wait_for_bronze(
    platform: &Platform,
    source_id: &str,
    source: &mut PgConnection,
    tables: &[(&str, &[&str])],
    agent: &mut Agent,
) -> Vec<BronzeEvent> {
    let mut database = platform.database().await;
    let expected = source_tables(source, tables).await;
    let mut deadline = std::time::Instant::now() + 2 * MINUTE;
    let mut arrived = 0;
    loop {
        let started = std::time::Instant::now();
        let events = bronze_events(&mut database, source_id).await;
        if events.len() > arrived {
            arrived = events.len();
            deadline = std::time::Instant::now() + 2 * MINUTE;
        }
        let mut folded = fold(&events);
        folded.retain(|table, _| expected.contains_key(table));
        for table in expected.keys() {
            folded.entry(table.clone()).or_default();
        }
        if folded == expected {
            return events;
        }
        assert!(agent.is_running(), "the agent stopped:\n{}", agent.log());
        if std::time::Instant::now() > deadline {
            panic!(
                "bronze does not match the source: bronze {:?}, source {:?}\nfirst difference: {}\nagent log:\n{}",
                summary(&folded),
                summary(&expected),
                first_difference(&folded, &expected),
                agent.log()
            );
        }
        // Reading a large bronze back is itself slow: poll no more often than it takes.
        tokio::time::sleep(started.elapsed().max(Duration::from_millis(500))).await;
    }
}

/// No change was stored twice under different ids: every (commit LSN, sequence) once.
fn assert_no_duplicates(events: &[BronzeEvent]) {
    let mut positions: Vec<(i64, i32)> =
        events.iter().map(|event| (event.lsn, event.seq)).collect();
    let total = positions.len();
    positions.dedup();
    assert_eq!(positions.len(), total, "a change is in bronze twice");
}

/// Until the agent created its slot: changes from now on are streamed, not snapshotted.
async fn wait_for_slot(source: &mut PgConnection) {
    wait_until("the agent creates its slot", MINUTE, async || {
        sqlx::query_scalar::<_, bool>(
            "select exists (select 1 from pg_replication_slots where slot_name = 'tributary')",
        )
        .fetch_one(&mut *source)
        .await
        .unwrap()
    })
    .await;
}

struct Setup {
    /// Kept for their lifetimes: the directories and the source server.
    _scratch: Scratch,
    _cluster: SourceCluster,
    platform: Platform,
    source_id: String,
    state_dir: std::path::PathBuf,
    config: std::path::PathBuf,
    url: String,
}

async fn setup(schema: &str, config_extra: &str) -> (Setup, PgConnection) {
    let scratch = Scratch::new();
    let cluster = SourceCluster::logical();
    let url = cluster.url("postgres");
    let mut source = connect(&url).await;
    run(&mut source, schema).await;
    let platform = Platform::start(&scratch.0.join("platform"));
    let state_dir = scratch.0.join("agent");
    let source_id = platform.pair("postgres", &state_dir);
    let config = postgres_config(&scratch.0, &platform.edge, &state_dir, &url, config_extra);
    (
        Setup {
            _scratch: scratch,
            _cluster: cluster,
            platform,
            source_id,
            state_dir,
            config,
            url,
        },
        source,
    )
}

const DEVICES: &str = "create table devices (id int primary key, name text not null, active boolean, \
                       attrs jsonb, weight double precision); \
                       create table readings (id bigserial primary key, device int, value numeric(12,3), \
                       note text); \
                       create table scratchpad (k text primary key, v int); \
                       insert into devices select i, 'device ' || i, i % 2 = 0, \
                         jsonb_build_object('rack', i % 7, 'tags', jsonb_build_array('a', i)), i * 1.5 \
                       from generate_series(1, 1000) i; \
                       insert into readings (device, value, note) select i % 1000 + 1, i / 7.0, \
                         case when i % 3 = 0 then null else 'n' || i end from generate_series(1, 3000) i; \
                       insert into scratchpad select 'k' || i, i from generate_series(1, 50) i;";

const DEVICE_TABLES: &[(&str, &[&str])] = &[
    ("public.devices", &["id"]),
    ("public.readings", &["id"]),
    ("public.scratchpad", &["k"]),
];

#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_and_the_stream_reproduce_the_source_exactly() {
    let health = free_port();
    let (mut setup, mut source) = setup(
        DEVICES,
        &format!("[health]\nlisten = \"127.0.0.1:{health}\""),
    )
    .await;
    let check = agent_command(&["check"], &setup.config);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{report}");
    assert!(report.contains("ok      wal_level = logical"), "{report}");
    assert!(
        report.contains("\"public\".\"devices\" can be captured"),
        "{report}"
    );

    let mut agent = Agent::start(&setup.config);
    wait_for_slot(&mut source).await;
    // Changes while the snapshot is read and after: every kind of change.
    for statement in [
        "insert into devices values (5001, 'late', true, '{\"x\": 1}', 0.25)",
        "update devices set name = name || '!', weight = weight + 1 where id % 10 = 0",
        "delete from devices where id between 900 and 950",
        "update devices set id = id + 10000 where id = 3",
        "insert into readings (device, value, note) select 1, 12345678.125, 'x' from generate_series(1, 500)",
        "begin; update readings set note = null where id < 100; delete from readings where id > 3200; commit",
        "truncate scratchpad",
        "insert into scratchpad values ('after truncate', 1)",
    ] {
        run(&mut source, statement).await;
    }
    let events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        DEVICE_TABLES,
        &mut agent,
    )
    .await;
    assert_no_duplicates(&events);
    let ops: std::collections::BTreeSet<&str> =
        events.iter().map(|event| event.op.as_str()).collect();
    assert_eq!(
        ops,
        ["delete", "insert", "read", "truncate", "update"]
            .into_iter()
            .collect()
    );
    let reads = |table: &str| {
        events
            .iter()
            .filter(|event| event.op == "read" && event.table == table)
            .count()
    };
    assert_eq!(
        reads("public.devices"),
        1000,
        "the snapshot read every row once"
    );
    assert_eq!(
        reads("public.readings"),
        3000,
        "the snapshot read every row once"
    );
    // TRUNCATE is not MVCC-safe: a snapshot reading the table after it committed sees it empty,
    // and the streamed truncate that follows makes the end state the same either way.
    assert!(matches!(reads("public.scratchpad"), 0 | 50));
    // Types travel with the events.
    let insert = events
        .iter()
        .find(|event| event.op == "insert" && event.table == "public.devices")
        .unwrap();
    assert_eq!(insert.payload["types"]["attrs"], json!("jsonb"));
    assert_eq!(insert.payload["after"]["attrs"], json!({"x": 1}));

    // The agent confirmed the acknowledged position to the source.
    wait_until("the slot's confirmed position advances", MINUTE, async || {
        let confirmed: Option<i64> = sqlx::query_scalar(
            "select (confirmed_flush_lsn - '0/0')::int8 from pg_replication_slots where slot_name = 'tributary'",
        )
        .fetch_one(&mut source)
        .await
        .unwrap();
        confirmed.unwrap_or(0) >= events.last().unwrap().lsn
    })
    .await;
    // The loopback health port serves the status and Prometheus metrics.
    let metrics = http_get(&format!("127.0.0.1:{health}"), "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("tributary_agent_spool_bytes "),
        "{metrics}"
    );
    assert!(
        metrics.contains("tributary_agent_slot_retained_wal_bytes "),
        "{metrics}"
    );
    let healthz = http_get(&format!("127.0.0.1:{health}"), "/healthz");
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert!(healthz.contains("\"state\": \"streaming\""), "{healthz}");

    // The status heartbeat reached the platform, stored for the source.
    let mut database = setup.platform.database().await;
    wait_until("the platform holds the agent's status", MINUTE, async || {
        let row: Option<(String, Option<i64>, Option<Value>)> = sqlx::query_as(
            "select state, acked_lsn, slot from control.source_status where source_id = $1::text::uuid",
        )
        .bind(&setup.source_id)
        .fetch_optional(&mut database)
        .await
        .unwrap();
        row.is_some_and(|(state, acked, slot)| {
            state == "streaming"
                && acked == Some(events.last().unwrap().lsn)
                && slot.is_some_and(|slot| slot["name"] == json!("tributary"))
        })
    })
    .await;
    agent.stop();
    let status = agent_command(&["status"], &setup.config);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("slot:       tributary"), "{status}");
    setup.platform.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_snapshot_continues_after_the_last_spooled_row() {
    let (mut setup, mut source) = setup(
        "create table big (id int primary key, label text); \
         insert into big select g, 'row ' || g from generate_series(1, 120000) g",
        "",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    // Killed as soon as its first batch of snapshot rows is spooled (or already sent).
    let spool = setup.state_dir.join("spool");
    let deadline = std::time::Instant::now() + MINUTE;
    while !setup.state_dir.join("acked.json").exists()
        && !std::fs::read_dir(&spool).is_ok_and(|mut files| {
            files.any(|file| {
                file.is_ok_and(|file| file.path().extension() == Some("batch".as_ref()))
            })
        })
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot batch:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    agent.kill();
    run(
        &mut source,
        "update big set label = 'changed' where id % 1000 = 0",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    let events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.big", &["id"])],
        &mut agent,
    )
    .await;
    assert_no_duplicates(&events);
    // Every row read exactly once, across the two runs.
    let reads = events.iter().filter(|event| event.op == "read").count();
    assert_eq!(reads, 120_000);
    assert!(
        agent.log().contains("continuing the interrupted snapshot"),
        "{}",
        agent.log()
    );
    agent.stop();
    setup.platform.stop();
}

/// Rows of each table in [`killed_snapshot`]: the size at which an interrupted keyless snapshot
/// was seen to duplicate.
const KEYED_ROWS: u64 = 1_000_000;

/// [`KEYED_ROWS`] rows keyed, then as many without a key, every distinct keyless row 35 times
/// over (so that an interruption mostly falls inside a run of identical rows).
fn killed_snapshot() -> String {
    format!(
        "create table a_keyed (id int primary key, label text, weight float8); \
         insert into a_keyed select g, 'row ' || g, g * 0.5 from generate_series(1, {KEYED_ROWS}) g; \
         create table b_keyless (device int, value float8, note text); \
         insert into b_keyless select (g % 28571) / 20, (g % 28571) * 0.25, \
           case when g % 28571 % 7 = 0 then null else 'n' || (g % 28571) end \
         from generate_series(1, {KEYED_ROWS}) g"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_killed_mid_table_is_replaced_not_duplicated_for_keyed_and_keyless_tables() {
    let (mut setup, mut source) = setup(&killed_snapshot(), "").await;
    // Killed once inside each table's snapshot, at a random row past the first chunks.
    let random_row =
        || 20_000 + (uuid::Uuid::new_v4().as_u128() % (KEYED_ROWS as u128 * 3 / 4)) as u64;
    let keyed_at = random_row();
    let keyless_at = KEYED_ROWS + random_row();
    let mut agent = Agent::start(&setup.config);
    for (table, at, end) in [
        ("a_keyed", keyed_at, KEYED_ROWS),
        ("b_keyless", keyless_at, 2 * KEYED_ROWS),
    ] {
        let status = wait_for_status(
            &setup.state_dir,
            &format!("the snapshot passed row {at}"),
            &mut agent,
            |status| {
                status["snapshot_rows"]
                    .as_u64()
                    .is_some_and(|rows| rows >= at)
            },
        )
        .await;
        agent.kill();
        let rows = status["snapshot_rows"].as_u64().unwrap();
        eprintln!("killed the agent in the snapshot of {table} after {rows} rows");
        assert!(
            rows < end,
            "the kill came after {table}'s snapshot ended ({rows} rows): the test tests nothing"
        );
        // Rows inserted after the consistent point, before and after where the read stopped
        // and identical to rows already there: the stream brings them, the continued read
        // must not.
        run(
            &mut source,
            &format!(
                "insert into b_keyless select (g % 28571) / 20, (g % 28571) * 0.25, \
                   case when g % 28571 % 7 = 0 then null else 'n' || (g % 28571) end \
                 from generate_series(1, 28571, 97) g; \
                 insert into b_keyless values (-1, 0, 'after the kill in {table}'), \
                   (99999, 0, 'after the kill in {table}')"
            ),
        )
        .await;
        agent = Agent::start(&setup.config);
    }
    // Caught up: the keyed table as the source has it, and every snapshot row in bronze.
    wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.a_keyed", &["id"])],
        &mut agent,
    )
    .await;
    wait_for_status(&setup.state_dir, "it caught up", &mut agent, |status| {
        status["caught_up"] == json!(true)
    })
    .await;
    let mut database = setup.platform.database().await;
    let events = bronze_events(&mut database, &setup.source_id).await;
    assert_no_duplicates(&events);
    let reads = events.iter().filter(|event| event.op == "read").count();
    assert_eq!(reads as u64, 2 * KEYED_ROWS, "every row read exactly once");
    // The keyed table's latest images, and the keyless table as a multiset, equal the source.
    let expected = source_tables(&mut source, &[("public.a_keyed", &["id"])]).await;
    let mut folded = fold(&events);
    folded.retain(|table, _| expected.contains_key(table));
    assert_eq!(summary(&folded), summary(&expected));
    let source_keyless = source_rows(&mut source, "public.b_keyless").await;
    let bronze_keyless = bronze_rows(&events, "public.b_keyless");
    assert_eq!(bronze_keyless.len(), source_keyless.len());
    assert!(
        bronze_keyless == source_keyless,
        "the keyless table differs: first bronze row not in the source {:?}",
        bronze_keyless
            .iter()
            .zip(&source_keyless)
            .find(|(bronze, source)| bronze != source)
    );
    let log = agent.log();
    assert!(log.contains("continuing the interrupted snapshot"), "{log}");
    let continued = log
        .lines()
        .find(|line| line.contains("continuing a table without a unique key"));
    assert!(continued.is_some(), "{log}");
    eprintln!("{}", continued.unwrap_or_default());
    agent.stop();
    setup.platform.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_nine_three_times_in_a_100k_row_stream_loses_and_duplicates_nothing() {
    let (mut setup, mut source) = setup(
        "create table ticks (id bigserial primary key, device int not null, value float8, note text)",
        "",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    let url = setup.url.clone();
    let writer = tokio::spawn(async move {
        let mut writer = connect(&url).await;
        for batch in 0..1000 {
            run(
                &mut writer,
                &format!(
                    "insert into ticks (device, value, note) select g % 50, g * 0.5, 'batch {batch}' \
                     from generate_series(1, 100) g"
                ),
            )
            .await;
        }
    });
    for round in 0..3 {
        let pause = 700 + (uuid::Uuid::new_v4().as_u128() % 1500) as u64;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        agent.kill();
        eprintln!("round {round}: killed the agent after {pause} ms");
        agent = Agent::start(&setup.config);
    }
    writer.await.unwrap();
    let events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.ticks", &["id"])],
        &mut agent,
    )
    .await;
    assert_no_duplicates(&events);
    // Rows written before the slot existed come from the snapshot, the rest from the stream:
    // every row read or inserted, none read twice nor inserted twice. A kill inside the
    // snapshot makes the continued read take the rows as they are then, some inserted since
    // the consistent point, whose inserts the stream also brings (docs/agent.md, "Setup and
    // snapshot": applied in position order, both end in the source's state, which
    // `wait_for_bronze` checked).
    let ids_of = |op: &str| {
        let mut ids: Vec<i64> = events
            .iter()
            .filter(|event| event.op == op)
            .map(|event| event.payload["key"]["id"].as_i64().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };
    let (read, inserted) = (ids_of("read"), ids_of("insert"));
    for (op, ids) in [("read", &read), ("inserted", &inserted)] {
        let mut once = ids.clone();
        once.dedup();
        assert_eq!(once.len(), ids.len(), "a row {op} twice");
    }
    let mut all: Vec<i64> = read.iter().chain(&inserted).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all,
        (1..=100_000).collect::<Vec<i64>>(),
        "every row arrives"
    );
    let both = read
        .iter()
        .filter(|id| inserted.binary_search(id).is_ok())
        .count();
    eprintln!(
        "{} rows read, {} inserted, {both} read by a continued snapshot and inserted",
        read.len(),
        inserted.len()
    );
    agent.stop();
    setup.platform.stop();
}

/// pgbench's shape: every transaction moves a balance on a keyed table and appends to a table
/// without a key, while the agent and the platform are each killed with SIGKILL twice.
#[tokio::test(flavor = "multi_thread")]
async fn keyed_and_keyless_tables_under_load_match_the_source_after_kill_nine_of_agent_and_platform()
 {
    let (mut setup, mut source) = setup(
        "create table accounts (id int primary key, balance bigint not null, note text); \
         insert into accounts select g, 0, null from generate_series(1, 500) g; \
         create table history (account int not null, delta bigint not null, tx int not null, note text)",
        "",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    wait_for_slot(&mut source).await;
    let url = setup.url.clone();
    const TRANSACTIONS: i64 = 6000;
    let writer = tokio::spawn(async move {
        let mut writer = connect(&url).await;
        for tx in 0..TRANSACTIONS {
            let account = tx * 7919 % 500 + 1;
            let delta = tx % 11 - 5;
            let mut sql = format!(
                "begin; update accounts set balance = balance + {delta}, note = 'tx {tx}' where id = {account}; \
                 insert into history values ({account}, {delta}, {tx}, case when {tx} % 5 = 0 then null else 'h' end);"
            );
            // Now and then a row of the keyed table goes and comes back, and history repeats a row.
            if tx % 97 == 0 {
                sql.push_str(&format!(
                    "delete from accounts where id = {account}; \
                     insert into accounts values ({account}, {tx}, 'reborn'); \
                     insert into history values ({account}, {delta}, {tx}, null);"
                ));
            }
            sql.push_str("commit;");
            run(&mut writer, &sql).await;
        }
    });
    for round in 0..4 {
        let pause = 500 + (uuid::Uuid::new_v4().as_u128() % 1500) as u64;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if round % 2 == 0 {
            agent.kill();
            eprintln!("round {round}: killed the agent after {pause} ms");
            agent = Agent::start(&setup.config);
        } else {
            setup.platform.kill();
            eprintln!("round {round}: killed the platform after {pause} ms");
            setup.platform.restart();
        }
    }
    let killed_while_writing = !writer.is_finished();
    writer.await.unwrap();
    eprintln!("the writer was still running after the last kill: {killed_while_writing}");
    // The keyed table's latest images equal the source's rows.
    let mut events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.accounts", &["id"])],
        &mut agent,
    )
    .await;
    // The keyless table, as a multiset of rows, equals the source's.
    let source_history = source_rows(&mut source, "public.history").await;
    let mut database = setup.platform.database().await;
    let deadline = std::time::Instant::now() + MINUTE;
    while bronze_rows(&events, "public.history").len() < source_history.len()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        events = bronze_events(&mut database, &setup.source_id).await;
    }
    assert_no_duplicates(&events);
    let bronze_history = bronze_rows(&events, "public.history");
    assert_eq!(
        bronze_history.len(),
        source_history.len(),
        "history's rows in bronze"
    );
    assert!(
        bronze_history == source_history,
        "history differs: first bronze row not in the source {:?}",
        bronze_history
            .iter()
            .zip(&source_history)
            .find(|(bronze, source)| bronze != source)
    );
    agent.stop();
    setup.platform.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_outage_is_held_in_the_spool_and_drained_in_order() {
    let (mut setup, mut source) = setup(
        "create table ticks (id bigserial primary key, value int)",
        "",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    run(
        &mut source,
        "insert into ticks (value) select g from generate_series(1, 100) g",
    )
    .await;
    wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.ticks", &["id"])],
        &mut agent,
    )
    .await;
    setup.platform.stop();
    // 30 s without an edge while the source keeps writing.
    let started = std::time::Instant::now();
    let mut written = 0;
    while started.elapsed() < Duration::from_secs(30) {
        run(
            &mut source,
            "insert into ticks (value) select g from generate_series(1, 200) g",
        )
        .await;
        run(
            &mut source,
            "update ticks set value = value + 1 where id % 97 = 0",
        )
        .await;
        written += 200;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = agent_status(&setup.state_dir);
    let spooled = status["spool_batches"].as_u64().unwrap_or(0);
    assert!(
        spooled > 0,
        "the spool holds the changes while the edge is down: {status}"
    );
    assert!(agent.is_running(), "{}", agent.log());
    let outage_ended = time::OffsetDateTime::now_utc();
    setup.platform.restart();
    let events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.ticks", &["id"])],
        &mut agent,
    )
    .await;
    assert_no_duplicates(&events);
    assert!(written > 1000);
    // Drained in order: everything stored later has a later position than everything before.
    let mut database = setup.platform.database().await;
    let rows: Vec<(time::OffsetDateTime, i64, i32)> = sqlx::query_as(
        "select ingest_time, lsn, seq from bronze.cdc_events where source_id = $1::text::uuid \
         order by ingest_time, lsn, seq",
    )
    .bind(&setup.source_id)
    .fetch_all(&mut database)
    .await
    .unwrap();
    let mut highest_before: Option<(i64, i32)> = None;
    let mut group_highest: Option<(i64, i32)> = None;
    let mut group_time = None;
    for (ingested, lsn, seq) in rows {
        if group_time != Some(ingested) {
            highest_before = highest_before.max(group_highest);
            group_time = Some(ingested);
        }
        if let Some(before) = highest_before {
            assert!(
                (lsn, seq) > before,
                "bronze received {lsn}/{seq} after {before:?}"
            );
        }
        group_highest = group_highest.max(Some((lsn, seq)));
    }
    // The backlog went in requests of many batches each: far fewer appends than batches.
    let appends: i64 = sqlx::query_scalar(
        "select count(distinct ingest_time) from bronze.cdc_events \
         where source_id = $1::text::uuid and ingest_time > $2",
    )
    .bind(&setup.source_id)
    .bind(outage_ended)
    .fetch_one(&mut database)
    .await
    .unwrap();
    assert!(
        appends > 0 && (appends as u64) * 4 <= spooled,
        "{spooled} spooled batches were stored in {appends} appends"
    );
    agent.stop();
    setup.platform.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_holds_the_source_back_and_drops_nothing() {
    let (mut setup, mut source) = setup(
        "create table ticks (id bigserial primary key, padding text)",
        "[spool]\nmax_bytes = 1048576",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    wait_until("the agent streams", MINUTE, async || {
        agent_status(&setup.state_dir)["state"] == json!("streaming")
    })
    .await;
    setup.platform.stop();
    run(
        &mut source,
        "insert into ticks (padding) select repeat(md5(g::text), 8) from generate_series(1, 30000) g",
    )
    .await;
    wait_until("backpressure engages", MINUTE, async || {
        agent_status(&setup.state_dir)["backpressure"] == json!(true)
    })
    .await;
    let status = agent_status(&setup.state_dir);
    let spooled = status["spool_bytes"].as_u64().unwrap();
    assert!(
        spooled <= (1 << 20) + (5 << 20),
        "the spool stays within its bound and one batch: {status}"
    );
    setup.platform.restart();
    let events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.ticks", &["id"])],
        &mut agent,
    )
    .await;
    assert_no_duplicates(&events);
    agent.stop();
    setup.platform.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_a_huge_transaction_and_a_10_mb_value_arrive_intact() {
    let (mut setup, mut source) = setup(
        "create table items (id int primary key, a text, b int, big text); \
         alter table items alter column big set storage external; \
         insert into items values (1, 'one', 1, 'small')",
        "",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    for statement in [
        // A 10 MB value, stored out of line, then updates of other columns.
        "insert into items select 2, 'two', 2, string_agg(md5(g::text), '') from generate_series(1, 327680) g",
        "update items set b = b + 100 where id = 2",
        // Columns added, dropped, renamed and retyped between changes.
        "alter table items add column c int default 7",
        "insert into items (id, a, b, c) values (3, 'three', 3, 33)",
        "update items set a = 'two again' where id = 2",
        "alter table items drop column b",
        "insert into items (id, a, c) values (4, 'four', 44)",
        "alter table items rename column a to label",
        "update items set c = c + 1 where id = 2",
        "alter table items alter column c type bigint",
        "insert into items (id, label, c) values (5, 'five', 5000000000)",
        // One transaction of 100,000 rows.
        "insert into items (id, label, c) select g, 'bulk', g from generate_series(100, 100099) g",
    ] {
        run(&mut source, statement).await;
    }
    // Every row once more after the last change of shape, so each has a current image.
    run(&mut source, "update items set c = c where id < 100").await;
    let events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.items", &["id"])],
        &mut agent,
    )
    .await;
    assert_no_duplicates(&events);
    let of = |id: i64| {
        events
            .iter()
            .filter(move |event| event.payload["key"]["id"] == json!(id) && event.op != "read")
    };
    // The large value was never sent as null: updates that left it alone name it unchanged.
    let updates: Vec<&BronzeEvent> = of(2).filter(|event| event.op == "update").collect();
    assert!(updates.len() >= 3);
    for update in &updates {
        assert!(
            update.payload["after"].get("big").is_none(),
            "{}",
            update.payload["after"]
        );
        assert_eq!(update.payload["unchanged"], json!(["big"]));
    }
    let big = &of(2).find(|event| event.op == "insert").unwrap().payload["after"]["big"];
    assert_eq!(big.as_str().unwrap().len(), 327_680 * 32);
    // Added, dropped, renamed and retyped columns are carried as they are at each change.
    let three = &of(3).next().unwrap().payload;
    assert_eq!(three["after"]["c"], json!(33));
    assert_eq!(three["after"]["b"], json!(3));
    let four = &of(4).next().unwrap().payload;
    assert!(four["after"].get("b").is_none());
    assert_eq!(four["after"]["a"], json!("four"));
    let five = &of(5).next().unwrap().payload;
    assert_eq!(five["after"]["label"], json!("five"));
    assert_eq!(five["after"]["c"], json!(5_000_000_000i64));
    assert_eq!(five["types"]["c"], json!("bigint"));
    let bulk: Vec<&BronzeEvent> = events
        .iter()
        .filter(|event| event.payload["after"]["label"] == json!("bulk"))
        .collect();
    assert_eq!(bulk.len(), 100_000);
    assert!(
        bulk.iter().all(|event| event.lsn == bulk[0].lsn),
        "one transaction, one commit LSN"
    );
    agent.stop();
    setup.platform.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_each_missing_prerequisite() {
    let scratch = Scratch::new();
    let cluster = SourceCluster::start(&[("wal_level", "replica")]);
    let mut admin = connect(&cluster.url("postgres")).await;
    run(
        &mut admin,
        "create role reader login; create table t (id int primary key); \
         create table no_key (v int); grant select on t to reader",
    )
    .await;
    let url = cluster.url("postgres").replace("postgres@", "reader@");
    // The file names another database; the environment's URL wins (secrets stay out of files).
    let config = postgres_config(
        &scratch.0,
        "https://127.0.0.1:1",
        &scratch.0.join("agent"),
        "postgres://nobody@127.0.0.1:1/none",
        "",
    );
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "tables = [\"public.t\", \"public.no_key\"]\n",
    )
    .unwrap();
    let output = std::process::Command::new(AGENT)
        .args(["check", "--config"])
        .arg(&config)
        .env("TRIBUTARY_AGENT_SOURCE_URL", &url)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "{report}");
    for expected in [
        "FIX     wal_level is \"replica\"",
        "ALTER SYSTEM SET wal_level = logical",
        "FIX     the role \"reader\" lacks the REPLICATION attribute",
        "ALTER ROLE \"reader\" REPLICATION",
        "FIX     no credentials in the state directory",
        "creating the publication needs ownership of \"public\".\"t\"",
        "\"public\".\"no_key\" has no primary key or replica identity",
        "the role \"reader\" cannot read \"public\".\"no_key\"",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_near_invalidation_is_reported_and_a_lost_one_stops_the_agent_until_a_resync_from_the_platform()
 {
    let scratch = Scratch::new();
    let cluster = SourceCluster::start(&[
        ("wal_level", "logical"),
        ("max_replication_slots", "4"),
        ("max_wal_senders", "4"),
        ("max_slot_wal_keep_size", "64MB"),
        ("max_wal_size", "32MB"),
        ("min_wal_size", "32MB"),
    ]);
    let url = cluster.url("postgres");
    let mut source = connect(&url).await;
    run(
        &mut source,
        "create table ticks (id bigserial primary key, padding text)",
    )
    .await;
    let mut platform = Platform::start(&scratch.0.join("platform"));
    let state_dir = scratch.0.join("agent");
    let source_id = platform.pair("postgres", &state_dir);
    let config = postgres_config(&scratch.0, &platform.edge, &state_dir, &url, "");
    let mut agent = Agent::start(&config);
    wait_until("the agent streams", MINUTE, async || {
        agent_status(&state_dir)["state"] == json!("streaming")
    })
    .await;
    platform.stop();
    // Changes the edge cannot take stay spooled, so the slot cannot be confirmed past them.
    run(
        &mut source,
        "insert into ticks (padding) select md5(g::text) from generate_series(1, 1000) g",
    )
    .await;
    let retained = |status: &Value| status["slot"]["retained_bytes"].as_i64().unwrap_or(0);
    let mut samples = Vec::new();
    // Write WAL in steps (4 MB messages, which the agent reads and skips).
    for _ in 0..20 {
        run(
            &mut source,
            "select pg_logical_emit_message(false, 'filler', repeat('x', 4000000))",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let status = agent_status(&state_dir);
        samples.push(retained(&status));
        if !status["warnings"].as_array().is_none_or(Vec::is_empty) {
            break;
        }
    }
    let status = agent_status(&state_dir);
    assert!(
        samples.windows(2).any(|pair| pair[1] > pair[0]),
        "retained WAL rises: {samples:?}"
    );
    let warning = status["warnings"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(warning.contains("close to invalidation"), "{status}");
    assert_ne!(
        status["slot"]["wal_status"],
        json!("lost"),
        "warned before the loss: {status}"
    );

    // Past the limit, the source invalidates the slot; the agent stops and says what to do.
    for _ in 0..25 {
        run(
            &mut source,
            "select pg_logical_emit_message(false, 'filler', repeat('x', 4000000))",
        )
        .await;
    }
    run(&mut source, "select pg_switch_wal(); checkpoint").await;
    wait_until("the agent stops on the lost slot", 2 * MINUTE, async || {
        !agent.is_running()
    })
    .await;
    let status = agent_status(&state_dir);
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("tributary-agent resync"), "{status}");
    assert!(agent.log().contains("resync"), "{}", agent.log());

    // The owner asks for a resync on the platform (the source's page shows the slot lost and
    // offers it); the restarted agent carries it out as it starts, before reading the source.
    platform.restart();
    // Started again, it stops again at once, and first tells the platform why: the source's
    // status says failed, with the resync to ask for.
    let mut agent = Agent::start(&config);
    wait_until(
        "the agent stops again on the lost slot",
        MINUTE,
        async || !agent.is_running(),
    )
    .await;
    let mut database = platform.database().await;
    let reported: (String, String) = sqlx::query_as(
        "select state, coalesce(last_error, '') from control.source_status \
         where source_id = $1::text::uuid",
    )
    .bind(&source_id)
    .fetch_one(&mut database)
    .await
    .unwrap();
    assert_eq!(reported.0, "failed", "{reported:?}");
    assert!(reported.1.contains("resync"), "{reported:?}");
    drop(database);
    as_owner(&platform, &source_id, SourceAction::Resync).await;
    let mut agent = Agent::start(&config);
    let rows: i64 = sqlx::query_scalar("select count(*) from ticks")
        .fetch_one(&mut source)
        .await
        .unwrap();
    let mut database = platform.database().await;
    wait_until("a new snapshot arrives", 2 * MINUTE, async || {
        let events = bronze_events(&mut database, &source_id).await;
        let consistent_point = events
            .iter()
            .filter(|event| event.op == "read")
            .map(|event| event.lsn)
            .max();
        events
            .iter()
            .filter(|event| event.op == "read" && Some(event.lsn) == consistent_point)
            .count() as i64
            == rows
    })
    .await;
    assert!(agent.log().contains("resync done"), "{}", agent.log());
    agent.stop();
    platform.stop();
}

/// A CA and a server certificate for 127.0.0.1 it issued: (CA PEM, certificate PEM, key PEM).
fn server_certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_certificate = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_certificate.pem(), server.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_source_is_reached_over_verified_tls() {
    let scratch = Scratch::new();
    let (ca, certificate, key) = server_certificate();
    let cluster = SourceCluster::start_with_files(
        &[
            ("wal_level", "logical"),
            ("max_replication_slots", "4"),
            ("max_wal_senders", "4"),
            ("ssl", "on"),
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
        ],
        &[
            ("server.crt", certificate.as_bytes()),
            ("server.key", key.as_bytes()),
        ],
    );
    let ca_file = scratch.0.join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    // By name: the replication connection verifies names, not IP addresses.
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        cluster.url("postgres").replace("127.0.0.1", "localhost"),
        ca_file.display()
    );
    let by_address = postgres_config(
        &scratch.0,
        "https://127.0.0.1:1",
        &scratch.0.join("nobody"),
        &url.replace("localhost", "127.0.0.1"),
        "",
    );
    // Refused when the configuration is read, by every command.
    let refused = agent_command(&["check"], &by_address);
    let error = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success());
    assert!(error.contains("needs the server's name"), "{error}");
    let mut source = connect(&url).await;
    run(&mut source, "create table t (id int primary key, v text)").await;

    // A CA that did not issue the server's certificate is refused.
    let (other_ca, _, _) = server_certificate();
    let other_file = scratch.0.join("other-ca.pem");
    std::fs::write(&other_file, &other_ca).unwrap();
    let wrong = postgres_config(
        &scratch.0,
        "https://127.0.0.1:1",
        &scratch.0.join("nobody"),
        &url.replace(
            &ca_file.display().to_string(),
            &other_file.display().to_string(),
        ),
        "",
    );
    let refused = agent_command(&["check"], &wrong);
    let report = String::from_utf8_lossy(&refused.stdout).into_owned();
    assert!(!refused.status.success());
    assert!(
        report.contains("FIX     cannot connect to the source"),
        "{report}"
    );

    let platform = Platform::start(&scratch.0.join("platform"));
    let state_dir = scratch.0.join("agent");
    let source_id = platform.pair("postgres", &state_dir);
    let config = postgres_config(&scratch.0, &platform.edge, &state_dir, &url, "");
    let mut agent = Agent::start(&config);
    wait_for_slot(&mut source).await;
    run(
        &mut source,
        "insert into t select g, 'v' || g from generate_series(1, 500) g",
    )
    .await;
    wait_for_bronze(
        &platform,
        &source_id,
        &mut source,
        &[("public.t", &["id"])],
        &mut agent,
    )
    .await;
    // Both of the agent's connections, the replication stream and the SQL session, use TLS.
    let encrypted: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity a join pg_stat_ssl s using (pid) \
         where a.application_name = 'tributary-agent' and s.ssl",
    )
    .fetch_one(&mut source)
    .await
    .unwrap();
    let total: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity where application_name = 'tributary-agent'",
    )
    .fetch_one(&mut source)
    .await
    .unwrap();
    assert!(
        encrypted >= 2 && encrypted == total,
        "{encrypted} of {total} connections use TLS"
    );
    agent.stop();
}

/// Polls `status.json` until `done` holds for it, and returns it; fails when the agent makes
/// no progress (rows read, spool drained, positions acked) for two minutes short of that.
async fn wait_for_status(
    state_dir: &std::path::Path,
    what: &str,
    agent: &mut Agent,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut deadline = std::time::Instant::now() + 2 * MINUTE;
    let mut progress = None;
    loop {
        let status = agent_status(state_dir);
        if done(&status) {
            return status;
        }
        let now = ["snapshot_rows", "spool_bytes", "acked_lsn", "captured_lsn"]
            .map(|field| status[field].clone());
        if progress.as_ref() != Some(&now) {
            progress = Some(now);
            deadline = std::time::Instant::now() + 2 * MINUTE;
        }
        assert!(agent.is_running(), "the agent stopped:\n{}", agent.log());
        assert!(
            std::time::Instant::now() < deadline,
            "the agent's status never showed that {what}: {status}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Until bronze holds `public.ticks` as the source does.
async fn wait_for_ticks(setup: &Setup, source: &mut PgConnection, agent: &mut Agent) {
    wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        source,
        &[("public.ticks", &["id"])],
        agent,
    )
    .await;
}

const EVERY_IDENTITY: &str = "create table keyed (id int primary key, v text); \
     create table by_index (a int not null, b text); \
     create unique index by_index_a on by_index (a); \
     alter table by_index replica identity using index by_index_a; \
     create table full_image (a int, b text); \
     alter table full_image replica identity full; \
     create table bag (a int, b text); \
     insert into keyed values (1, 'a'), (2, 'b'), (3, 'c'); \
     insert into by_index values (1, 'a'), (2, 'b'), (3, 'c'); \
     insert into full_image values (1, 'a'), (2, 'b'), (3, 'c'); \
     insert into bag values (1, 'a'), (2, 'b'), (3, 'c'); \
     insert into bag select g, 'row ' || g from generate_series(1000, 12999) g";

const EVERY_IDENTITY_TABLES: &[(&str, &[&str])] = &[
    ("public.keyed", &["id"]),
    ("public.by_index", &["a"]),
    ("public.full_image", &["a", "b"]),
    ("public.bag", &["a", "b"]),
];

#[tokio::test(flavor = "multi_thread")]
async fn dml_of_every_kind_on_every_kind_of_table_never_fails_while_the_agent_runs() {
    let (mut setup, mut source) = setup(EVERY_IDENTITY, "").await;
    // A table without an identity limits what is captured; it does not block running.
    let check = agent_command(&["check"], &setup.config);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains(
            "warning \"public\".\"bag\" has no primary key or replica identity: its inserts and \
             truncates are captured, its updates and deletes are not"
        ),
        "{report}"
    );
    assert!(
        report.contains("ALTER TABLE \"public\".\"bag\" REPLICA IDENTITY FULL"),
        "{report}"
    );
    for table in ["keyed", "by_index", "full_image"] {
        assert!(
            report.contains(&format!("ok      \"public\".\"{table}\" can be captured")),
            "{report}"
        );
    }

    let mut agent = Agent::start(&setup.config);
    wait_for_slot(&mut source).await;
    let status = wait_for_status(
        &setup.state_dir,
        "the agent streams",
        &mut agent,
        |status| status["state"] == json!("streaming"),
    )
    .await;
    assert_eq!(status["not_captured"], json!(["public.bag"]), "{status}");
    // What the source's own statements do is unchanged: none of these fails.
    for table in ["keyed", "by_index", "full_image", "bag"] {
        let key = if table == "keyed" { "id" } else { "a" };
        for statement in [
            format!("insert into {table} values (4, 'd'), (5, 'e')"),
            format!(
                "update {table} set {} = 'changed' where {key} = 1",
                if table == "keyed" { "v" } else { "b" }
            ),
            format!("delete from {table} where {key} = 2"),
            format!(
                "begin; update {table} set {key} = {key} + 100 where {key} = 3; delete from {table} where {key} = 4; commit"
            ),
            format!("truncate {table}"),
            format!("insert into {table} values (10, 'after')"),
        ] {
            run(&mut source, &statement).await;
        }
    }
    let events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        EVERY_IDENTITY_TABLES,
        &mut agent,
    )
    .await;
    assert_no_duplicates(&events);
    let ops = |table: &str| -> std::collections::BTreeSet<String> {
        events
            .iter()
            .filter(|event| event.table == table)
            .map(|event| event.op.clone())
            .collect()
    };
    for table in ["public.keyed", "public.by_index", "public.full_image"] {
        assert_eq!(
            ops(table),
            ["delete", "insert", "read", "truncate", "update"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
            "{table}"
        );
    }
    // A table without a key is read through a cursor, chunk after chunk, every row once.
    assert_eq!(
        events
            .iter()
            .filter(|event| event.table == "public.bag" && event.op == "read")
            .count(),
        12_003
    );
    // Only what a table without an identity can publish: its rows, inserts and truncates.
    assert_eq!(
        ops("public.bag"),
        ["insert", "read", "truncate"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );

    // Given an identity, the table's updates and deletes are captured from then on; losing
    // it, a table leaves the main publication and its deletes keep working.
    run(&mut source, "alter table bag replica identity full").await;
    run(
        &mut source,
        "alter table full_image replica identity nothing",
    )
    .await;
    let status = wait_for_status(
        &setup.state_dir,
        "the publications follow the new identities",
        &mut agent,
        |status| status["not_captured"] == json!(["public.full_image"]),
    )
    .await;
    assert_eq!(status["state"], json!("streaming"));
    // The table without identity first: its insert commits before bag's changes, and the
    // source's changes reach bronze in commit order, so bronze holding bag's last change means
    // it holds this insert too.
    run(&mut source, "delete from full_image").await;
    run(&mut source, "update full_image set b = 'y'").await;
    run(&mut source, "insert into full_image values (20, 'after')").await;
    run(
        &mut source,
        "update bag set b = 'now captured' where a = 10",
    )
    .await;
    run(
        &mut source,
        "insert into bag values (11, 'x'); delete from bag where a = 11",
    )
    .await;
    let events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.bag", &["a", "b"]), ("public.keyed", &["id"])],
        &mut agent,
    )
    .await;
    assert!(
        events
            .iter()
            .any(|event| event.table == "public.bag" && event.op == "update"),
        "the update of a table given an identity is captured"
    );
    assert!(
        events.iter().any(|event| event.table == "public.full_image"
            && event.op == "insert"
            && event.payload["after"]["a"] == json!(20)),
        "inserts of a table that lost its identity are still captured"
    );

    // The platform holds the tables whose updates and deletes are not captured.
    let mut database = setup.platform.database().await;
    wait_until(
        "the platform holds what is not captured",
        MINUTE,
        async || {
            let not_captured: Option<Value> = sqlx::query_scalar(
                "select not_captured from control.source_status where source_id = $1::text::uuid",
            )
            .bind(&setup.source_id)
            .fetch_optional(&mut database)
            .await
            .unwrap();
            not_captured == Some(json!(["public.full_image"]))
        },
    )
    .await;
    agent.stop();
    let status = agent_command(&["status"], &setup.config);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains(
            "not captured: updates and deletes of public.full_image (no replica identity): \
             ALTER TABLE \"public\".\"full_image\" REPLICA IDENTITY FULL, or add a primary key"
        ),
        "{status}"
    );
    setup.platform.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn status_is_caught_up_only_once_the_platform_acknowledged_the_spool() {
    let (mut setup, mut source) = setup(
        "create table ticks (id bigserial primary key, value int); \
         insert into ticks (value) select g from generate_series(1, 1000) g",
        "",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    wait_for_ticks(&setup, &mut source, &mut agent).await;
    wait_for_status(&setup.state_dir, "it is caught up", &mut agent, |status| {
        status["caught_up"] == json!(true)
    })
    .await;
    // Without an edge, what is captured waits in the spool: not caught up.
    setup.platform.stop();
    run(
        &mut source,
        "insert into ticks (value) select g from generate_series(1, 5000) g",
    )
    .await;
    let status = wait_for_status(
        &setup.state_dir,
        "the spool holds the new rows",
        &mut agent,
        |status| status["spool_bytes"].as_u64().unwrap_or(0) > 0,
    )
    .await;
    assert_eq!(status["caught_up"], json!(false), "{status}");
    assert_eq!(status["state"], json!("streaming"), "{status}");
    let printed = agent_command(&["status"], &setup.config);
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(printed.contains("caught up:  no: "), "{printed}");
    assert!(printed.contains("bytes in the spool"), "{printed}");

    setup.platform.restart();
    wait_for_ticks(&setup, &mut source, &mut agent).await;
    let status = wait_for_status(
        &setup.state_dir,
        "it is caught up again",
        &mut agent,
        |status| status["caught_up"] == json!(true),
    )
    .await;
    assert_eq!(status["spool_bytes"], json!(0), "{status}");
    assert_eq!(status["spool_batches"], json!(0), "{status}");
    assert_eq!(status["drain_seconds"], json!(0.0), "{status}");
    assert_eq!(status["acked_lsn"], status["captured_lsn"], "{status}");
    assert!(
        status["send_bytes_per_second"].as_f64().unwrap_or(0.0) > 0.0,
        "the spool was drained at a measured rate: {status}"
    );
    let printed = agent_command(&["status"], &setup.config);
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(
        printed.contains("caught up:  yes: everything captured was acknowledged"),
        "{printed}"
    );
    // The platform holds it too.
    let mut database = setup.platform.database().await;
    wait_until(
        "the platform holds the caught-up status",
        MINUTE,
        async || {
            let row: Option<(bool, Option<f64>)> = sqlx::query_as(
                "select caught_up, drain_seconds from control.source_status \
             where source_id = $1::text::uuid",
            )
            .bind(&setup.source_id)
            .fetch_optional(&mut database)
            .await
            .unwrap();
            row == Some((true, Some(0.0)))
        },
    )
    .await;
    agent.stop();
    setup.platform.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_of_an_agent_with_one_publication_is_refused_until_resync() {
    let (mut setup, mut source) = setup(
        "create table ticks (id bigserial primary key, value int); create table bag (v int); \
         insert into ticks (value) select g from generate_series(1, 100) g",
        "",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    wait_for_ticks(&setup, &mut source, &mut agent).await;
    agent.stop();
    // As an older agent left it: one publication, and a slot with WAL to decode.
    run(&mut source, "drop publication tributary_insert_only").await;
    run(&mut source, "insert into ticks (value) values (1)").await;
    let mut agent = Agent::start(&setup.config);
    wait_until("the agent refuses the old slot", MINUTE, async || {
        !agent.is_running()
    })
    .await;
    assert!(
        agent.log().contains("that needs a new slot")
            && agent.log().contains("tributary-agent resync"),
        "{}",
        agent.log()
    );
    let resync = agent_command(&["resync"], &setup.config);
    assert!(
        resync.status.success(),
        "{}",
        String::from_utf8_lossy(&resync.stderr)
    );
    let mut agent = Agent::start(&setup.config);
    run(&mut source, "insert into bag values (1); delete from bag").await;
    run(&mut source, "insert into ticks (value) values (2)").await;
    wait_for_ticks(&setup, &mut source, &mut agent).await;
    agent.stop();
    setup.platform.stop();
}

/// `action` on `source`, as one of its tenant's owners would, through the store's own function
/// with the owner role; returns the source after.
async fn as_owner(
    platform: &Platform,
    source: &str,
    action: store::sources::SourceAction<'_>,
) -> store::sources::Source {
    let data_dir = platform.data_dir.clone();
    let cluster =
        tokio::task::spawn_blocking(move || store::cluster::ManagedCluster::start(&data_dir))
            .await
            .unwrap()
            .unwrap();
    let database = store::Database::connect(cluster.connection_settings())
        .await
        .unwrap();
    let source: domain::SourceId = source.parse().unwrap();
    let mut admin = platform.database().await;
    let tenant: uuid::Uuid =
        sqlx::query_scalar("select tenant_id from control.sources where source_id = $1")
            .bind(source.as_uuid())
            .fetch_one(&mut admin)
            .await
            .unwrap();
    let scope = store::Scope::Member {
        tenant: domain::TenantId::from_uuid(tenant),
        user: domain::UserId::new_random(),
        role: domain::Role::Owner,
    };
    let mut tx = store::TenantTx::begin(&database.app, scope).await.unwrap();
    let found = store::sources::act(&mut tx, source, action).await.unwrap();
    tx.commit().await.unwrap();
    found
}

/// Pauses (`true`) or resumes `source`'s ingestion as an owner would; returns the source's
/// derived status after.
async fn set_paused(platform: &Platform, source: &str, paused: bool) -> String {
    let action = if paused {
        SourceAction::Pause {
            reason: Some("end-to-end test"),
        }
    } else {
        SourceAction::Resume
    };
    as_owner(platform, source, action)
        .await
        .health
        .status
        .as_str()
        .to_owned()
}

/// The count and a checksum (sum of ids, md5 of the notes in id order) of `paused_items`'
/// inserts in bronze.
async fn paused_items_in_bronze(platform: &Platform, source: &str) -> (i64, i64, String) {
    let mut database = platform.database().await;
    sqlx::query_as(
        "select count(*), coalesce(sum((payload->'after'->>'id')::bigint), 0)::bigint, \
                md5(coalesce(string_agg(payload->'after'->>'note', ',' \
                    order by (payload->'after'->>'id')::bigint), '')) \
         from bronze.cdc_events \
         where source_id = $1::text::uuid and table_name = 'paused_items' and op = 'insert'",
    )
    .bind(source)
    .fetch_one(&mut database)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_source_keeps_its_changes_in_the_spool_and_resume_stores_each_once() {
    const CHANGES: i64 = 24;
    // Short waits between refused sends, so resuming shows within seconds.
    let (setup, mut source) = setup(
        "create table paused_items (id int primary key, note text not null)",
        "[spool]\nretry_max_seconds = 2\n",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    wait_for_slot(&mut source).await;
    run(
        &mut source,
        "insert into paused_items values (0, 'before the pause')",
    )
    .await;
    wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.paused_items", &["id"])],
        &mut agent,
    )
    .await;

    assert_eq!(
        set_paused(&setup.platform, &setup.source_id, true).await,
        "paused"
    );
    // The edge's cached view of the source lives one second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // One change per transaction: as many batches as the agent cares to make.
    for id in 1..=CHANGES {
        run(
            &mut source,
            &format!("insert into paused_items values ({id}, 'note {id}')"),
        )
        .await;
    }
    let status = wait_for_status(
        &setup.state_dir,
        "it is paused with the changes spooled",
        &mut agent,
        |status| status["state"] == "paused" && status["spool_batches"].as_u64() > Some(0),
    )
    .await;
    assert!(status["spool_bytes"].as_u64() > Some(0), "{status}");
    assert_ne!(status["caught_up"], true, "{status}");
    // The platform still takes its heartbeats: it sees the agent paused, and the source too.
    let mut database = setup.platform.database().await;
    wait_until(
        "the platform hears the agent is paused",
        MINUTE,
        async || {
            sqlx::query_scalar::<_, String>(
                "select state from control.source_status where source_id = $1::text::uuid",
            )
            .bind(&setup.source_id)
            .fetch_optional(&mut database)
            .await
            .unwrap()
            .as_deref()
                == Some("paused")
        },
    )
    .await;
    // A few more refused rounds: still nothing of the paused changes in bronze.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (count, _, _) = paused_items_in_bronze(&setup.platform, &setup.source_id).await;
    assert_eq!(count, 1, "only the change before the pause is in bronze");
    assert!(
        agent.log().contains("paused this source's ingestion"),
        "{}",
        agent.log()
    );

    assert_ne!(
        set_paused(&setup.platform, &setup.source_id, false).await,
        "paused"
    );
    let events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        &[("public.paused_items", &["id"])],
        &mut agent,
    )
    .await;
    assert_no_duplicates(&events);
    let expected: (i64, i64, String) = sqlx::query_as(
        "select count(*), sum(id)::bigint, md5(string_agg(note, ',' order by id)) from paused_items",
    )
    .fetch_one(&mut source)
    .await
    .unwrap();
    assert_eq!(expected.0, CHANGES + 1);
    assert_eq!(
        paused_items_in_bronze(&setup.platform, &setup.source_id).await,
        expected,
        "bronze has each change once: count, sum of ids and the notes' checksum"
    );
    let status = wait_for_status(
        &setup.state_dir,
        "it streams again with an empty spool",
        &mut agent,
        |status| status["state"] == "streaming" && status["spool_batches"] == 0,
    )
    .await;
    assert_eq!(status["spool_bytes"], 0, "{status}");
    agent.stop();
}

/// The audit log's actions on `source` starting with `prefix`, in order.
async fn audited(database: &mut PgConnection, source: &str, prefix: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select action from audit.log where target = $1 and starts_with(action, $2) order by seq",
    )
    .bind(source)
    .bind(prefix)
    .fetch_all(database)
    .await
    .unwrap()
}

/// The snapshots in bronze: (consistent point, rows read at it), oldest first.
fn snapshots(events: &[BronzeEvent]) -> Vec<(i64, usize)> {
    let mut points: Vec<(i64, usize)> = Vec::new();
    for event in events.iter().filter(|event| event.op == "read") {
        match points.last_mut() {
            Some((lsn, rows)) if *lsn == event.lsn => *rows += 1,
            _ => points.push((event.lsn, 1)),
        }
    }
    points
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resync_and_a_certificate_rotation_asked_on_the_platform_are_carried_out_by_the_running_agent()
 {
    let (setup, mut source) = setup(
        "create table resync_items (id int primary key, note text not null); \
         insert into resync_items select g, 'row ' || g from generate_series(1, 40) g",
        "",
    )
    .await;
    let mut agent = Agent::start(&setup.config);
    let tables: &[(&str, &[&str])] = &[("public.resync_items", &["id"])];
    let events = wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        tables,
        &mut agent,
    )
    .await;
    let first = snapshots(&events);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].1, 40);
    run(
        &mut source,
        "update resync_items set note = 'changed' where id <= 5",
    )
    .await;

    // Asked on the platform: the agent hears it in its next heartbeat's answer.
    let asked = as_owner(&setup.platform, &setup.source_id, SourceAction::Resync).await;
    assert!(asked.resync_requested_at.is_some());
    let mut database = setup.platform.database().await;
    wait_until(
        "the agent takes a second snapshot",
        2 * MINUTE,
        async || {
            let events = bronze_events(&mut database, &setup.source_id).await;
            let taken = snapshots(&events);
            taken.len() == 2 && taken[1].1 == 40
        },
    )
    .await;
    assert!(agent.is_running(), "{}", agent.log());
    // The request is cleared once the agent's heartbeat names it, and both ends are audited.
    wait_until("the platform clears the request", MINUTE, async || {
        sqlx::query_scalar::<_, Option<uuid::Uuid>>(
            "select resync_request_id from control.sources where source_id = $1::text::uuid",
        )
        .bind(&setup.source_id)
        .fetch_one(&mut database)
        .await
        .unwrap()
        .is_none()
    })
    .await;
    assert_eq!(
        audited(&mut database, &setup.source_id, "source.resync").await,
        ["source.resync.request", "source.resync.done"]
    );
    let status = agent_status(&setup.state_dir);
    assert!(status["resynced"].is_string(), "{status}");
    assert!(
        agent.log().contains("the platform asked for a resync"),
        "{}",
        agent.log()
    );

    // It streams on from the new slot: later changes arrive, and bronze folds to the source.
    run(
        &mut source,
        "insert into resync_items values (41, 'after the resync'); delete from resync_items where id = 2",
    )
    .await;
    wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        tables,
        &mut agent,
    )
    .await;

    // A certificate rotation: the agent renews at its next heartbeat, the certificate it had is
    // revoked, and it goes on delivering with the new one.
    let certificate = |state_dir: &std::path::Path| {
        let saved: Value =
            serde_json::from_slice(&std::fs::read(state_dir.join("credentials.json")).unwrap())
                .unwrap();
        saved["certificate_pem"].as_str().unwrap().to_owned()
    };
    let before = certificate(&setup.state_dir);
    let asked = as_owner(
        &setup.platform,
        &setup.source_id,
        SourceAction::RotateCertificate,
    )
    .await;
    assert!(asked.rotate_requested_at.is_some());
    wait_until("the agent rotates its certificate", MINUTE, async || {
        certificate(&setup.state_dir) != before
    })
    .await;
    let (valid, revoked): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where revoked_at is null), \
                count(*) filter (where revocation_reason = 'rotated') \
         from control.certificates where source_id = $1::text::uuid",
    )
    .bind(&setup.source_id)
    .fetch_one(&mut database)
    .await
    .unwrap();
    assert_eq!(
        (valid, revoked),
        (1, 1),
        "one certificate in force, the old one revoked"
    );
    run(
        &mut source,
        "insert into resync_items values (42, 'after the rotation')",
    )
    .await;
    wait_for_bronze(
        &setup.platform,
        &setup.source_id,
        &mut source,
        tables,
        &mut agent,
    )
    .await;
    assert_eq!(
        audited(&mut database, &setup.source_id, "source.certificate.rotate").await,
        [
            "source.certificate.rotate.request",
            "source.certificate.rotate.done"
        ]
    );
    agent.stop();
}

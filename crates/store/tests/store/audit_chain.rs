//! The audit log is append-only for every role, and `verify` finds any single tampering.

use domain::{Role, TenantId};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use sqlx::{Connection, PgConnection};
use store::audit::{self, AuditEntry};
use store::{Database, Scope, TenantTx};
use test_support::TestDatabase;

use crate::support::{cli, member_tx, tenant};

async fn append(
    database: &Database,
    tenant: TenantId,
    action: &'static str,
    target: &str,
    detail: i64,
) {
    let mut tx = member_tx(database, tenant, Role::Admin).await;
    audit::append(
        &mut tx,
        AuditEntry::new(action, target)
            .details(
                serde_json::json!({ "n": detail, "note": "ünïcode ✓", "nested": [1, {"b": null}] }),
            )
            .client_addr(Some("192.0.2.7".parse().unwrap())),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

fn refused(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> bool {
    matches!(result, Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42501"))
}

#[tokio::test]
async fn update_delete_and_truncate_are_refused_for_every_role() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    append(&database, acme, "member.add", "someone", 1).await;

    const ATTEMPTS: [&str; 5] = [
        "update audit.log set action = 'forged' where tenant_id = $1",
        "delete from audit.log where tenant_id = $1",
        "truncate audit.log",
        "update audit.chain_head set seq = 0 where tenant_id = $1",
        "truncate audit.chain_head",
    ];
    async fn try_all(connection: &mut PgConnection, tenant: TenantId, who: &str) {
        for statement in ATTEMPTS {
            let mut tx = connection.begin().await.unwrap();
            let mut query = sqlx::query(statement);
            if statement.contains("$1") {
                query = query.bind(tenant.as_uuid());
            }
            let result = query.execute(&mut *tx).await;
            // chain_head may be changed by its owner (the linking trigger runs as the owner);
            // what matters is that nobody else can, and that the log itself is immutable.
            let owner_on_head =
                who == "table owner" && statement.starts_with("update audit.chain_head");
            if !owner_on_head {
                assert!(refused(result), "{who}: {statement} was not refused");
            }
            tx.rollback().await.unwrap();
        }
    }

    for role in [
        Role::Owner,
        Role::Admin,
        Role::Operator,
        Role::Viewer,
        Role::InternalOps,
    ] {
        let mut tx = member_tx(&database, acme, role).await;
        let connection = tx.connection_for_tests();
        for statement in &ATTEMPTS[..3] {
            sqlx::query("savepoint attempt")
                .execute(&mut *connection)
                .await
                .unwrap();
            let mut query = sqlx::query(*statement);
            if statement.contains("$1") {
                query = query.bind(acme.as_uuid());
            }
            let result = query.execute(&mut *connection).await;
            assert!(refused(result), "{role}: {statement} was not refused");
            sqlx::query("rollback to savepoint attempt")
                .execute(&mut *connection)
                .await
                .unwrap();
        }
        tx.rollback().await.unwrap();
    }
    let mut control = TenantTx::begin(
        &database.app,
        Scope::Control {
            tenant: Some(acme),
            actor: cli(),
        },
    )
    .await
    .unwrap();
    let result = sqlx::query("delete from audit.log where tenant_id = $1")
        .bind(acme.as_uuid())
        .execute(control.connection_for_tests())
        .await;
    assert!(refused(result), "control: delete was not refused");
    control.rollback().await.unwrap();

    let mut service = test_database.service().await;
    try_all(&mut service, acme, "service role").await;

    // The table owner, with the tenant set so row-level security lets it see the rows.
    let mut owner = test_database.admin().await;
    sqlx::raw_sql("set role tributary_owner")
        .execute(&mut owner)
        .await
        .unwrap();
    sqlx::query("select set_config('tributary.tenant_id', $1, false)")
        .bind(acme.to_string())
        .execute(&mut owner)
        .await
        .unwrap();
    try_all(&mut owner, acme, "table owner").await;

    // Even a superuser is stopped by the triggers (short of disabling them, which `verify`
    // catches: see the property test below).
    let mut superuser = test_database.admin().await;
    for statement in &ATTEMPTS[..3] {
        let mut query = sqlx::query(*statement);
        if statement.contains("$1") {
            query = query.bind(acme.as_uuid());
        }
        assert!(
            refused(query.execute(&mut superuser).await),
            "superuser: {statement}"
        );
    }

    let reports = store::service::audit::verify(&database.service, Some(acme))
        .await
        .unwrap();
    assert_eq!(reports[0].entries, 2);
    assert!(reports[0].is_intact(), "{reports:?}");
}

#[tokio::test]
async fn concurrent_appends_form_one_unbroken_chain() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let database = database.clone();
        tasks.push(tokio::spawn(async move {
            append(&database, acme, "source.create", "s", n).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let report = &store::service::audit::verify(&database.service, Some(acme))
        .await
        .unwrap()[0];
    assert_eq!(report.entries, 41);
    assert!(report.is_intact(), "{report:?}");
}

#[tokio::test]
async fn an_audited_action_and_its_entry_roll_back_together() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    audit::append(&mut tx, AuditEntry::new("member.add", "x"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let report = &store::service::audit::verify(&database.service, Some(acme))
        .await
        .unwrap()[0];
    assert_eq!(report.entries, 1, "only tenant.create remains");
    assert!(report.is_intact());
    // An audited change without a tenant is refused rather than written to no chain.
    let mut no_tenant = TenantTx::begin(
        &database.app,
        Scope::Control {
            tenant: None,
            actor: cli(),
        },
    )
    .await
    .unwrap();
    assert!(
        audit::append(&mut no_tenant, AuditEntry::new("user.create", "x"))
            .await
            .is_err()
    );
}

/// One tampering with a chain, as a superuser with triggers disabled could do it.
#[derive(Debug, Clone)]
enum Mutation {
    EditColumn(Index, &'static str, &'static str),
    Delete(Index),
    Swap(Index, Index),
    ForgeTail { correct_hash: bool },
    EditHead(&'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let column = prop::sample::select(vec![
        ("action", "'member.remove'"),
        ("target", "target || 'x'"),
        ("actor_id", "'someone-else'"),
        ("actor_type", "'system'"),
        ("details", "details || '{\"forged\": true}'"),
        ("details", "'{}'"),
        ("client_addr", "'198.51.100.1'"),
        ("client_addr", "null"),
        ("occurred_at", "occurred_at + interval '1 microsecond'"),
        ("prev_hash", "sha256(prev_hash)"),
        ("hash", "sha256(hash)"),
        ("entry_id", "gen_random_uuid()"),
    ]);
    prop_oneof![
        (any::<Index>(), column)
            .prop_map(|(index, (column, value))| Mutation::EditColumn(index, column, value)),
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        any::<bool>().prop_map(|correct_hash| Mutation::ForgeTail { correct_hash }),
        prop::sample::select(vec!["seq = seq - 1", "hash = sha256(hash)"])
            .prop_map(Mutation::EditHead),
    ]
}

async fn tamper(
    admin: &mut PgConnection,
    tenant: TenantId,
    entries: usize,
    mutation: &Mutation,
) -> bool {
    let mut tx = admin.begin().await.unwrap();
    sqlx::raw_sql("set local session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    let tenant = *tenant.as_uuid();
    let seq = |index: &Index| index.index(entries) as i64 + 1;
    let changed = match mutation {
        Mutation::EditColumn(index, column, value) => {
            // entry_id is not part of the hashed content: changing it is not tampering with
            // what the entry says, so it must not be reported either way; skip it here.
            if *column == "entry_id" {
                return false;
            }
            let statement = format!(
                "update audit.log set {column} = {value} where tenant_id = $1 and seq = $2"
            );
            let done = sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(tenant)
                .bind(seq(index))
                .execute(&mut *tx)
                .await
                .unwrap();
            // Setting a null client address on an entry that has none changes nothing.
            let unchanged: bool = sqlx::query_scalar(
                "select hash = sha256(prev_hash || audit.canonical(tenant_id, seq, occurred_at, \
                 actor_type, actor_id, action, target, details, client_addr)) \
                 and prev_hash = coalesce(lag(hash) over (order by seq), prev_hash) \
                 from audit.log where tenant_id = $1 and seq = $2",
            )
            .bind(tenant)
            .bind(seq(index))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            done.rows_affected() == 1 && !(unchanged && *column != "prev_hash")
        }
        Mutation::Delete(index) => {
            sqlx::query("delete from audit.log where tenant_id = $1 and seq = $2")
                .bind(tenant)
                .bind(seq(index))
                .execute(&mut *tx)
                .await
                .unwrap();
            true
        }
        Mutation::Swap(a, b) => {
            let (a, b) = (seq(a), seq(b));
            if a == b {
                return false;
            }
            // Through a parking spot: the primary key is not deferrable.
            for (from, to) in [(a, 1_000_000 + a), (b, a), (1_000_000 + a, b)] {
                sqlx::query("update audit.log set seq = $3 where tenant_id = $1 and seq = $2")
                    .bind(tenant)
                    .bind(from)
                    .bind(to)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            true
        }
        Mutation::ForgeTail { correct_hash } => {
            // A well-formed next link appended without the trigger (so without moving the head).
            let statement = if *correct_hash {
                "insert into audit.log (tenant_id, seq, occurred_at, actor_type, actor_id, action, \
                     target, details, prev_hash, hash) \
                 select $1, h.seq + 1, now(), 'user', 'intruder', 'member.add', 'x', '{}', h.hash, \
                     sha256(h.hash || audit.canonical($1, h.seq + 1, now(), 'user', 'intruder', \
                     'member.add', 'x', '{}', null)) \
                 from audit.chain_head h where h.tenant_id = $1"
            } else {
                "insert into audit.log (tenant_id, seq, actor_type, actor_id, action, prev_hash, hash) \
                 select $1, h.seq + 1, 'user', 'intruder', 'member.add', h.hash, sha256('x') \
                 from audit.chain_head h where h.tenant_id = $1"
            };
            sqlx::query(statement)
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .unwrap();
            true
        }
        Mutation::EditHead(change) => {
            let statement = format!("update audit.chain_head set {change} where tenant_id = $1");
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .unwrap();
            true
        }
    };
    tx.commit().await.unwrap();
    changed
}

#[test]
fn verify_finds_every_single_mutation() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (test_database, database) = runtime.block_on(async {
        let test_database = TestDatabase::new().await;
        let database = test_database.connect().await;
        (test_database, database)
    });
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let tampered = std::cell::Cell::new(0);
    runner
        .run(&(0usize..8, mutation()), |(appended, mutation)| {
            runtime.block_on(async {
                let victim = tenant(&database, "Victim").await;
                for n in 0..appended {
                    append(
                        &database,
                        victim,
                        "member.add",
                        &format!("user-{n}"),
                        n as i64,
                    )
                    .await;
                }
                let clean = &store::service::audit::verify(&database.service, Some(victim))
                    .await
                    .unwrap()[0];
                prop_assert!(
                    clean.is_intact(),
                    "untouched chain reported broken: {clean:?}"
                );
                prop_assert_eq!(clean.entries, appended as u64 + 1);

                let mut admin = test_database.admin().await;
                if tamper(&mut admin, victim, appended + 1, &mutation).await {
                    tampered.set(tampered.get() + 1);
                    let report = &store::service::audit::verify(&database.service, Some(victim))
                        .await
                        .unwrap()[0];
                    prop_assert!(
                        !report.is_intact(),
                        "{mutation:?} on a chain of {} went unnoticed",
                        appended + 1
                    );
                }
                Ok(())
            })
        })
        .unwrap();
    let tampered = tampered.get();
    assert!(
        tampered >= 60,
        "only {tampered} of 96 cases tampered; the generator is too weak"
    );
}

/// Every chain's (tenant, entries), intact or the test fails.
async fn chain_lengths(database: &Database) -> Vec<(TenantId, u64)> {
    let reports = store::service::audit::verify(&database.service, None)
        .await
        .unwrap();
    for report in &reports {
        assert!(report.is_intact(), "{report:?}");
    }
    let mut lengths: Vec<_> = reports
        .iter()
        .map(|report| (report.tenant, report.entries))
        .collect();
    lengths.sort();
    lengths
}

#[tokio::test]
async fn a_staff_read_lands_in_the_read_tenants_chain_and_staff_write_nothing_else_there() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    append(&database, acme, "member.add", "someone", 1).await;
    let before = chain_lengths(&database).await;

    // A member of operations reads Acme's log, filtered, as the console does.
    let staff = domain::UserId::new_random();
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::InternalOps {
            tenant: Some(acme),
            actor: store::Actor::User(staff),
        },
    )
    .await
    .unwrap();
    let filter = audit::AuditFilter {
        action_prefix: Some("member.".into()),
        actor_type: Some("user".into()),
        before_seq: Some(99),
    };
    audit::record_staff_read(&mut tx, audit::StaffReadView::Api, &filter, Some(25))
        .await
        .unwrap();
    let read = audit::search(&mut tx, &filter, 25).await.unwrap();
    assert_eq!(read.len(), 1, "the filter still finds member.add only");
    tx.commit().await.unwrap();

    // Acme's chain grew by exactly that one entry and still verifies; no other chain (Globex's,
    // the platform's) changed.
    let after = chain_lengths(&database).await;
    let grown: Vec<_> = after
        .iter()
        .filter(|entry| !before.contains(entry))
        .collect();
    assert_eq!(grown, [&(acme, 3)], "before {before:?}, after {after:?}");
    assert_eq!(before.len(), after.len());

    let mut admin = member_tx(&database, acme, Role::Admin).await;
    let entries = audit::list(&mut admin, 100).await.unwrap();
    admin.rollback().await.unwrap();
    let by_staff: Vec<_> = entries
        .iter()
        .filter(|entry| entry.actor_id == staff.to_string())
        .collect();
    assert_eq!(by_staff.len(), 1, "{entries:?}");
    let entry = by_staff[0];
    assert_eq!(
        (
            entry.action.as_str(),
            entry.actor_type.as_str(),
            entry.target.as_str()
        ),
        ("audit.read_by_staff", "user", "audit.log")
    );
    assert_eq!(
        entry.details,
        serde_json::json!({
            "view": "api", "action_prefix": "member.", "actor_type": "user",
            "before_seq": 99, "limit": 25,
        })
    );
    assert_eq!(entries[0].seq, entry.seq, "the read is the newest entry");

    // A read of Globex lands in Globex's chain only; a read that rolls back leaves nothing; a
    // tenant that does not exist is not found and no chain grows.
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::InternalOps {
            tenant: Some(globex),
            actor: store::Actor::User(staff),
        },
    )
    .await
    .unwrap();
    audit::record_staff_read(
        &mut tx,
        audit::StaffReadView::Page,
        &Default::default(),
        Some(50),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::InternalOps {
            tenant: Some(acme),
            actor: store::Actor::User(staff),
        },
    )
    .await
    .unwrap();
    audit::record_staff_read(
        &mut tx,
        audit::StaffReadView::Csv,
        &Default::default(),
        Some(10),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::InternalOps {
            tenant: Some(TenantId::from_uuid(uuid::Uuid::new_v4())),
            actor: store::Actor::User(staff),
        },
    )
    .await
    .unwrap();
    let missing = audit::record_staff_read(
        &mut tx,
        audit::StaffReadView::Page,
        &Default::default(),
        Some(50),
    )
    .await;
    assert!(
        matches!(missing, Err(store::StoreError::NotFound("tenant"))),
        "{missing:?}"
    );
    tx.rollback().await.unwrap();
    let last = chain_lengths(&database).await;
    let grown: Vec<_> = last.iter().filter(|entry| !after.contains(entry)).collect();
    assert_eq!(grown, [&(globex, 2)], "after {after:?}, last {last:?}");
}

//! The isolation and role matrices: every tenant table x every role x select, insert, update
//! and delete, tenant A against tenant B, run through `TenantTx` as the production roles.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use domain::{Role, TenantId};
use sqlx::{Connection, PgConnection, Row};
use store::catalog::{TENANT_TABLES, TableAccess};
use store::{Database, Scope, TenantTx};
use test_support::TestDatabase;
use uuid::Uuid;

use crate::support::{member_tx, sqlstate, tenant};

/// How the matrix exercises one table. Statements take `$1` the tenant the row is for, `$2` a
/// fresh id, `$3` that tenant's seeded source and `$4` a user of that tenant who is not yet a
/// member, through the `p` row so every statement binds the same four parameters.
struct Exercise {
    table: &'static str,
    insert: &'static str,
    /// Sets one column a permitted role may change to its own value.
    update_column: &'static str,
    /// Seeded for both tenants by the admin before the matrix runs (false: the tenant's
    /// creation already made its rows).
    seed: bool,
}

const PARAMS: &str =
    "with p as (select $1::uuid as t, $2::uuid as k, $3::uuid as s, $4::uuid as u) ";

/// The tenant registry and each tenant's volume: what internal operations reads across tenants.
const REGISTRY_TABLES: [&str; 2] = ["control.dim_tenant", "control.tenant_usage"];

const EXERCISES: &[Exercise] = &[
    Exercise {
        table: "control.dim_tenant",
        insert: "insert into control.dim_tenant (tenant_id, name, plan, industry, region) \
                 select k, 'other', 'team', 'x', 'y' from p",
        update_column: "name",
        seed: false,
    },
    Exercise {
        table: "control.members",
        insert: "insert into control.members (tenant_id, user_id, role) select t, u, 'viewer' from p",
        update_column: "role",
        seed: false,
    },
    Exercise {
        table: "control.tenant_settings",
        insert: "insert into control.tenant_settings (tenant_id) select t from p",
        update_column: "bronze_retention_days",
        seed: false,
    },
    Exercise {
        table: "control.pii_masking_policy",
        insert: "insert into control.pii_masking_policy (tenant_id, field_path, action) \
                 select t, 'email_' || k, 'redact' from p",
        // A key column (migration 0015 lets the managing roles move a rule in place).
        update_column: "field_path",
        seed: true,
    },
    Exercise {
        table: "control.sources",
        insert: "insert into control.sources (tenant_id, source_id, name, kind) \
                 select t, k, 'source ' || k, 'simulator' from p",
        update_column: "name",
        seed: false,
    },
    Exercise {
        table: "control.pairing_tokens",
        insert: "insert into control.pairing_tokens (tenant_id, token_id, source_id, token_hash, \
                 expires_at) select t, k, s, sha256(k::text::bytea), now() + interval '1 hour' from p",
        update_column: "used_at",
        seed: true,
    },
    Exercise {
        table: "control.certificates",
        insert: "insert into control.certificates (tenant_id, serial, source_id, fingerprint_sha256, \
                 not_before, not_after) select t, replace(k::text, '-', ''), s, \
                 sha256(k::text::bytea), now(), now() + interval '7 days' from p",
        update_column: "revoked_at",
        seed: true,
    },
    Exercise {
        table: "control.api_tokens",
        insert: "insert into control.api_tokens (tenant_id, token_id, name, role, token_hash, \
                 expires_at) select t, k, 'script ' || k, 'viewer', sha256(k::text::bytea), \
                 now() + interval '1 day' from p",
        update_column: "revoked_at",
        seed: true,
    },
    Exercise {
        table: "control.tenant_usage",
        insert: "insert into control.tenant_usage (tenant_id, source_id, day, events, \
                 last_ingested_at) select t, k, current_date, 1, now() from p",
        update_column: "events",
        seed: true,
    },
    Exercise {
        table: "control.source_status",
        insert: "insert into control.source_status (tenant_id, source_id, agent_version, \
                 source_kind, state) select t, s, '0.1.0', 'postgres', 'streaming' from p",
        update_column: "state",
        seed: true,
    },
    Exercise {
        table: "control.source_checks",
        insert: "insert into control.source_checks (tenant_id, source_id, agent_version, \
                 ready, findings, tables) select t, s, '0.1.0', true, '[]', '[]' from p",
        update_column: "ready",
        seed: true,
    },
    Exercise {
        table: "control.source_status_history",
        insert: "insert into control.source_status_history (tenant_id, source_id, \
                 sampled_minute, sampled_at, state) select t, s, \
                 date_trunc('minute', now()) - make_interval(mins => abs(hashtext(k::text)) % 1000000), \
                 now(), 'streaming' from p",
        update_column: "state",
        seed: true,
    },
    Exercise {
        table: "control.invitations",
        insert: "insert into control.invitations (tenant_id, invitation_id, email, role, \
                 token_hash, expires_at) select t, k, 'x' || k || '@example.com', 'viewer', \
                 sha256(k::text::bytea), now() + interval '1 day' from p",
        update_column: "revoked_at",
        seed: true,
    },
    Exercise {
        table: "control.tenant_secrets",
        insert: "insert into control.tenant_secrets (tenant_id, masking_key_ciphertext, \
                 masking_key_nonce) select t, sha256(k::text::bytea), \
                 substring(sha256(k::text::bytea) from 1 for 12) from p",
        update_column: "masking_key_nonce",
        seed: true,
    },
    Exercise {
        table: "control.read_model_mappings",
        insert: "insert into control.read_model_mappings (tenant_id, source_id, source_table, \
                 entity_kind) select t, s, 'table_' || k, 'device' from p",
        update_column: "entity_kind",
        seed: true,
    },
    Exercise {
        table: "control.dashboards",
        insert: "insert into control.dashboards (tenant_id, dashboard_id, name) \
                 select t, k, 'Dashboard ' || k from p",
        update_column: "name",
        seed: true,
    },
    // The alert tables: a rule and a channel whose id is the tenant's seeded source id exist
    // for each tenant (`arrange`), so rows that reference one use `s`.
    Exercise {
        table: "control.alert_rules",
        insert: "insert into control.alert_rules (tenant_id, rule_id, name, kind, condition) \
                 select t, k, 'Rule ' || k, 'pipeline', 'slot_at_risk' from p",
        update_column: "name",
        seed: true,
    },
    Exercise {
        table: "control.alert_channels",
        insert: "insert into control.alert_channels (tenant_id, channel_id, name, kind, target) \
                 select t, k, 'Channel ' || k, 'email', 'ops@example.com' from p",
        update_column: "name",
        seed: true,
    },
    Exercise {
        table: "control.alert_states",
        insert: "insert into control.alert_states (tenant_id, rule_id, series, phase, since) \
                 select t, s, 'device:' || k, 'firing', now() from p",
        update_column: "acked_at",
        seed: true,
    },
    Exercise {
        table: "control.alert_events",
        insert: "insert into control.alert_events (tenant_id, rule_id, series, kind) \
                 select t, s, '', 'acked' from p",
        update_column: "detail",
        seed: true,
    },
    Exercise {
        table: "control.alert_silences",
        insert: "insert into control.alert_silences (tenant_id, silence_id, rule_id, ends_at, \
                 reason) select t, k, s, now() + interval '1 hour', 'maintenance' from p",
        update_column: "ended_at",
        seed: true,
    },
    Exercise {
        table: "pipeline.alert_outbox",
        insert: "insert into pipeline.alert_outbox (tenant_id, notification_id, channel_id, \
                 notice, payload) select t, k, s, 'test', '{}'::jsonb from p",
        update_column: "attempts",
        seed: true,
    },
    Exercise {
        table: "control.reports",
        insert: "insert into control.reports (tenant_id, report_id, name, dataset, format) \
                 select t, k, 'Report ' || k, 'devices', 'csv' from p",
        update_column: "name",
        seed: true,
    },
    Exercise {
        table: "control.report_schedules",
        insert: "insert into control.report_schedules (tenant_id, schedule_id, report_id, cron, \
                 time_zone, run_as) select t, k, s, '0 8 * * *', 'UTC', 'admin' from p",
        update_column: "cron",
        seed: true,
    },
    Exercise {
        table: "control.report_runs",
        insert: "insert into control.report_runs (tenant_id, run_id, report_name, definition, \
                 run_as) select t, k, 'Report', '{}'::jsonb, 'viewer' from p",
        update_column: "status",
        seed: true,
    },
    Exercise {
        table: "bronze.cdc_events",
        insert: "insert into bronze.cdc_events (tenant_id, event_id, event_time, source_id, op, \
                 schema_name, table_name, lsn, seq, payload) select t, k, now(), s, 'insert', \
                 'public', 'devices', 1, 0, jsonb_build_object('name', 'row of ' || t) from p",
        update_column: "op",
        seed: true,
    },
    Exercise {
        table: "pipeline.dedupe",
        insert: "insert into pipeline.dedupe (tenant_id, consumer, event_id) select t, 'bronze', k from p",
        update_column: "seen_at",
        seed: true,
    },
    Exercise {
        table: "pipeline.dlq",
        insert: "insert into pipeline.dlq (tenant_id, dlq_id, consumer, event_id, source_id, \
                 reason_code, reason, event) select t, k, 'materializer', k, s, 'type_mismatch', \
                 'power is not a number', '{}' from p",
        update_column: "attempts",
        seed: true,
    },
    Exercise {
        table: "pipeline.entity_state",
        insert: "insert into pipeline.entity_state (tenant_id, entity_kind, entity_id, state) \
                 select t, 'device', k::text, jsonb_build_object('of', t) from p",
        update_column: "state",
        seed: true,
    },
    Exercise {
        table: "pipeline.metric_readings",
        insert: "insert into pipeline.metric_readings (tenant_id, reading_id, entity_kind, \
                 entity_id, metric_key, minute, measured_at, value, pos_lsn, pos_seq) \
                 select t, k::text, 'device', 'd', 'power_kw', date_trunc('minute', now()), \
                 now(), 1, 1, 0 from p",
        update_column: "value",
        seed: true,
    },
    Exercise {
        table: "pipeline.source_truncates",
        insert: "insert into pipeline.source_truncates (tenant_id, source_id, source_table, \
                 pos_lsn, pos_seq, truncated_at) select t, s, 'public.t_' || k, 1, 0, now() from p",
        update_column: "pos_lsn",
        seed: true,
    },
    Exercise {
        table: "pipeline.unmapped_tables",
        insert: "insert into pipeline.unmapped_tables (tenant_id, source_id, schema_name, \
                 table_name, events, first_seen_at, last_seen_at) \
                 select t, s, 'public', 't_' || k, 1, now(), now() from p",
        update_column: "events",
        seed: true,
    },
    Exercise {
        table: "pipeline.drift_fields",
        insert: "insert into pipeline.drift_fields (tenant_id, source_id, schema_name, \
                 table_name, entity_kind, field_name, json_type, row_count, first_seen_at, \
                 last_seen_at) select t, s, 'public', 'devices', 'device', 'f_' || k, 'string', \
                 1, now(), now() from p",
        update_column: "dismissed_at",
        seed: true,
    },
    Exercise {
        table: "pipeline.replay_requests",
        insert: "insert into pipeline.replay_requests (tenant_id, request_id, kind) \
                 select t, k, 'dlq' from p",
        update_column: "status",
        seed: true,
    },
    Exercise {
        table: "analytics.sites",
        insert: "insert into analytics.sites (tenant_id, site_id, source_id, name, pos_lsn, pos_seq) \
                 select t, k::text, s, 'site of ' || t, 1, 0 from p",
        update_column: "name",
        seed: true,
    },
    Exercise {
        table: "analytics.devices",
        insert: "insert into analytics.devices (tenant_id, device_id, source_id, name, pos_lsn, \
                 pos_seq) select t, k::text, s, 'device of ' || t, 1, 0 from p",
        update_column: "name",
        seed: true,
    },
    Exercise {
        table: "analytics.sessions",
        insert: "insert into analytics.sessions (tenant_id, session_id, source_id, status, pos_lsn, \
                 pos_seq) select t, k::text, s, 'session of ' || t, 1, 0 from p",
        update_column: "status",
        seed: true,
    },
    Exercise {
        table: "analytics.metrics_min",
        insert: "insert into analytics.metrics_min (tenant_id, entity_kind, entity_id, metric_key, \
                 minute, value_sum, value_count, value_min, value_max, last_value, last_pos_lsn, \
                 last_pos_seq) select t, 'device', k::text, 'power_kw', \
                 date_trunc('minute', now()), 1, 1, 1, 1, 1, 1, 0 from p",
        update_column: "value_sum",
        seed: true,
    },
    Exercise {
        table: "analytics.metrics_hour",
        insert: "insert into analytics.metrics_hour (tenant_id, entity_kind, entity_id, \
                 metric_key, hour, value_sum, value_sum_exact, value_count, value_min, \
                 value_max, last_value, last_pos_lsn, last_pos_seq) select t, 'device', \
                 k::text, 'power_kw', date_trunc('hour', now(), 'UTC'), 1, 1, 1, 1, 1, 1, 1, 0 \
                 from p",
        update_column: "value_sum",
        seed: true,
    },
    Exercise {
        table: "analytics.metric_kinds",
        insert: "insert into analytics.metric_kinds (tenant_id, metric_key, entity_kind) \
                 select t, 'key ' || k::text, 'device' from p",
        update_column: "metric_key",
        seed: true,
    },
    Exercise {
        table: "analytics.metric_series",
        insert: "insert into analytics.metric_series (tenant_id, metric_key, entity_kind, \
                 entity_id, readings) select t, 'key ' || k::text, 'device', 'd1', 1 from p",
        update_column: "readings",
        seed: true,
    },
    Exercise {
        table: "analytics.extras_text",
        insert: "insert into analytics.extras_text (tenant_id, entity_kind, entity_id, key, value) \
                 select t, 'device', k::text, 'colour', 'value of ' || t from p",
        update_column: "value",
        seed: true,
    },
    Exercise {
        table: "analytics.extras_num",
        insert: "insert into analytics.extras_num (tenant_id, entity_kind, entity_id, key, value) \
                 select t, 'device', k::text, 'voltage', 230 from p",
        update_column: "value",
        seed: true,
    },
    Exercise {
        table: "analytics.extras_bool",
        insert: "insert into analytics.extras_bool (tenant_id, entity_kind, entity_id, key, value) \
                 select t, 'device', k::text, 'online', true from p",
        update_column: "value",
        seed: true,
    },
    Exercise {
        table: "analytics.extras_time",
        insert: "insert into analytics.extras_time (tenant_id, entity_kind, entity_id, key, value) \
                 select t, 'device', k::text, 'installed_at', now() from p",
        update_column: "value",
        seed: true,
    },
    Exercise {
        table: "audit.log",
        insert: "insert into audit.log (tenant_id, actor_type, actor_id, action) \
                 select t, 'user', 'matrix', 'matrix.probe' from p",
        update_column: "action",
        seed: false,
    },
    Exercise {
        table: "control.sso_configs",
        // One configuration per workspace: the seeded row is replaced in place.
        insert: "insert into control.sso_configs (tenant_id, issuer, client_id, \
                 client_secret_ciphertext, client_secret_nonce, default_role) \
                 select t, 'https://idp.example.com', 'client ' || k, sha256(k::text::bytea), \
                 substring(sha256(k::text::bytea) from 1 for 12), 'viewer' from p \
                 on conflict (tenant_id) do update set client_id = excluded.client_id",
        update_column: "enabled",
        seed: true,
    },
    Exercise {
        table: "control.sso_domains",
        insert: "insert into control.sso_domains (tenant_id, domain) \
                 select t, 'd' || replace(k::text, '-', '') || '.example.com' from p",
        update_column: "verified_at",
        seed: true,
    },
    Exercise {
        table: "control.sso_flows",
        insert: "insert into control.sso_flows (tenant_id, state_hash, binding_hash, purpose, \
                 nonce, verifier_ciphertext, verifier_nonce, redirect_uri, expires_at) \
                 select t, sha256(k::text::bytea), sha256(t::text::bytea), 'sign_in', k::text, \
                 sha256(k::text::bytea), substring(sha256(k::text::bytea) from 1 for 12), \
                 'https://tributary.example.com/auth/sso/callback', now() + interval '10 minutes' \
                 from p",
        update_column: "used_at",
        seed: true,
    },
    Exercise {
        table: "audit.chain_head",
        insert: "insert into audit.chain_head (tenant_id, seq, hash) \
                 select t, 0, sha256(k::text::bytea) from p",
        update_column: "seq",
        seed: false,
    },
];

/// Roles that act through `TenantTx` inside one tenant.
const MATRIX_ROLES: [Role; 5] = [
    Role::Owner,
    Role::Admin,
    Role::Operator,
    Role::Viewer,
    Role::InternalOps,
];

/// One tenant's fixture ids.
#[derive(Debug, Clone, Copy)]
struct Fixture {
    tenant: TenantId,
    source: Uuid,
    spare_user: Uuid,
}

async fn arrange(test_database: &TestDatabase, database: &Database) -> (Fixture, Fixture) {
    let mut admin = test_database.admin().await;
    let mut fixtures = Vec::new();
    for name in ["Tenant A", "Tenant B"] {
        let tenant = tenant(database, name).await;
        let source = Uuid::new_v4();
        let member = Uuid::new_v4();
        let colleague = Uuid::new_v4();
        let spare_user = Uuid::new_v4();
        sqlx::query(
            "insert into control.users (user_id, email) values ($1, $1::text || '@example.com'), \
                                                           ($2, $2::text || '@example.com'), \
                                                           ($3, $3::text || '@example.com')",
        )
        .bind(member)
        .bind(spare_user)
        .bind(colleague)
        .execute(&mut admin)
        .await
        .unwrap();
        // An owner, and a member below owner: an admin's deletes never see an owner's
        // membership (migration 0019), so the matrix needs a row an admin may remove.
        sqlx::query(
            "insert into control.members (tenant_id, user_id, role) \
             values ($1, $2, 'owner'), ($1, $3, 'operator')",
        )
        .bind(tenant.as_uuid())
        .bind(member)
        .bind(colleague)
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query(
            "insert into control.sources (tenant_id, source_id, name, kind) \
             values ($1, $2, 'seeded', 'postgres')",
        )
        .bind(tenant.as_uuid())
        .bind(source)
        .execute(&mut admin)
        .await
        .unwrap();
        // The rule and the channel the alert exercises' rows refer to, by the source's id.
        sqlx::query(
            "insert into control.alert_rules (tenant_id, rule_id, name, kind, condition) \
             values ($1, $2, 'seeded', 'pipeline', 'slot_at_risk')",
        )
        .bind(tenant.as_uuid())
        .bind(source)
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query(
            "insert into control.alert_channels (tenant_id, channel_id, name, kind, target) \
             values ($1, $2, 'seeded', 'email', 'ops@example.com')",
        )
        .bind(tenant.as_uuid())
        .bind(source)
        .execute(&mut admin)
        .await
        .unwrap();
        // The report the schedule exercise's rows belong to, by the source's id.
        sqlx::query(
            "insert into control.reports (tenant_id, report_id, name, dataset, format) \
             values ($1, $2, 'seeded', 'devices', 'csv')",
        )
        .bind(tenant.as_uuid())
        .bind(source)
        .execute(&mut admin)
        .await
        .unwrap();
        let fixture = Fixture {
            tenant,
            source,
            spare_user,
        };
        for exercise in EXERCISES.iter().filter(|exercise| exercise.seed) {
            run_insert(&mut admin, exercise, &fixture, fixture.tenant)
                .await
                .unwrap_or_else(|error| panic!("seeding {}: {error}", exercise.table));
        }
        fixtures.push(fixture);
    }
    (fixtures[0], fixtures[1])
}

async fn run_insert(
    connection: &mut PgConnection,
    exercise: &Exercise,
    fixture: &Fixture,
    row_tenant: TenantId,
) -> Result<u64, sqlx::Error> {
    let statement = format!("{PARAMS}{}", exercise.insert);
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(row_tenant.as_uuid())
        .bind(Uuid::new_v4())
        .bind(fixture.source)
        .bind(fixture.spare_user)
        .execute(connection)
        .await
        .map(|done| done.rows_affected())
}

fn permitted(access: &[domain::Permission], role: Role) -> bool {
    access.iter().any(|permission| role.allows(*permission))
}

fn access_of(table: &str) -> &'static TableAccess {
    TENANT_TABLES
        .iter()
        .find(|access| access.table == table)
        .unwrap_or_else(|| panic!("{table} is not in TENANT_TABLES"))
}

/// Runs `statement` in a fresh `TenantTx` for `role` in tenant A, then rolls back.
async fn attempt<F>(
    database: &Database,
    tenant: TenantId,
    role: Role,
    statement: F,
) -> Result<Vec<i64>, sqlx::Error>
where
    F: for<'c> FnOnce(
        &'c mut PgConnection,
    ) -> futures_util::future::BoxFuture<'c, Result<Vec<i64>, sqlx::Error>>,
{
    let mut tx = member_tx(database, tenant, role).await;
    let result = statement(tx.connection_for_tests()).await;
    tx.rollback().await.unwrap();
    result
}

#[tokio::test]
async fn every_exercise_covers_a_tenant_table_and_every_tenant_table_is_exercised() {
    let exercised: BTreeSet<&str> = EXERCISES.iter().map(|exercise| exercise.table).collect();
    let declared: BTreeSet<&str> = TENANT_TABLES.iter().map(|access| access.table).collect();
    assert_eq!(exercised, declared);
}

#[tokio::test]
async fn role_and_isolation_matrix() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (a, b) = arrange(&test_database, &database).await;
    let mut failures = Vec::new();

    for exercise in EXERCISES {
        let access = access_of(exercise.table);
        let table = exercise.table;
        for role in MATRIX_ROLES {
            let registry_reader = role == Role::InternalOps && REGISTRY_TABLES.contains(&table);

            // SELECT: what is visible is A's and nothing else.
            let select =
                format!("select count(*), count(*) filter (where tenant_id <> $1) from {table}");
            let result = attempt(&database, a.tenant, role, |connection| {
                Box::pin(async move {
                    let row = sqlx::query(sqlx::AssertSqlSafe(select))
                        .bind(a.tenant.as_uuid())
                        .fetch_one(connection)
                        .await?;
                    Ok(vec![row.get(0), row.get(1)])
                })
            })
            .await;
            match (permitted(access.select, role), result) {
                (true, Ok(counts)) if counts[0] >= 1 && (counts[1] == 0 || registry_reader) => {}
                (false, Err(error)) if sqlstate(&error) == "42501" => {}
                (expected, outcome) => failures.push(format!(
                    "{role} select {table}: expected allowed={expected}, got {outcome:?}"
                )),
            }

            // INSERT for its own tenant: allowed exactly when the role model says so.
            let exercise_ref = exercise;
            let result = attempt(&database, a.tenant, role, |connection| {
                Box::pin(async move {
                    run_insert(connection, exercise_ref, &a, a.tenant)
                        .await
                        .map(|rows| vec![rows as i64])
                })
            })
            .await;
            match (permitted(access.insert, role), result) {
                (true, Ok(rows)) if rows[0] == 1 => {}
                (false, Err(error)) if sqlstate(&error) == "42501" => {}
                (expected, outcome) => failures.push(format!(
                    "{role} insert {table}: expected allowed={expected}, got {outcome:?}"
                )),
            }

            // INSERT a row for tenant B: refused, whatever the role.
            let result = attempt(&database, a.tenant, role, |connection| {
                Box::pin(async move {
                    run_insert(connection, exercise_ref, &a, b.tenant)
                        .await
                        .map(|rows| vec![rows as i64])
                })
            })
            .await;
            match result {
                Err(error) if sqlstate(&error) == "42501" => {}
                outcome => failures.push(format!(
                    "{role} insert {table} for tenant B: expected refusal, got {outcome:?}"
                )),
            }

            // UPDATE and DELETE: A's rows when allowed; B's rows never.
            let column = exercise.update_column;
            for (verb, allowed_by) in [("update", access.update), ("delete", access.delete)] {
                for (target, label) in [(a.tenant, "own"), (b.tenant, "tenant B's")] {
                    let statement = match verb {
                        "update" => {
                            format!("update {table} set {column} = {column} where tenant_id = $1")
                        }
                        _ => format!("delete from {table} where tenant_id = $1"),
                    };
                    let result = attempt(&database, a.tenant, role, |connection| {
                        Box::pin(async move {
                            sqlx::query(sqlx::AssertSqlSafe(statement))
                                .bind(target.as_uuid())
                                .execute(connection)
                                .await
                                .map(|done| vec![done.rows_affected() as i64])
                        })
                    })
                    .await;
                    let allowed = permitted(allowed_by, role);
                    let ok = match (&result, allowed, target == a.tenant) {
                        (Ok(rows), true, true) => rows[0] >= 1,
                        (Ok(rows), true, false) => rows[0] == 0,
                        (Err(error), false, _) => sqlstate(error) == "42501",
                        _ => false,
                    };
                    if !ok {
                        failures.push(format!(
                            "{role} {verb} {label} rows of {table}: expected allowed={allowed}, got {result:?}"
                        ));
                    }
                }
            }

            // Moving one of A's rows to tenant B: refused, whatever the role.
            let statement = format!("update {table} set tenant_id = $2 where tenant_id = $1");
            let result = attempt(&database, a.tenant, role, |connection| {
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(statement))
                        .bind(a.tenant.as_uuid())
                        .bind(b.tenant.as_uuid())
                        .execute(connection)
                        .await
                        .map(|done| vec![done.rows_affected() as i64])
                })
            })
            .await;
            match result {
                Err(error) if sqlstate(&error) == "42501" => {}
                outcome => failures.push(format!(
                    "{role} moving a row of {table} to tenant B: expected refusal, got {outcome:?}"
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} matrix failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn no_tenant_or_an_empty_tenant_means_zero_rows() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    arrange(&test_database, &database).await;

    let mut app = PgConnection::connect_with(&test_database.settings().app_options())
        .await
        .unwrap();
    for database_role in [
        "tributary_tenant_owner",
        "tributary_tenant_admin",
        "tributary_tenant_operator",
        "tributary_tenant_viewer",
        "tributary_internal_ops",
        "tributary_control",
    ] {
        for setting in [None, Some("")] {
            for exercise in EXERCISES {
                let table = exercise.table;
                if database_role == "tributary_internal_ops" && REGISTRY_TABLES.contains(&table) {
                    continue; // the registry is what internal operations reads across tenants
                }
                let mut tx = app.begin().await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "set local role {database_role}"
                )))
                .execute(&mut *tx)
                .await
                .unwrap();
                if let Some(value) = setting {
                    sqlx::query("select set_config('tributary.tenant_id', $1, true)")
                        .bind(value)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                let count: Result<i64, _> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "select count(*) from {table}"
                )))
                .fetch_one(&mut *tx)
                .await;
                match count {
                    Ok(0) => {}
                    Err(error) if sqlstate(&error) == "42501" => {}
                    other => panic!(
                        "{database_role} with tenant {setting:?} saw {other:?} rows of {table}"
                    ),
                }
                tx.rollback().await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn a_pooled_connection_forgets_its_tenant() {
    let test_database = TestDatabase::new().await;
    let full = test_database.connect().await;
    let (a, _) = arrange(&test_database, &full).await;
    // One connection, so the second transaction surely reuses the first one's backend.
    let database = Database::connect_with(test_database.settings(), 1)
        .await
        .unwrap();

    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant: a.tenant,
            user: domain::UserId::new_random(),
            role: Role::Viewer,
        },
    )
    .await
    .unwrap();
    let seen: i64 = sqlx::query_scalar("select count(*) from analytics.devices")
        .fetch_one(tx.connection_for_tests())
        .await
        .unwrap();
    assert_eq!(seen, 1);
    tx.commit().await.unwrap();

    let mut reused = database.app.pool_for_tests().begin().await.unwrap();
    let (user, tenant_setting): (String, Option<String>) =
        sqlx::query_as("select current_user::text, current_setting('tributary.tenant_id', true)")
            .fetch_one(&mut *reused)
            .await
            .unwrap();
    assert_eq!(
        user, "tributary_app",
        "the role switch ended with the transaction"
    );
    assert!(
        tenant_setting.unwrap_or_default().is_empty(),
        "the tenant ended with the transaction"
    );
    let direct = sqlx::query_scalar::<_, i64>("select count(*) from analytics.devices")
        .fetch_one(&mut *reused)
        .await;
    assert!(
        matches!(&direct, Err(error) if sqlstate(error) == "42501"),
        "{direct:?}"
    );
    reused.rollback().await.unwrap();

    let mut reused = database.app.pool_for_tests().begin().await.unwrap();
    sqlx::query("set local role tributary_tenant_viewer")
        .execute(&mut *reused)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("select count(*) from analytics.devices")
        .fetch_one(&mut *reused)
        .await
        .unwrap();
    assert_eq!(seen, 0, "a transaction that sets no tenant sees nothing");
    reused.rollback().await.unwrap();
}

#[tokio::test]
async fn concurrent_tenants_through_one_pool_only_ever_see_their_own_rows() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (a, b) = arrange(&test_database, &database).await;
    let mut tasks = Vec::new();
    for round in 0..200 {
        let database = database.clone();
        let tenant = if round % 2 == 0 { a.tenant } else { b.tenant };
        tasks.push(tokio::spawn(async move {
            let mut tx = member_tx(&database, tenant, Role::Viewer).await;
            let tenants: Vec<Uuid> = sqlx::query_scalar(
                "select tenant_id from analytics.devices union all \
                 select tenant_id from analytics.sites union all \
                 select tenant_id from control.members",
            )
            .fetch_all(tx.connection_for_tests())
            .await
            .unwrap();
            tx.commit().await.unwrap();
            assert!(!tenants.is_empty());
            assert!(
                tenants.iter().all(|seen| seen == tenant.as_uuid()),
                "round {round} saw another tenant"
            );
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Collects the text of every PostgreSQL notice the connection receives.
#[derive(Clone, Default)]
struct Notices(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Notices {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message<'a>(&'a mut Vec<String>);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push(format!("{value:?}"));
            }
            fn record_str(&mut self, _: &tracing::field::Field, value: &str) {
                self.0.push(value.to_owned());
            }
        }
        if event.metadata().target() == "sqlx::postgres::notice" {
            event.record(&mut Message(&mut self.0.lock().unwrap()));
        }
    }
}

#[tokio::test]
async fn a_leaky_function_in_a_where_clause_never_sees_another_tenants_values() {
    use tracing_subscriber::layer::SubscriberExt;

    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (a, b) = arrange(&test_database, &database).await;
    let mut admin = test_database.admin().await;
    // The PostgreSQL regression suite's trick: a cheap, non-leakproof function that reports
    // every argument it is called with.
    sqlx::raw_sql(
        "create function public.leak(value text) returns boolean language plpgsql cost 0.0000001 \
         as $$ begin raise notice 'leak: %', value; return true; end $$; \
         grant execute on function public.leak(text) to public;",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    let notices = Notices::default();
    let subscriber = tracing_subscriber::registry().with(notices.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    for (table, column) in [
        ("analytics.devices", "name"),
        ("analytics.sites", "name"),
        ("analytics.extras_text", "value"),
        ("bronze.cdc_events", "payload::text"),
    ] {
        let mut tx = member_tx(&database, a.tenant, Role::Owner).await;
        let statement = format!("select count(*) from {table} where public.leak({column})");
        let _: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
            .fetch_one(tx.connection_for_tests())
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }
    let seen = notices.0.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|notice| notice.contains(&a.tenant.to_string())),
        "the probe must observe tenant A's own values, or it proves nothing: {seen:?}"
    );
    let leaked: Vec<_> = seen
        .iter()
        .filter(|notice| notice.contains(&b.tenant.to_string()))
        .collect();
    assert!(leaked.is_empty(), "tenant B's values leaked: {leaked:?}");
}

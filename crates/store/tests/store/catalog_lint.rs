//! The catalog lint over a freshly migrated database finds nothing, and finds each kind of
//! broken promise. Roles are shared by every database of the test cluster: what the second test
//! breaks, a role's BYPASSRLS included, it breaks inside a transaction it rolls back, so the
//! first test (and any other running at the same time) never sees it.

use sqlx::{Connection, PgConnection};
use test_support::TestDatabase;

#[tokio::test]
async fn freshly_migrated_database_has_zero_findings() {
    let database = TestDatabase::new().await;
    let findings = store::catalog::lint(
        database.settings(),
        &database.preexisting_privileged_logins(),
    )
    .await
    .unwrap();
    assert!(findings.is_empty(), "catalog lint findings: {findings:#?}");
}

#[tokio::test]
async fn lint_reports_what_it_is_meant_to_catch() {
    let database = TestDatabase::new().await;
    let mut connection = PgConnection::connect_with(&database.settings().admin)
        .await
        .unwrap();
    let mut tx = connection.begin().await.unwrap();
    // Break one promise of each kind, as a careless migration would.
    sqlx::raw_sql(
        "create table analytics.careless (tenant_id uuid, note text);
         create unique index careless_note on analytics.careless (note);
         alter table analytics.sites no force row level security;
         create function app.definer_without_path() returns int language sql security definer
             as 'select 1';
         grant truncate on analytics.devices to tributary_tenant_admin;
         grant select on global_analytics.rollup_min to tributary_tenant_viewer;
         grant insert on global_analytics.rollup_hr to tributary_service;
         create view analytics.careless_view as select * from analytics.devices;
         alter role tributary_control bypassrls;",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let findings = store::catalog::lint_on(
        &mut tx,
        database.settings().admin_role(),
        &database.preexisting_privileged_logins(),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let bypasses: bool =
        sqlx::query_scalar("select rolbypassrls from pg_roles where rolname = 'tributary_control'")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert!(!bypasses, "the broken role never outlives the transaction");
    let has = |check: &str, object: &str| {
        findings
            .iter()
            .any(|finding| finding.check == check && finding.object.contains(object))
    };
    for (check, object) in [
        (
            "role other than the aggregator can write cross-tenant rollups",
            "tributary_service on global_analytics.rollup_hr",
        ),
        (
            "tenant table without RLS enabled and forced",
            "analytics.careless",
        ),
        (
            "tenant table without RLS enabled and forced",
            "analytics.sites",
        ),
        (
            "tenant table without a restrictive tenant policy for all commands",
            "analytics.careless",
        ),
        (
            "unique index on a tenant table without tenant_id",
            "careless_note",
        ),
        (
            "index on a tenant table not led by tenant_id",
            "careless_note",
        ),
        (
            "SECURITY DEFINER function without a pinned search_path",
            "definer_without_path",
        ),
        (
            "SECURITY DEFINER function executable by PUBLIC",
            "definer_without_path",
        ),
        (
            "request or service role with TRUNCATE or REFERENCES",
            "analytics.devices",
        ),
        ("tenant role can read cross-tenant rollups", "rollup_min"),
        ("view without security_invoker", "careless_view"),
        (
            "request role that is, or is a member of, a superuser or BYPASSRLS role",
            "tributary_control",
        ),
        (
            "tenant table missing from the store's TENANT_TABLES",
            "analytics.careless",
        ),
    ] {
        assert!(
            has(check, object),
            "expected {check:?} for {object}, got {findings:#?}"
        );
    }
}

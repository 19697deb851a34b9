//! What the schema promises about tenant isolation, in two forms: [`TENANT_TABLES`], the
//! table-driven statement of which permission each operation on each tenant table needs, and
//! [`lint`], which reads the database catalog and reports every place the promises do not hold.

use domain::Permission::{self, *};
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::{ConnectionSettings, StoreError};

/// Which permissions allow each operation on a tenant table (any one of them suffices; an empty
/// list means no member or operations role may do it). The database grants in the migrations
/// implement this; the role-matrix test checks the two agree.
#[derive(Debug, Clone, Copy)]
pub struct TableAccess {
    pub table: &'static str,
    pub select: &'static [Permission],
    pub insert: &'static [Permission],
    pub update: &'static [Permission],
    pub delete: &'static [Permission],
}

const NOBODY: &[Permission] = &[];
const fn read_only(table: &'static str, select: &'static [Permission]) -> TableAccess {
    TableAccess {
        table,
        select,
        insert: NOBODY,
        update: NOBODY,
        delete: NOBODY,
    }
}

/// Every table holding tenant data. The catalog lint fails when a table with a `tenant_id`
/// column is missing here, so a new table cannot skip the isolation matrix.
pub const TENANT_TABLES: &[TableAccess] = &[
    TableAccess {
        table: "control.dim_tenant",
        select: &[ViewWorkspace, ViewTenantRegistry],
        insert: NOBODY,
        update: &[ManageWorkspace],
        delete: NOBODY,
    },
    read_only("control.tenant_usage", &[ViewWorkspace, ViewTenantRegistry]),
    TableAccess {
        table: "control.members",
        select: &[ViewWorkspace],
        insert: &[ManageMembers],
        update: &[ManageMembers],
        delete: &[ManageMembers],
    },
    TableAccess {
        table: "control.tenant_settings",
        select: &[ManageRetention],
        insert: NOBODY,
        update: &[ManageRetention],
        delete: NOBODY,
    },
    TableAccess {
        table: "control.pii_masking_policy",
        select: &[ManageMasking],
        insert: &[ManageMasking],
        update: &[ManageMasking],
        delete: &[ManageMasking],
    },
    TableAccess {
        table: "control.sources",
        select: &[ViewSources],
        insert: &[ManageSources],
        update: &[ManageSources],
        delete: &[ManageSources],
    },
    TableAccess {
        table: "control.pairing_tokens",
        select: &[ManageSources],
        insert: &[ManageSources],
        update: NOBODY,
        delete: NOBODY,
    },
    TableAccess {
        table: "control.certificates",
        select: &[ViewSources],
        insert: NOBODY,
        update: &[ManageSources],
        delete: NOBODY,
    },
    read_only("control.tenant_secrets", NOBODY),
    read_only("control.source_status", &[ViewSources]),
    read_only("control.source_status_history", &[ViewSources]),
    read_only("control.source_checks", &[ViewSources]),
    TableAccess {
        table: "control.api_tokens",
        select: &[ManageApiTokens],
        insert: &[ManageApiTokens],
        update: &[ManageApiTokens],
        delete: NOBODY,
    },
    TableAccess {
        table: "control.invitations",
        select: &[ManageMembers],
        insert: &[ManageMembers],
        update: &[ManageMembers],
        delete: NOBODY,
    },
    TableAccess {
        table: "control.read_model_mappings",
        select: &[ViewSources],
        insert: &[ManageSources],
        update: &[ManageSources],
        delete: &[ManageSources],
    },
    TableAccess {
        table: "control.dashboards",
        select: &[ViewDashboards],
        insert: &[ManageWorkspace],
        update: &[ManageWorkspace],
        delete: &[ManageWorkspace],
    },
    TableAccess {
        table: "control.alert_rules",
        select: &[ViewDashboards],
        insert: &[ManageAlertRules],
        update: &[ManageAlertRules],
        delete: &[ManageAlertRules],
    },
    TableAccess {
        table: "control.alert_channels",
        select: &[ViewDashboards],
        insert: &[ManageAlertRules],
        update: &[ManageAlertRules],
        delete: &[ManageAlertRules],
    },
    TableAccess {
        table: "control.alert_states",
        select: &[ViewDashboards],
        insert: NOBODY,
        update: &[AcknowledgeAlerts],
        delete: NOBODY,
    },
    TableAccess {
        table: "control.alert_events",
        select: &[ViewDashboards],
        insert: &[AcknowledgeAlerts],
        update: NOBODY,
        delete: NOBODY,
    },
    TableAccess {
        table: "control.alert_silences",
        select: &[ViewDashboards],
        insert: &[AcknowledgeAlerts],
        update: &[AcknowledgeAlerts],
        delete: NOBODY,
    },
    TableAccess {
        table: "pipeline.alert_outbox",
        select: &[AcknowledgeAlerts],
        insert: &[ManageAlertRules],
        update: NOBODY,
        delete: NOBODY,
    },
    TableAccess {
        table: "control.reports",
        select: &[ViewDashboards],
        insert: &[ManageReports],
        update: &[ManageReports],
        delete: &[ManageReports],
    },
    TableAccess {
        table: "control.report_schedules",
        select: &[ViewDashboards],
        insert: &[ManageReports],
        update: &[ManageReports],
        delete: &[ManageReports],
    },
    TableAccess {
        table: "control.report_runs",
        select: &[ViewDashboards],
        insert: &[RunReports],
        update: NOBODY,
        delete: NOBODY,
    },
    read_only("bronze.cdc_events", &[ViewBronze]),
    read_only("pipeline.dedupe", NOBODY),
    read_only("pipeline.dlq", &[ViewDeadLetters]),
    read_only("pipeline.entity_state", NOBODY),
    read_only("pipeline.metric_readings", NOBODY),
    read_only("pipeline.source_truncates", NOBODY),
    read_only("pipeline.unmapped_tables", &[ManageSources]),
    TableAccess {
        table: "pipeline.drift_fields",
        select: &[ManageSources],
        insert: NOBODY,
        update: &[ManageSources],
        delete: NOBODY,
    },
    TableAccess {
        table: "pipeline.replay_requests",
        select: &[ManageReplays],
        insert: &[ManageReplays],
        update: NOBODY,
        delete: NOBODY,
    },
    read_only("analytics.sites", &[ViewDashboards]),
    read_only("analytics.devices", &[ViewDashboards]),
    read_only("analytics.sessions", &[ViewDashboards]),
    read_only("analytics.metrics_min", &[ViewDashboards]),
    read_only("analytics.metrics_hour", &[ViewDashboards]),
    read_only("analytics.metric_kinds", &[ViewDashboards]),
    read_only("analytics.metric_series", &[ViewDashboards]),
    read_only("analytics.extras_text", &[ViewDashboards]),
    read_only("analytics.extras_num", &[ViewDashboards]),
    read_only("analytics.extras_bool", &[ViewDashboards]),
    read_only("analytics.extras_time", &[ViewDashboards]),
    TableAccess {
        table: "audit.log",
        select: &[ViewAudit],
        insert: &[AppendAudit],
        update: NOBODY,
        delete: NOBODY,
    },
    read_only("audit.chain_head", &[ViewAudit]),
    TableAccess {
        table: "control.sso_configs",
        select: &[ManageSso],
        insert: &[ManageSso],
        update: &[ManageSso],
        delete: &[ManageSso],
    },
    // Verification is set by the control role completing an owner's test sign-in, never by a
    // tenant role (migration 0014).
    TableAccess {
        table: "control.sso_domains",
        select: &[ManageSso],
        insert: &[ManageSso],
        update: NOBODY,
        delete: &[ManageSso],
    },
    read_only("control.sso_flows", NOBODY),
];

/// Indexes on tenant tables that deliberately do not start with `tenant_id`, each with its
/// reason. A verified email domain routes SSO sign-in to exactly one workspace, so "verified at
/// most once" is a global fact the database must enforce across tenants (migration 0014). The
/// global aggregator (its own role, the only cross-tenant reader of metrics) recomputes "this
/// key at this minute or hour, every tenant", which an index led by the tenant cannot serve
/// (migration 0033). The alert evaluator and deliverer, on the service handle, take the rules and
/// notifications due next across tenants (migration 0034).
pub const GLOBAL_INDEXES: &[&str] = &[
    "control.sso_domains_verified_once",
    "analytics.metrics_min_rollup_idx",
    "analytics.metrics_hour_rollup_idx",
    // The alert evaluator and deliverer take what is due across tenants (migration 0034).
    "control.alert_rules_due_idx",
    "pipeline.alert_outbox_due_idx",
    // The report runner takes queued runs across tenants (migration 0035).
    "control.report_runs_queued_idx",
    // The report scheduler takes due schedules across tenants (migration 0036).
    "control.report_schedules_due_idx",
];

/// The schemas the platform owns.
pub const PLATFORM_SCHEMAS: &[&str] = &[
    "app",
    "control",
    "bronze",
    "analytics",
    "pipeline",
    "audit",
    "global_analytics",
];

/// Roles that serve requests or tenants, none of which may bypass isolation.
pub const REQUEST_ROLES: &[&str] = &[
    "tributary_app",
    "tributary_control",
    "tributary_internal_ops",
    "tributary_tenant_owner",
    "tributary_tenant_admin",
    "tributary_tenant_operator",
    "tributary_tenant_viewer",
];

/// One place the schema breaks an isolation rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub object: String,
}

/// The catalog checks, each a query returning the offending objects. `$1` is the platform
/// schemas, `$2` the request roles, `$3` the administrative role migrations run as, `$4` the
/// tables in [`TENANT_TABLES`], `$5` further documented break-glass logins, `$6` the
/// [`GLOBAL_INDEXES`].
const CHECKS: &[(&str, &str)] = &[
    (
        "tenant table without RLS enabled and forced",
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p') and n.nspname = any($1) and n.nspname <> 'global_analytics'
           and exists (select 1 from pg_attribute a
                       where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped)
           and not (c.relrowsecurity and c.relforcerowsecurity)",
    ),
    (
        "tenant table without a restrictive tenant policy for all commands",
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p') and n.nspname = any($1) and n.nspname <> 'global_analytics'
           and exists (select 1 from pg_attribute a
                       where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped)
           and not exists (
               select 1 from pg_policy p
               where p.polrelid = c.oid and not p.polpermissive and p.polcmd = '*'
                 and p.polroles = '{0}'
                 and pg_get_expr(p.polqual, p.polrelid) like '%app.current_tenant_id()%'
                 and pg_get_expr(p.polwithcheck, p.polrelid) like '%app.current_tenant_id()%')",
    ),
    (
        "table without RLS",
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p') and n.nspname = any($1)
           and not (c.relrowsecurity and c.relforcerowsecurity)",
    ),
    (
        "RLS enabled without any policy",
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p') and n.nspname = any($1) and c.relrowsecurity
           and not exists (select 1 from pg_policy p where p.polrelid = c.oid)",
    ),
    (
        "permissive policy that allows everything on a tenant table",
        "select c.oid::regclass::text || ' ' || p.polname
         from pg_policy p join pg_class c on c.oid = p.polrelid
         join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any($1) and n.nspname <> 'global_analytics' and p.polpermissive
           and p.polcmd in ('*', 'w', 'd')
           and exists (select 1 from pg_attribute a
                       where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped)
           and coalesce(pg_get_expr(p.polqual, p.polrelid), 'true') = 'true'",
    ),
    (
        "login role other than the service role with superuser or BYPASSRLS",
        "select rolname::text from pg_roles
         where rolcanlogin and (rolsuper or rolbypassrls)
           and rolname <> 'tributary_service' and rolname <> $3 and oid <> 10
           and not (rolname = any($5))",
    ),
    (
        "request role that is, or is a member of, a superuser or BYPASSRLS role",
        "with recursive granted(member, role) as (
             select r.oid, r.oid from pg_roles r where r.rolname = any($2)
             union
             select g.member, m.roleid from granted g join pg_auth_members m on m.member = g.role)
         select distinct m.rolname || ' via ' || r.rolname
         from granted g join pg_roles m on m.oid = g.member join pg_roles r on r.oid = g.role
         where r.rolsuper or r.rolbypassrls",
    ),
    (
        "unique index on a tenant table without tenant_id",
        "select i.indexrelid::regclass::text from pg_index i
         join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace
         join pg_attribute t on t.attrelid = c.oid and t.attname = 'tenant_id'
         where i.indisunique and n.nspname = any($1) and not t.attnum = any(i.indkey)
           and not (i.indexrelid::regclass::text = any($6))",
    ),
    (
        "index on a tenant table not led by tenant_id",
        "select i.indexrelid::regclass::text from pg_index i
         join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace
         join pg_attribute t on t.attrelid = c.oid and t.attname = 'tenant_id'
         where n.nspname = any($1) and i.indkey[0] <> t.attnum
           and not (i.indexrelid::regclass::text = any($6))",
    ),
    (
        "foreign key between tenant tables without tenant_id",
        "select con.conrelid::regclass::text || ' ' || con.conname from pg_constraint con
         join pg_namespace n on n.oid = con.connamespace
         join pg_attribute t on t.attrelid = con.conrelid and t.attname = 'tenant_id'
         join pg_attribute ft on ft.attrelid = con.confrelid and ft.attname = 'tenant_id'
         where con.contype = 'f' and n.nspname = any($1)
           and not (t.attnum = any(con.conkey) and ft.attnum = any(con.confkey))",
    ),
    (
        "request or service role with TRUNCATE or REFERENCES",
        "select r.rolname || ' on ' || c.oid::regclass::text from pg_class c
         join pg_namespace n on n.oid = c.relnamespace
         cross join pg_roles r
         where c.relkind in ('r', 'p', 'v', 'm') and n.nspname = any($1)
           and (r.rolname = any($2) or r.rolname = 'tributary_service')
           and (has_table_privilege(r.oid, c.oid, 'TRUNCATE')
                or has_table_privilege(r.oid, c.oid, 'REFERENCES'))",
    ),
    (
        "SECURITY DEFINER function without a pinned search_path",
        "select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where p.prosecdef and n.nspname = any($1)
           and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) setting
                           where setting like 'search_path=%')",
    ),
    (
        "SECURITY DEFINER function executable by PUBLIC",
        "select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where p.prosecdef and n.nspname = any($1)
           and (p.proacl is null or exists (select 1 from aclexplode(p.proacl) acl
                                            where acl.grantee = 0
                                              and acl.privilege_type = 'EXECUTE'))",
    ),
    (
        "function marked LEAKPROOF",
        "select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where p.proleakproof and n.nspname = any($1)",
    ),
    (
        "view without security_invoker",
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind = 'v' and n.nspname = any($1)
           and not coalesce(c.reloptions @> array['security_invoker=true'], false)
           and not coalesce(c.reloptions @> array['security_invoker=on'], false)",
    ),
    (
        "materialized view in a platform schema (no RLS possible)",
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind = 'm' and n.nspname = any($1)",
    ),
    (
        "object owned by a login or request role",
        "select c.oid::regclass::text || ' owned by ' || r.rolname from pg_class c
         join pg_namespace n on n.oid = c.relnamespace join pg_roles r on r.oid = c.relowner
         where n.nspname = any($1)
           and (r.rolname = any($2) or r.rolname = 'tributary_service')",
    ),
    (
        "tenant role can read cross-tenant rollups",
        "select r.rolname || ' on ' || c.oid::regclass::text from pg_class c
         join pg_namespace n on n.oid = c.relnamespace cross join pg_roles r
         where n.nspname = 'global_analytics' and c.relkind in ('r', 'p', 'v', 'm')
           and r.rolname in ('tributary_app', 'tributary_control', 'tributary_tenant_owner',
                             'tributary_tenant_admin', 'tributary_tenant_operator',
                             'tributary_tenant_viewer')
           and has_table_privilege(r.oid, c.oid, 'SELECT')",
    ),
    (
        "role other than the aggregator can write cross-tenant rollups",
        "select r.rolname || ' on ' || c.oid::regclass::text from pg_class c
         join pg_namespace n on n.oid = c.relnamespace cross join pg_roles r
         where n.nspname = 'global_analytics' and c.relkind in ('r', 'p')
           and r.rolname like 'tributary\\_%' and not r.rolsuper and r.rolname <> $3
           and r.rolname not in ('tributary_aggregator', 'tributary_owner')
           and (has_table_privilege(r.oid, c.oid, 'INSERT')
                or has_table_privilege(r.oid, c.oid, 'UPDATE')
                or has_table_privilege(r.oid, c.oid, 'DELETE'))",
    ),
    (
        "tenant table missing from the store's TENANT_TABLES",
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p') and not c.relispartition and n.nspname = any($1)
           and exists (select 1 from pg_attribute a
                       where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped)
           and not (c.oid::regclass::text = any($4))",
    ),
];

/// Runs every catalog check against the platform database, connecting as the administrative
/// login (the catalog queries need to see every role). An empty result means the schema keeps
/// its isolation promises. Besides the service role, the administrative login migrations run as
/// and the cluster's bootstrap superuser are the documented logins that may bypass RLS;
/// `break_glass` names any further ones the operator of a shared server has documented.
pub async fn lint(
    settings: &ConnectionSettings,
    break_glass: &[String],
) -> Result<Vec<Finding>, StoreError> {
    let mut connection = PgConnection::connect_with(&settings.admin).await?;
    let findings = lint_on(&mut connection, settings.admin_role(), break_glass).await?;
    connection.close().await?;
    Ok(findings)
}

/// [`lint`] on a connection of the administrative login `admin_role`. Inside a transaction it
/// sees that transaction's own uncommitted changes: roles are shared by every database of a
/// cluster, so a test that breaks a role's promises does it in a transaction it rolls back, and
/// no other database (or test) ever sees the broken role.
pub async fn lint_on(
    connection: &mut PgConnection,
    admin_role: &str,
    break_glass: &[String],
) -> Result<Vec<Finding>, StoreError> {
    let tenant_tables: Vec<&str> = TENANT_TABLES.iter().map(|access| access.table).collect();
    let mut findings = Vec::new();
    for (check, query) in CHECKS {
        let objects: Vec<String> = sqlx::query_scalar(*query)
            .bind(PLATFORM_SCHEMAS)
            .bind(REQUEST_ROLES)
            .bind(admin_role)
            .bind(&tenant_tables)
            .bind(break_glass)
            .bind(GLOBAL_INDEXES)
            .fetch_all(&mut *connection)
            .await?;
        findings.extend(objects.into_iter().map(|object| Finding { check, object }));
    }
    Ok(findings)
}

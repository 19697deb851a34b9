-- What the read layer (crates/store/src/analytics.rs) needs to answer the series of one device
-- or site and the lists by most recent without reading what it does not return
-- (docs/benchmarks.md, `tributary-bench dashboard`, has the figures that asked for it).

-- A series of a site reads the readings of the site's sessions: found by their site.
create index sessions_site_idx on analytics.sessions (tenant_id, site_id);

-- A time as text that sorts as the time does (byte order): the sort value of an entity list
-- sorted by a time, which its cursor carries. `to_char` is only stable because some of its
-- patterns follow the locale; these (digits of a UTC time) do not, so the function is
-- immutable and an index can hold it. Declared immutable over a stable body, it is never
-- inlined, so a list's order and this index name the same expression.
create function analytics.sort_time(at timestamptz) returns text
    language sql immutable strict parallel safe
    as $$ select to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') $$;
-- A pure function of its argument: anyone who can read a time may format it.
grant execute on function analytics.sort_time(timestamptz) to public;

-- Live sessions in the order of a list sorted by most recent (`entity_page!`: sessions without
-- a start last, then the start, then the id, in byte order): a page is the first rows of the
-- index after the cursor, read forwards or backwards, not a sort of every session.
create index sessions_live_recent_idx on analytics.sessions (
    tenant_id,
    (analytics.sort_time(started_at) is null),
    (coalesce(analytics.sort_time(started_at), '') collate "C"),
    session_id collate "C"
) where deleted_at is null;

-- Which entity kinds hold readings of each metric key: a series of a device or a site reads
-- only the entities of kinds that hold its key (a site's sessions, where only devices report
-- the key, are hundreds of lookups that find nothing). Kept by a trigger on every insert into
-- metrics_min, whoever writes it, in the writer's transaction: a (key, kind) with minutes
-- always has its row here. Rows are never removed but with the tenant's read models: one that
-- outlives its readings only costs a lookup.
create table analytics.metric_kinds (
    tenant_id    uuid not null,
    metric_key   text not null check (length(metric_key) between 1 and 200),
    entity_kind  text not null check (entity_kind in ('site', 'device', 'session')),
    primary key (tenant_id, metric_key, entity_kind)
);
select app.enforce_tenant_rls('analytics.metric_kinds');
grant select on analytics.metric_kinds to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant select, insert, delete on analytics.metric_kinds to tributary_service;

create function analytics.note_metric_kinds() returns trigger
    language plpgsql
    set search_path = pg_catalog
as $$
begin
    insert into analytics.metric_kinds (tenant_id, metric_key, entity_kind)
    select distinct tenant_id, metric_key, entity_kind from inserted
    on conflict do nothing;
    return null;
end
$$;

create trigger metrics_min_note_kinds after insert on analytics.metrics_min
    referencing new table as inserted
    for each statement execute function analytics.note_metric_kinds();

-- Every minute has its hour (the transaction that writes one writes the other).
insert into analytics.metric_kinds (tenant_id, metric_key, entity_kind)
select distinct tenant_id, metric_key, entity_kind from analytics.metrics_hour;

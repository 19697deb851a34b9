-- Tables nobody mapped, and payloads kept as sent (docs/materializer.md, docs/protocol.md).
--
-- unmapped_tables: the source tables whose events the materializer found no mapping for, stored
-- or by convention. Such events are not failures: they stay in bronze, counted here per table,
-- and a rebuild applies them once the table is mapped. The count is of deliveries (the bus
-- delivers at least once), recounted exactly from bronze by a rebuild; the times are the
-- events' own (the source's commit times).
create table pipeline.unmapped_tables (
    tenant_id      uuid not null,
    source_id      uuid not null,
    schema_name    text not null check (length(schema_name) between 1 and 1000),
    table_name     text not null check (length(table_name) between 1 and 1000),
    events         bigint not null check (events >= 0),
    first_seen_at  timestamptz not null,
    last_seen_at   timestamptz not null,
    primary key (tenant_id, source_id, schema_name, table_name)
);
select app.enforce_tenant_rls('pipeline.unmapped_tables');
grant select on pipeline.unmapped_tables to tributary_tenant_owner, tributary_tenant_admin;
grant select, insert, update, delete on pipeline.unmapped_tables to tributary_service;

-- jsonb keeps numbers as numeric, which has no negative zero: `-0.0` would read back as `0.0`.
-- An event whose payload jsonb would change keeps its exact text here too (null otherwise, the
-- common case, so bronze does not grow); readers take payload_exact when it is set.
alter table bronze.cdc_events add column payload_exact json;

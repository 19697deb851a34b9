-- The schema-drift inbox (docs/materializer.md): the source fields that no typed column of their
-- entity claims, so the materializer keeps them in the typed extras. The materializer adds one
-- row per (source, schema, table, entity kind, field, JSON type) it sees, once per batch; the
-- times are the events' own (the source's commit times) and `row_count` counts the events
-- carrying the field as delivered (at least once; a rebuild recounts from bronze). Owners and
-- admins read them and dismiss one (its type): a dismissed row stays hidden, while a type of the
-- field not seen before is a new row and shows.
create table pipeline.drift_fields (
    tenant_id      uuid not null,
    drift_id       uuid not null default gen_random_uuid(),
    source_id      uuid not null,
    schema_name    text not null check (length(schema_name) between 1 and 1000),
    table_name     text not null check (length(table_name) between 1 and 1000),
    entity_kind    text not null check (entity_kind in ('site', 'device', 'session')),
    field_name     text not null check (length(field_name) between 1 and 500),
    json_type      text not null
                       check (json_type in ('string', 'time', 'number', 'boolean', 'array',
                           'object')),
    row_count      bigint not null check (row_count >= 0),
    first_seen_at  timestamptz not null,
    last_seen_at   timestamptz not null,
    dismissed_at   timestamptz,
    primary key (tenant_id, source_id, schema_name, table_name, entity_kind, field_name,
        json_type),
    unique (tenant_id, drift_id)
);
select app.enforce_tenant_rls('pipeline.drift_fields');
grant select, update (dismissed_at) on pipeline.drift_fields
    to tributary_tenant_owner, tributary_tenant_admin;
grant select, insert, update, delete on pipeline.drift_fields to tributary_service;

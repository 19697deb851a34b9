-- Each source's status over time, for the source's page (the slot-safety panel's retained WAL
-- chart and the forecast of when the slot would be invalidated) and `status-history` in the API.
-- `control.source_status` keeps only the latest heartbeat; the edge writes a sample here in the
-- same transaction, at most one per source and minute (the key: a second heartbeat within the
-- same minute inserts nothing), and deletes the source's samples older than the kept bound
-- through the same key, so pruning costs an index range per sample, never a table scan.
create table control.source_status_history (
    tenant_id          uuid not null,
    source_id          uuid not null,
    sampled_minute     timestamptz not null,
    sampled_at         timestamptz not null,
    state              text not null check (length(state) <= 64),
    wal_status         text check (length(wal_status) <= 32),
    retained_wal_bytes bigint,
    safe_wal_bytes     bigint,
    max_keep_bytes     bigint,
    lag_bytes          bigint,
    lag_seconds        double precision,
    spool_batches      bigint not null default 0,
    spool_bytes        bigint not null default 0,
    backpressure       boolean not null default false,
    acked_lsn          bigint,
    primary key (tenant_id, source_id, sampled_minute),
    check (sampled_minute = date_trunc('minute', sampled_minute)),
    foreign key (tenant_id, source_id) references control.sources (tenant_id, source_id)
        on delete cascade
);
select app.enforce_tenant_rls('control.source_status_history');
grant select on control.source_status_history to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_service;
grant insert, delete on control.source_status_history to tributary_service;

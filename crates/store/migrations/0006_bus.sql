-- The embedded stream bus: a durable, partitioned log inside the platform database, for
-- deployments that run nothing but PostgreSQL (docs/bus.md). Consumer groups keep their
-- positions in pipeline.checkpoints (migration 0003).
--
-- These tables hold no tenant_id column on purpose. A bus partition mixes the events of many
-- tenants (a tenant's partition is a hash of its id), so a row belongs to the bus, not to a
-- tenant, exactly like a segment of NATS's file store. The tenant travels inside the stored
-- message bytes and is checked by the consumers that write tenant tables. Only the pipeline's
-- service role may read or write here; every request role is refused by the grants and by
-- forced row-level security with a policy that admits the service role alone.

-- The next position of each partition. Appending locks the partition's row until commit, so
-- within a partition positions are handed out in commit order: a consumer reading
-- `position > checkpoint` can never miss a row that commits late with a lower position.
create table pipeline.bus_partition_head (
    partition      integer primary key check (partition >= 0),
    next_position  bigint not null default 1 check (next_position >= 1)
);
alter table pipeline.bus_partition_head enable row level security;
alter table pipeline.bus_partition_head force row level security;
create policy service_all on pipeline.bus_partition_head for all to tributary_service
    using (true) with check (true);
grant select, insert, update on pipeline.bus_partition_head to tributary_service;

-- The log. `message` is the bus's own framing of the tenant id and the opaque payload.
-- Positions may have gaps (a re-published duplicate consumes a position it never uses); they
-- never commit out of order.
create table pipeline.bus_log (
    partition    integer not null check (partition >= 0),
    position     bigint not null check (position >= 1),
    event_id     uuid not null,
    message      bytea not null,
    appended_at  timestamptz not null default now(),
    primary key (partition, position)
);
-- The duplicate window: a re-publish of an event id still in the log adds nothing. Pruning
-- (acked by every group and older than the window) bounds both the log and the window.
create unique index bus_log_event_idx on pipeline.bus_log (partition, event_id);
alter table pipeline.bus_log enable row level security;
alter table pipeline.bus_log force row level security;
create policy service_all on pipeline.bus_log for all to tributary_service
    using (true) with check (true);
grant select, insert, delete on pipeline.bus_log to tributary_service;

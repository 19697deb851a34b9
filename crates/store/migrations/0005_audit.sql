-- The append-only, hash-chained audit log.
--
-- Entry i of a tenant's chain stores hash_i = sha256(hash_{i-1} || canonical(entry_i)), with
-- hash_0 = 32 zero bytes, computed here by a trigger so that no writer can append a link that
-- does not fit. `audit.chain_head` remembers each chain's last link, which lets the verifier
-- notice a deleted tail. The database refuses UPDATE, DELETE and TRUNCATE of entries for every
-- role, the owner included; a superuser can still disable triggers, which is why `tributary
-- audit verify` recomputes every link outside the database.

grant usage on schema audit to tributary_service, tributary_control, tributary_internal_ops,
    tributary_tenant_owner, tributary_tenant_admin, tributary_tenant_operator,
    tributary_tenant_viewer;

create table audit.log (
    tenant_id    uuid not null,
    seq          bigint not null check (seq >= 1),
    entry_id     uuid not null default gen_random_uuid(),
    occurred_at  timestamptz not null default clock_timestamp(),
    actor_type   text not null check (actor_type in ('user', 'cli', 'system', 'agent')),
    actor_id     text not null check (length(actor_id) between 1 and 200),
    action       text not null check (action ~ '^[a-z][a-z0-9_.]{0,99}$'),
    target       text not null default '' check (length(target) <= 500),
    details      jsonb not null default '{}'::jsonb,
    client_addr  inet,
    prev_hash    bytea not null check (length(prev_hash) = 32),
    hash         bytea not null check (length(hash) = 32),
    primary key (tenant_id, seq),
    unique (tenant_id, entry_id)
);
create index log_time_idx on audit.log (tenant_id, occurred_at);
select app.enforce_tenant_rls('audit.log');

create table audit.chain_head (
    tenant_id  uuid primary key,
    seq        bigint not null check (seq >= 0),
    hash       bytea not null check (length(hash) = 32)
);
select app.enforce_tenant_rls('audit.chain_head');

-- The canonical encoding of an entry: a version tag, then every field as
-- `<byte length>:<text>\n`, so no field can bleed into the next. The verifier in the store crate
-- (audit.rs) encodes identically; `occurred_at` is encoded as microseconds since the Unix epoch.
create function audit.canonical(
    tenant_id uuid, seq bigint, occurred_at timestamptz, actor_type text, actor_id text,
    action text, target text, details jsonb, client_addr inet
) returns bytea
    language sql immutable parallel safe
    set search_path = pg_catalog
as $$
    select convert_to(string_agg(octet_length(field)::text || ':' || field || E'\n', '' order by n),
                      'UTF8')
    from unnest(array[
        'tributary-audit-v1',
        tenant_id::text,
        seq::text,
        ((extract(epoch from occurred_at) * 1000000)::bigint)::text,
        actor_type,
        actor_id,
        action,
        target,
        details::text,
        coalesce(client_addr::text, '')
    ]) with ordinality as fields(field, n)
$$;

create function audit.link_entry() returns trigger
    language plpgsql
    security definer
    set search_path = pg_catalog
as $$
declare
    head_seq bigint;
    head_hash bytea;
begin
    insert into audit.chain_head (tenant_id, seq, hash)
    values (new.tenant_id, 0, decode(repeat('00', 32), 'hex'))
    on conflict (tenant_id) do nothing;
    select h.seq, h.hash into strict head_seq, head_hash
    from audit.chain_head h where h.tenant_id = new.tenant_id for update;

    new.seq := head_seq + 1;
    new.prev_hash := head_hash;
    new.occurred_at := clock_timestamp();
    new.hash := sha256(head_hash || audit.canonical(
        new.tenant_id, new.seq, new.occurred_at, new.actor_type, new.actor_id, new.action,
        new.target, new.details, new.client_addr));

    update audit.chain_head set seq = new.seq, hash = new.hash
    where chain_head.tenant_id = new.tenant_id;
    return new;
end
$$;

create function audit.refuse_change() returns trigger
    language plpgsql
    set search_path = pg_catalog
as $$
begin
    raise exception 'the audit log is append-only: % is not allowed', tg_op
        using errcode = 'insufficient_privilege';
end
$$;

create trigger link_entry before insert on audit.log
    for each row execute function audit.link_entry();
create trigger refuse_update_delete before update or delete on audit.log
    for each row execute function audit.refuse_change();
create trigger refuse_truncate before truncate on audit.log
    for each statement execute function audit.refuse_change();
create trigger refuse_truncate before truncate on audit.chain_head
    for each statement execute function audit.refuse_change();

-- Whoever performs an audited action appends its entry in the same transaction.
grant insert (tenant_id, actor_type, actor_id, action, target, details, client_addr)
    on audit.log to tributary_tenant_owner, tributary_tenant_admin, tributary_tenant_operator,
       tributary_control, tributary_internal_ops, tributary_service;
grant select on audit.log to tributary_tenant_owner, tributary_tenant_admin,
    tributary_internal_ops, tributary_service;
grant select on audit.chain_head to tributary_tenant_owner, tributary_tenant_admin,
    tributary_internal_ops, tributary_service;

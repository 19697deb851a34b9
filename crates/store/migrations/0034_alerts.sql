-- Alerts (docs/alerts.md): a workspace's rules on its metrics and on its pipeline's health, the
-- channels their notices go to, the state of every series a rule watches, the timeline of what
-- happened to it, and silences. Every member sees rules, states, timelines and silences (viewers
-- see state only: they change nothing); owners and admins edit rules and channels; operators and
-- above acknowledge and silence. The evaluator and the deliverer run as the service role.

-- Where notices go. `target` is a URL (webhook, Slack-compatible incoming webhook) or an email
-- address; a Slack URL is itself a credential, so only the managing roles read `target`. A
-- webhook's signing secret is stored encrypted with the master secret (as tenant secrets are)
-- and read only by the service role that signs deliveries.
create table control.alert_channels (
    tenant_id          uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    channel_id         uuid not null default gen_random_uuid(),
    name               text not null check (length(name) between 1 and 100),
    kind               text not null check (kind in ('webhook', 'slack', 'email')),
    target             text not null check (length(target) between 3 and 2000),
    secret_ciphertext  bytea,
    secret_nonce       bytea,
    last_error         text check (length(last_error) <= 500),
    last_error_at      timestamptz,
    last_delivered_at  timestamptz,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    primary key (tenant_id, channel_id),
    unique (tenant_id, name),
    check ((secret_ciphertext is null) = (secret_nonce is null)),
    check (kind <> 'webhook' or secret_ciphertext is not null)
);
select app.enforce_tenant_rls('control.alert_channels');
grant select (tenant_id, channel_id, name, kind, last_error, last_error_at, last_delivered_at,
    created_at, updated_at) on control.alert_channels to tributary_tenant_operator,
    tributary_tenant_viewer;
grant select (tenant_id, channel_id, name, kind, target, last_error, last_error_at,
    last_delivered_at, created_at, updated_at) on control.alert_channels
    to tributary_tenant_owner, tributary_tenant_admin;
grant insert, update (name, target, secret_ciphertext, secret_nonce, updated_at), delete
    on control.alert_channels to tributary_tenant_owner, tributary_tenant_admin;
grant select, update (last_error, last_error_at, last_delivered_at) on control.alert_channels
    to tributary_service;

-- A rule: on a metric key (an aggregation of metrics_min over a window compared with a
-- threshold, optionally for one site or device, or one series per site or device), or on the
-- pipeline's health (a condition of a source, one or all: one series per source). A pipeline
-- condition's threshold is in the condition's unit: minutes disconnected or silent, seconds of
-- lag, bytes of retained WAL, dead letters added over the window, hours to invalidation. `for_secs` of breaching before it fires; reminders while firing and
-- unacknowledged; flap damping. The evaluator takes due rules by `next_evaluation_at`.
create table control.alert_rules (
    tenant_id           uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    rule_id             uuid not null default gen_random_uuid(),
    name                text not null check (length(name) between 1 and 100),
    kind                text not null check (kind in ('metric', 'pipeline')),
    metric_key          text check (length(metric_key) between 1 and 200),
    aggregation         text check (aggregation in ('avg', 'min', 'max', 'sum', 'count', 'last')),
    window_secs         integer check (window_secs between 60 and 86400),
    site_id             text check (length(site_id) between 1 and 200),
    device_id           text check (length(device_id) between 1 and 200),
    group_by            text check (group_by in ('site', 'device')),
    condition           text check (condition in ('source_disconnected', 'lag_above',
                            'retained_wal_above', 'slot_at_risk', 'dlq_growth', 'no_events',
                            'slot_forecast')),
    source_id           uuid,
    comparison          text check (comparison in ('>', '>=', '<', '<=')),
    threshold           double precision
                            check (threshold not in ('NaN', 'Infinity', '-Infinity')),
    for_secs            integer not null default 0 check (for_secs between 0 and 86400),
    severity            text not null default 'warning'
                            check (severity in ('info', 'warning', 'critical')),
    labels              jsonb not null default '{}'::jsonb
                            check (jsonb_typeof(labels) = 'object'),
    channel_ids         uuid[] not null default '{}' check (cardinality(channel_ids) <= 10),
    description         text not null default '' check (length(description) <= 2000),
    enabled             boolean not null default true,
    interval_secs       integer not null default 60 check (interval_secs between 10 and 3600),
    remind_every_secs   integer not null default 3600
                            check (remind_every_secs = 0 or remind_every_secs between 300 and 604800),
    flap_window_secs    integer not null default 1800 check (flap_window_secs between 60 and 86400),
    flap_limit          integer not null default 6 check (flap_limit between 2 and 100),
    next_evaluation_at  timestamptz not null default now(),
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    primary key (tenant_id, rule_id),
    unique (tenant_id, name),
    check (kind <> 'metric' or (metric_key is not null and aggregation is not null
        and window_secs is not null and comparison is not null and threshold is not null
        and condition is null and source_id is null)),
    check (kind <> 'pipeline' or (condition is not null and metric_key is null
        and aggregation is null and site_id is null and device_id is null and group_by is null)),
    check (condition not in ('lag_above', 'retained_wal_above', 'dlq_growth', 'slot_forecast',
        'source_disconnected', 'no_events') or threshold is not null)
);
create index alert_rules_due_idx on control.alert_rules (next_evaluation_at) where enabled;
select app.enforce_tenant_rls('control.alert_rules');
grant select on control.alert_rules to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant insert, update, delete on control.alert_rules
    to tributary_tenant_owner, tributary_tenant_admin;
grant select, update (next_evaluation_at) on control.alert_rules to tributary_service;

-- The state of each series a rule watches ('' for a rule with one series; 'site:<id>',
-- 'device:<id>' or 'source:<id>' otherwise), as the evaluator left it: the phase, since when,
-- and the state machine's memory (domain::alerting::SeriesState) as JSON. Operators and above
-- acknowledge a firing series.
create table control.alert_states (
    tenant_id          uuid not null,
    rule_id            uuid not null,
    series             text not null check (length(series) <= 250),
    phase              text not null check (phase in ('ok', 'pending', 'firing')),
    since              timestamptz not null,
    flapping           boolean not null default false,
    machine            jsonb not null default '{}'::jsonb,
    last_value         double precision,
    evaluated_at       timestamptz not null default now(),
    acked_by           uuid,
    acked_at           timestamptz,
    primary key (tenant_id, rule_id, series),
    foreign key (tenant_id, rule_id) references control.alert_rules (tenant_id, rule_id)
        on delete cascade
);
create index alert_states_firing_idx on control.alert_states (tenant_id, phase, since);
select app.enforce_tenant_rls('control.alert_states');
grant select on control.alert_states to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant update (acked_by, acked_at) on control.alert_states
    to tributary_tenant_owner, tributary_tenant_admin, tributary_tenant_operator;
grant select, insert, update, delete on control.alert_states to tributary_service;

-- What happened to a series, newest last: phase changes, flapping, acknowledgements, silences,
-- notices queued and their delivery results.
create table control.alert_events (
    tenant_id   uuid not null,
    event_id    bigint generated always as identity,
    rule_id     uuid not null,
    series      text not null,
    at          timestamptz not null default now(),
    kind        text not null check (kind in ('pending', 'firing', 'resolved', 'ok', 'flapping',
                    'settled', 'acked', 'silenced', 'unsilenced', 'notified', 'delivered',
                    'delivery_failed')),
    value       double precision,
    detail      text not null default '' check (length(detail) <= 1000),
    actor       uuid,
    primary key (tenant_id, event_id),
    foreign key (tenant_id, rule_id) references control.alert_rules (tenant_id, rule_id)
        on delete cascade
);
create index alert_events_series_idx on control.alert_events (tenant_id, rule_id, series, at);
select app.enforce_tenant_rls('control.alert_events');
grant select on control.alert_events to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant insert on control.alert_events to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator;
grant select, insert on control.alert_events to tributary_service;

-- A silence: of one rule, or of every rule whose labels include `label_key` = `label_value`,
-- from `starts_at` to `ends_at` (or until someone ends it: `ended_at`).
create table control.alert_silences (
    tenant_id    uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    silence_id   uuid not null default gen_random_uuid(),
    rule_id      uuid,
    label_key    text check (length(label_key) between 1 and 100),
    label_value  text check (length(label_value) <= 200),
    starts_at    timestamptz not null default now(),
    ends_at      timestamptz not null,
    ended_at     timestamptz,
    reason       text not null check (length(reason) between 1 and 500),
    created_by   uuid,
    created_at   timestamptz not null default now(),
    primary key (tenant_id, silence_id),
    foreign key (tenant_id, rule_id) references control.alert_rules (tenant_id, rule_id)
        on delete cascade,
    check ((rule_id is null) <> (label_key is null)),
    check ((label_key is null) = (label_value is null)),
    check (ends_at > starts_at)
);
create index alert_silences_active_idx on control.alert_silences (tenant_id, ends_at)
    where ended_at is null;
select app.enforce_tenant_rls('control.alert_silences');
grant select on control.alert_silences to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant insert, update (ended_at) on control.alert_silences
    to tributary_tenant_owner, tributary_tenant_admin, tributary_tenant_operator;
grant select on control.alert_silences to tributary_service;

-- The delivery outbox: one row per notice and channel, written by the evaluator in the
-- transaction that decided the notice, delivered (with retries and backoff) by the deliverer,
-- which claims due rows with `for update skip locked`, so two deliverers never send one twice.
create table pipeline.alert_outbox (
    tenant_id        uuid not null,
    notification_id  uuid not null default gen_random_uuid(),
    rule_id          uuid,
    series           text not null default '',
    channel_id       uuid not null,
    notice           text not null check (notice in ('firing', 'reminder', 'resolved', 'test')),
    payload          jsonb not null,
    created_at       timestamptz not null default now(),
    attempts         integer not null default 0,
    next_attempt_at  timestamptz not null default now(),
    delivered_at     timestamptz,
    failed_at        timestamptz,
    last_error       text check (length(last_error) <= 500),
    primary key (tenant_id, notification_id),
    foreign key (tenant_id, channel_id) references control.alert_channels (tenant_id, channel_id)
        on delete cascade
);
create index alert_outbox_due_idx on pipeline.alert_outbox (next_attempt_at)
    where delivered_at is null and failed_at is null;
select app.enforce_tenant_rls('pipeline.alert_outbox');
grant select on pipeline.alert_outbox to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator;
grant insert on pipeline.alert_outbox to tributary_tenant_owner, tributary_tenant_admin;
grant select, insert, update, delete on pipeline.alert_outbox to tributary_service;

-- Scheduled reports (docs/reports.md): a report run on a cron expression in a time zone and
-- delivered through the workspace's notification channels (the alert channels: a signed
-- webhook, Slack, or email with the file attached under a size limit, else a link).
--
-- The scheduler (the report runner, service role) takes due schedules with
-- `for update skip locked`, asks for the run of the latest occurrence that has not run, and
-- moves `next_run_at` on, in one transaction; the unique (schedule, occurrence) on the runs
-- makes a second server's attempt at the same occurrence a no-op. After downtime, the missed
-- occurrences run once (the latest), not once each.

create table control.report_schedules (
    tenant_id        uuid not null references control.dim_tenant (tenant_id) on delete cascade,
    schedule_id      uuid not null default gen_random_uuid(),
    report_id        uuid not null,
    cron             text not null check (length(cron) between 9 and 100),
    time_zone        text not null check (length(time_zone) between 1 and 64),
    -- Where the file goes when a run ends (alert channels), in order.
    channels         uuid[] not null default '{}' check (cardinality(channels) <= 10),
    enabled          boolean not null default true,
    -- Whose role the runs read in: the member who last saved the schedule, in the role they
    -- hold when it runs (a run whose owner has left the workspace fails, saying so, until
    -- someone saves the schedule again); saved with an API token, the token's role.
    owner            uuid,
    run_as           text not null check (run_as in ('owner', 'admin', 'operator', 'viewer')),
    -- Occurrences after this time are due: the last one run, or when the schedule was saved.
    since            timestamptz not null default now(),
    next_run_at      timestamptz not null default now(),
    last_occurrence  timestamptz,
    last_error       text check (length(last_error) <= 500),
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (tenant_id, schedule_id),
    foreign key (tenant_id, report_id) references control.reports (tenant_id, report_id)
        on delete cascade
);
create index report_schedules_due_idx on control.report_schedules (next_run_at) where enabled;
create index report_schedules_report_idx on control.report_schedules (tenant_id, report_id);
select app.enforce_tenant_rls('control.report_schedules');
grant select on control.report_schedules to tributary_tenant_owner, tributary_tenant_admin,
    tributary_tenant_operator, tributary_tenant_viewer;
grant insert, update, delete on control.report_schedules
    to tributary_tenant_owner, tributary_tenant_admin;
grant select, update on control.report_schedules to tributary_service;

-- A scheduled run names its schedule and occurrence (once per occurrence) and the channels its
-- file goes to.
alter table control.report_runs
    add column schedule_id uuid,
    add column occurrence timestamptz,
    add column deliver_to uuid[] not null default '{}' check (cardinality(deliver_to) <= 10),
    add constraint report_runs_schedule_fk foreign key (tenant_id, schedule_id)
        references control.report_schedules (tenant_id, schedule_id) on delete set null (schedule_id),
    add constraint report_runs_occurrence_key unique (tenant_id, schedule_id, occurrence),
    add constraint report_runs_occurrence_check check ((schedule_id is null) or (occurrence is not null));
grant insert on control.report_runs to tributary_service;

-- A report's file delivered to a channel goes through the alerts' outbox (one outbox, one
-- deliverer, one outbound client): notice `report`, naming its run.
alter table pipeline.alert_outbox
    drop constraint alert_outbox_notice_check,
    add constraint alert_outbox_notice_check
        check (notice in ('firing', 'reminder', 'resolved', 'test', 'report')),
    add column run_id uuid;
create index alert_outbox_run_idx on pipeline.alert_outbox (tenant_id, run_id)
    where run_id is not null;

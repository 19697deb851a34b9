-- Reports (docs/reports.md): the typed extras as a dataset of their own, one row per live entity
-- and field, beside the entity lists that carry them as one JSON column.

alter table control.reports
    drop constraint reports_dataset_check,
    add constraint reports_dataset_check check (dataset in ('devices', 'sites', 'sessions',
        'extras', 'metrics_minute', 'metrics_hour', 'alert_events', 'audit_log'));

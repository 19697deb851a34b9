-- Masking rules can be scoped to one source table: `*` (every table, what every rule so far
-- meant), `schema.table`, or `table` in any schema. The same path can then carry different
-- actions in different tables, so the table joins the key. Editing a rule in the web app may
-- change its table or path, which members who manage masking may now update in place.
alter table control.pii_masking_policy
    add column source_table text not null default '*'
        check (source_table = '*' or (length(source_table) <= 127
               and source_table ~ '^[^.*[:cntrl:]]+(\.[^.*[:cntrl:]]+)?$'));
alter table control.pii_masking_policy drop constraint pii_masking_policy_pkey;
alter table control.pii_masking_policy add primary key (tenant_id, source_table, field_path);
grant update (source_table, field_path) on control.pii_masking_policy
    to tributary_tenant_owner, tributary_tenant_admin;

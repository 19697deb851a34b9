-- Sign-ups waiting for their address to be confirmed. `POST /auth/sign-up` records the form here
-- (the password already hashed) and mails a one-time link; the account and its workspace are
-- created only when the link is used, so the sign-up form answers the same whether or not the
-- address has an account. Like password reset links, only the token's hash is kept, and the
-- table holds no tenant data: the control role alone reaches it.
create table control.pending_signups (
    signup_id      uuid primary key,
    token_hash     bytea not null unique check (length(token_hash) = 32),
    email          text not null check (length(email) between 3 and 320 and email = lower(email)),
    display_name   text not null check (length(display_name) between 1 and 200),
    password_hash  text not null,
    workspace      text not null check (length(workspace) between 1 and 200),
    plan           text not null,
    industry       text not null,
    region         text not null,
    client_addr    inet,
    created_at     timestamptz not null default now(),
    expires_at     timestamptz not null,
    used_at        timestamptz
);
alter table control.pending_signups enable row level security;
alter table control.pending_signups force row level security;
create policy control_all on control.pending_signups for all to tributary_control
    using (true) with check (true);
grant select, insert, update (used_at), delete on control.pending_signups to tributary_control;

//! The command line: every command and flag, with the help a newcomer reads.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;

/// Tributary: change-data-capture analytics for fleets of devices, isolated per tenant by the
/// database itself.
#[derive(Debug, Parser)]
#[command(
    name = "tributary",
    version,
    about,
    long_about = "Tributary: change-data-capture analytics for fleets of devices, isolated per \
tenant by PostgreSQL row-level security.\n\n\
Start here: `tributary up` runs the whole platform on this machine. With no database URL it \
creates and manages a private PostgreSQL cluster under the data directory (using the PostgreSQL \
binaries installed on the machine), migrates it, and serves the web app.\n\n\
Every option can also be set by a TRIBUTARY_* environment variable (shown with each option) or \
in a TOML file given with --config, using the option's name with underscores \
(data_dir = \"/srv/tributary\"). Flags win over the environment, which wins over the file.",
    after_help = "Examples:\n  \
tributary up                                    run everything, managed PostgreSQL in ./.tributary\n  \
tributary tenant create --name Acme --plan team --industry energy --region eu\n  \
tributary user create --email ada@example.com --name Ada\n  \
tributary member add --tenant <TENANT_ID> --email ada@example.com --role owner\n  \
tributary audit verify                          check every tenant's audit hash chain\n\n\
Exit status: 0 success, 1 error, 3 a check found problems (audit verify, db lint)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// TOML configuration file; its keys are the long option names with underscores.
    #[arg(long, env = "TRIBUTARY_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where Tributary keeps its state: the managed PostgreSQL cluster, generated credentials
    /// and logs. [default: ./.tributary]
    #[arg(long, env = "TRIBUTARY_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Use this PostgreSQL server instead of a managed cluster: an administrative login
    /// (superuser or CREATEROLE) on the platform database, used for bootstrap and migrations.
    #[arg(
        long,
        env = "TRIBUTARY_DATABASE_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// Login of the request-path role `tributary_app` on a given server. Without it, Tributary
    /// sets a generated password on that role and keeps it in the data directory.
    #[arg(
        long,
        env = "TRIBUTARY_APP_DATABASE_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub app_database_url: Option<String>,

    /// Login of the pipeline role `tributary_service` on a given server (as for the app role).
    #[arg(
        long,
        env = "TRIBUTARY_SERVICE_DATABASE_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub service_database_url: Option<String>,

    /// Address of the edge, the TLS endpoint agents connect to (`up` listens there; `source
    /// create` prints it in the pairing hint). [default: 127.0.0.1:8443]
    #[arg(long, env = "TRIBUTARY_EDGE_ADDR", global = true, value_name = "ADDR")]
    pub edge_addr: Option<SocketAddr>,

    /// The edge's address as agents reach it (`https://host[:port]`), which `source create` and
    /// `source token` print in the pairing command. [default: the address the running `up`
    /// listens on (its real port), else https://<edge-addr>]
    #[arg(
        long,
        env = "TRIBUTARY_EDGE_PUBLIC_URL",
        global = true,
        value_name = "URL"
    )]
    pub edge_public_url: Option<String>,

    /// The stream bus: `embedded` (in the platform database, nothing else to run) or a NATS
    /// JetStream URL such as nats://127.0.0.1:4222. [default: embedded]
    #[arg(
        long,
        env = "TRIBUTARY_BUS",
        global = true,
        hide_env_values = true,
        value_name = "BUS"
    )]
    pub bus: Option<String>,

    /// The platform's master secret, which encrypts the CA key and tenant secrets at rest.
    /// Without it, one is generated once and kept in <data-dir>/secret.key (mode 0600).
    #[arg(
        long,
        env = "TRIBUTARY_SECRET_KEY",
        global = true,
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub secret_key: Option<String>,

    /// The global console's minimum cohort: no rollup cell of fewer distinct tenants is ever
    /// shown, on the web, in the API or by `rollups show` (at least 2). [default: 5]
    #[arg(
        long,
        env = "TRIBUTARY_ROLLUP_MIN_COHORT",
        global = true,
        value_name = "K"
    )]
    pub rollup_min_cohort: Option<i64>,

    /// Log format on standard error. Verbosity: TRIBUTARY_LOG (e.g. `info`, `debug`,
    /// `store=debug`). [default: text]
    #[arg(long, env = "TRIBUTARY_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform: database (managed unless a URL is given), migrations, web.
    ///
    /// Prints the web address when ready and runs until SIGINT (Ctrl-C) or SIGTERM, then stops
    /// everything it started, the managed PostgreSQL server included.
    Up(Box<UpArgs>),
    /// Apply pending schema migrations (and create the database and roles if needed), then exit.
    Migrate,
    /// Tenants (customer workspaces).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// User accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Internal operations staff: accounts that see the tenant registry, every tenant's audit
    /// log, contact requests and the global analytics console, never a tenant's data.
    #[command(subcommand)]
    Staff(StaffCommand),
    /// Memberships of users in tenants, with their roles.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Sources: agent installations of a tenant, their pairing tokens and certificates.
    #[command(subcommand)]
    Source(SourceCommand),
    /// API tokens for the JSON API (/api/v1), bound to a tenant and one tenant role.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Re-drive a tenant's dead letters, or a time range of its bronze events, through the
    /// pipeline (audited).
    Replay(ReplayArgs),
    /// Global rollups (internal operations): the metric-key allowlist and the console.
    #[command(subcommand)]
    Rollups(RollupsCommand),
    /// Bronze retention: per-tenant days, and enforcing them now.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// The append-only, hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Database checks.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address the web app listens on; port 0 picks a free port (the address is printed).
    /// [default: 127.0.0.1:8080]
    #[arg(long, env = "TRIBUTARY_WEB_ADDR", value_name = "ADDR")]
    pub web_addr: Option<SocketAddr>,

    /// Skip the demo (a tenant with a simulated agent streaming, set up on the first start of
    /// a managed cluster).
    #[arg(long, env = "TRIBUTARY_NO_DEMO")]
    pub no_demo: bool,

    /// Development only: let the platform's outbound HTTP client (SSO issuers, alert webhooks)
    /// use plain http and reach loopback hosts, for an IdP on this machine. Off by default;
    /// never in production, where it would let an admin's URL reach this host's own services.
    #[arg(long, env = "TRIBUTARY_DEV_ALLOW_LOOPBACK_HTTP")]
    pub dev_allow_loopback_http: bool,

    /// On-premise installs: let the outbound HTTP client (SSO issuers, alert webhooks) reach
    /// private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), where an internal
    /// IdP or receiver lives. Loopback, link-local (cloud metadata) and the rest stay refused.
    /// Off by default: in a hosted platform it would let a tenant's URL into the platform's
    /// own network.
    #[arg(long, env = "TRIBUTARY_OUTBOUND_ALLOW_PRIVATE_TARGETS")]
    pub outbound_allow_private_targets: bool,

    /// The DNS server (`ip:port`) that checks the TXT records proving a workspace's SSO domains.
    /// [default: the system's resolvers]
    #[arg(long, env = "TRIBUTARY_DNS_RESOLVER", value_name = "ADDR")]
    pub dns_resolver: Option<SocketAddr>,

    /// A reverse proxy (address, or network like 10.0.0.0/8) whose X-Forwarded-For names the
    /// client for sign-in throttles and the audit log; repeat the flag, or comma-separate in the
    /// variable. [default: none: the client is the connection's peer]
    #[arg(
        long = "trusted-proxy",
        env = "TRIBUTARY_TRUSTED_PROXIES",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    #[command(flatten)]
    pub mail: MailArgs,

    #[command(flatten)]
    pub operations: crate::operations::OperationsArgs,

    #[command(flatten)]
    pub exports: ExportArgs,
}

/// Where report files are kept: `<data-dir>/exports` by default, or an S3-compatible bucket.
/// Prefer the environment or the file for the secret key: a flag shows in `ps`.
#[derive(Debug, Clone, Default, Args)]
pub struct ExportArgs {
    /// `local` (files under <data-dir>/exports) or `s3://bucket[/prefix]`. [default: local]
    #[arg(long, env = "TRIBUTARY_EXPORT_STORE", value_name = "STORE")]
    pub export_store: Option<String>,

    /// The bucket's region. [default: us-east-1]
    #[arg(long, env = "TRIBUTARY_EXPORT_S3_REGION", value_name = "REGION")]
    pub export_s3_region: Option<String>,

    /// A self-hosted S3-compatible store's address, e.g. https://minio.internal:9000 (plain
    /// http only when given so). [default: AWS's]
    #[arg(long, env = "TRIBUTARY_EXPORT_S3_ENDPOINT", value_name = "URL")]
    pub export_s3_endpoint: Option<String>,

    /// The access key id for the bucket (put, get, delete under the prefix).
    #[arg(long, env = "TRIBUTARY_EXPORT_S3_ACCESS_KEY_ID", value_name = "ID")]
    pub export_s3_access_key_id: Option<String>,

    /// The secret access key (never logged).
    #[arg(
        long,
        env = "TRIBUTARY_EXPORT_S3_SECRET_ACCESS_KEY",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub export_s3_secret_access_key: Option<String>,
}

/// Where password-reset, sign-up and invitation links are mailed. Without a host they are written to
/// the log instead. Prefer the environment or the file for the password: a flag shows in `ps`.
#[derive(Debug, Clone, Default, Args)]
pub struct MailArgs {
    /// SMTP server for the mail the web app sends (password resets, invitations).
    #[arg(long, env = "TRIBUTARY_SMTP_HOST", value_name = "HOST")]
    pub smtp_host: Option<String>,

    /// SMTP port. [default: 587 for starttls, 465 for tls, 25 for none]
    #[arg(long, env = "TRIBUTARY_SMTP_PORT", value_name = "PORT")]
    pub smtp_port: Option<u16>,

    /// How the SMTP connection is protected: `starttls`, `tls`, or `none` (only to a loopback
    /// host, e.g. a local relay). [default: starttls]
    #[arg(long, env = "TRIBUTARY_SMTP_TLS", value_name = "MODE")]
    pub smtp_tls: Option<String>,

    /// PEM file of certificate authorities to trust for the SMTP server's certificate, besides
    /// the public roots (for a relay with a company's own CA).
    #[arg(long, env = "TRIBUTARY_SMTP_CA_FILE", value_name = "PATH")]
    pub smtp_ca_file: Option<PathBuf>,

    /// SMTP user name, when the server wants one (with --smtp-password).
    #[arg(long, env = "TRIBUTARY_SMTP_USERNAME", value_name = "USER")]
    pub smtp_username: Option<String>,

    /// SMTP password (never logged).
    #[arg(
        long,
        env = "TRIBUTARY_SMTP_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub smtp_password: Option<String>,

    /// Sender of the mail, e.g. "Tributary <no-reply@example.com>" (required with a host).
    #[arg(long, env = "TRIBUTARY_SMTP_FROM", value_name = "MAILBOX")]
    pub smtp_from: Option<String>,

    /// The web app's address as people reach it, for links in mail, e.g.
    /// https://tributary.example.com. [default: http://<web address>]
    #[arg(long, env = "TRIBUTARY_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its id.
    Create {
        /// Display name, e.g. "Acme Charging".
        #[arg(long)]
        name: String,
        /// One of free, team, business, enterprise.
        #[arg(long, default_value = "team")]
        plan: String,
        /// Industry, a rollup dimension (e.g. energy, retail, manufacturing).
        #[arg(long)]
        industry: String,
        /// Region, a rollup dimension (e.g. eu, us-east).
        #[arg(long)]
        region: String,
    },
    /// List every tenant.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user account (it signs in once a password is set through the web app).
    Create {
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Make an existing account internal operations staff (audited in the platform chain).
    Grant {
        #[arg(long)]
        email: String,
    },
    /// End an account's staff role and every session it has (audited).
    Revoke {
        #[arg(long)]
        email: String,
    },
    /// List internal operations staff.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a user to a tenant with a role, or change the role of an existing member.
    Add {
        /// Tenant id (see `tributary tenant list`).
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// owner, admin, operator or viewer.
        #[arg(long)]
        role: String,
    },
    /// Remove a user from a tenant. A tenant always keeps at least one owner.
    Remove {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
    },
    /// List a tenant's members.
    List {
        #[arg(long)]
        tenant: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Create a source and print its one-time pairing token (valid for one hour).
    Create {
        /// Tenant id (see `tributary tenant list`).
        #[arg(long)]
        tenant: String,
        /// A name for the source, unique within the tenant, e.g. "charging-db-eu".
        #[arg(long)]
        name: String,
        /// What the agent reads: postgres or simulator.
        #[arg(long)]
        kind: String,
    },
    /// Issue a new pairing token for an existing source (e.g. to re-pair a reinstalled agent).
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        source: String,
    },
    /// List a tenant's sources.
    List {
        #[arg(long)]
        tenant: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a source: its certificates stop working within seconds, open connections included.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        source: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "revoked by an operator")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print it (shown once; only its hash is kept).
    Create {
        #[arg(long)]
        tenant: String,
        /// What the token is for, e.g. "deploy script".
        #[arg(long)]
        name: String,
        /// owner, admin, operator or viewer: what the token may do.
        #[arg(long)]
        role: String,
        /// Days until it expires (1 to 366).
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    /// Revoke an API token.
    Revoke {
        #[arg(long)]
        tenant: String,
        /// The token id (the second part of the token).
        #[arg(long)]
        token: String,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["dlq", "from", "rebuild"])))]
pub struct ReplayArgs {
    /// Tenant id.
    #[arg(long)]
    pub tenant: String,
    /// Replay the tenant's dead letters, each to the consumer that failed it.
    #[arg(long)]
    pub dlq: bool,
    /// Re-materialize the tenant's read models from bronze (the same content, checksummed;
    /// other tenants are not disturbed).
    #[arg(long)]
    pub rebuild: bool,
    /// Replay bronze events committed at or after this time (RFC 3339, e.g.
    /// 2026-11-01T00:00:00Z) through the downstream consumers.
    #[arg(long, requires = "to", value_name = "TIME")]
    pub from: Option<String>,
    /// ... and before this time.
    #[arg(long, requires = "from", value_name = "TIME")]
    pub to: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RollupsCommand {
    /// Allow a metric key into the global rollups (its history is aggregated too); audited.
    Allow { key: String },
    /// Remove a metric key: its aggregation stops at once; audited.
    Remove {
        key: String,
        /// Also delete its rollup history.
        #[arg(long)]
        purge: bool,
    },
    /// The allowlist, removed keys included.
    List {
        #[arg(long)]
        json: bool,
    },
    /// The internal console: a key's rollup cells, never a cell of fewer than k tenants nor one
    /// that would reveal such a cell by subtraction.
    Show {
        key: String,
        /// Hourly buckets instead of minutes.
        #[arg(long)]
        hourly: bool,
        /// From this time (RFC 3339) [default: one day ago].
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// Before this time (RFC 3339) [default: now].
        #[arg(long, value_name = "TIME")]
        to: Option<String>,

        #[arg(long)]
        json: bool,
    },
    /// Run aggregation rounds now until the queue is empty (the platform does it four times a second).
    Aggregate,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Set how many days a tenant's bronze events are kept (1 to 3650).
    Set {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        days: i32,
    },
    /// Delete bronze events past every tenant's retention and drop partitions nobody needs
    /// (the platform also does this hourly).
    Run,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every link of the audit hash chains and report the first broken one of each.
    Verify {
        /// Only this tenant's chain (the platform chain is 00000000-0000-0000-0000-000000000000).
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Check the database catalog against the isolation rules (forced RLS everywhere, no
    /// bypassing roles, tenant_id in every key, ...). Prints each finding.
    Lint {
        /// A further login documented as break-glass that may be superuser or BYPASSRLS
        /// (besides tributary_service, the migration login and the bootstrap superuser).
        #[arg(long = "allow-privileged-login", value_name = "ROLE")]
        allowed: Vec<String>,
    },
    /// Compare the server's settings with what Tributary's workload wants on a machine of its
    /// size (the managed cluster gets them at every start): each setting, its value, the
    /// advice and why. Exits 3 when a setting is below it.
    Check {
        /// The memory of the server's machine in GiB, when it is not this machine.
        #[arg(long, value_name = "GIB")]
        memory_gib: Option<u64>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}

//! The operator commands, and the database connection they share.

use std::process::ExitCode;

use anyhow::{Context, bail};
use domain::{Email, Plan, Role, TenantAttributes, TenantId};
use store::cluster::ManagedCluster;
use store::{Actor, ConnectionSettings, Database};

use crate::EXIT_CHECK_FAILED;
use crate::cli::{
    AuditCommand, Command, DbCommand, MemberCommand, ReplayArgs, RetentionCommand, RollupsCommand,
    SourceCommand, StaffCommand, TenantCommand, TokenCommand, UserCommand,
};
use crate::settings::{DatabaseChoice, Settings};

pub async fn run(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => crate::up::run(settings, !args.no_demo).await,
        Command::Migrate => migrate(settings).await,
        Command::Tenant(command) => tenant(command, settings).await,
        Command::User(command) => user(command, settings).await,
        Command::Staff(command) => staff(command, settings).await,
        Command::Member(command) => member(command, settings).await,
        Command::Source(command) => source(command, settings).await,
        Command::Token(command) => token(command, settings).await,
        Command::Replay(args) => replay(args, settings).await,
        Command::Retention(command) => retention(command, settings).await,
        Command::Rollups(command) => rollups(command, settings).await,
        Command::Audit(command) => audit(command, settings).await,
        Command::Db(command) => db(command, settings).await,
        Command::Bench(crate::cli::BenchCommand::Ingest(args)) => {
            crate::bench::ingest(args, settings).await
        }
        Command::Bench(crate::cli::BenchCommand::Capture(args)) => {
            crate::bench_capture::capture(args, settings).await
        }
        Command::Bench(crate::cli::BenchCommand::Materialize(args)) => {
            crate::bench_materialize::materialize(args, settings).await
        }
    }
}

/// A connection to the platform database, and the managed cluster behind it if there is one.
pub struct Connected {
    pub database: Database,
    pub connection_settings: ConnectionSettings,
    cluster: Option<ManagedCluster>,
    /// Stop the managed server on close: always for `up`; for other commands only when they
    /// started it themselves (a running platform's server is left alone).
    stop_cluster: bool,
}

impl Connected {
    /// Connects, starting the managed cluster if there is no database URL. `platform` is true
    /// for `up`, which also migrates and owns the cluster's lifetime.
    pub async fn open(settings: &Settings, platform: bool) -> anyhow::Result<Self> {
        let (connection_settings, cluster) = resolve(settings).await?;
        let stop_cluster = platform || cluster.as_ref().is_some_and(ManagedCluster::started_here);
        let opened = async {
            if platform {
                migrate_database(&connection_settings).await?;
            }
            Database::connect(&connection_settings).await.context(
                "cannot connect as the platform's roles; if this database was never migrated, \
                 run `tributary migrate` first",
            )
        }
        .await;
        match opened {
            Ok(database) => Ok(Self {
                database,
                connection_settings,
                cluster,
                stop_cluster,
            }),
            Err(error) => {
                if stop_cluster && let Some(cluster) = &cluster {
                    let _ = cluster.stop();
                }
                Err(error)
            }
        }
    }

    pub fn describe(&self) -> String {
        match &self.cluster {
            Some(cluster) => format!(
                "managed PostgreSQL cluster in {} (127.0.0.1:{}, socket in {})",
                cluster.data_dir().display(),
                cluster.port(),
                cluster.socket_dir().display()
            ),
            None => format!(
                "PostgreSQL at {}:{}, database {}",
                self.connection_settings.admin.get_host(),
                self.connection_settings.admin.get_port(),
                self.connection_settings.database()
            ),
        }
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.database.close().await;
        if self.stop_cluster
            && let Some(cluster) = self.cluster
        {
            tokio::task::spawn_blocking(move || cluster.stop())
                .await?
                .context("stopping the managed PostgreSQL server")?;
            tracing::info!("managed PostgreSQL server stopped");
        }
        Ok(())
    }
}

async fn resolve(
    settings: &Settings,
) -> anyhow::Result<(ConnectionSettings, Option<ManagedCluster>)> {
    match &settings.database {
        DatabaseChoice::Managed => {
            let data_dir = settings.data_dir.clone();
            if !data_dir.join("postgres").join("PG_VERSION").exists() {
                tracing::info!(
                    data_dir = %data_dir.display(),
                    "creating the managed PostgreSQL cluster (first start only)"
                );
            }
            let cluster = tokio::task::spawn_blocking(move || ManagedCluster::start(&data_dir))
                .await?
                .context("starting the managed PostgreSQL cluster")?;
            if cluster.started_here() {
                tracing::info!(port = cluster.port(), "managed PostgreSQL server started");
            } else {
                tracing::info!(
                    port = cluster.port(),
                    "managed PostgreSQL server already running; using it"
                );
            }
            Ok((cluster.connection_settings().clone(), Some(cluster)))
        }
        DatabaseChoice::Given {
            admin_url,
            app_url,
            service_url,
        } => {
            let connection_settings = ConnectionSettings::from_url(
                admin_url,
                app_url.as_ref(),
                service_url.as_ref(),
                &settings.data_dir,
            )?;
            Ok((connection_settings, None))
        }
    }
}

async fn migrate_database(connection_settings: &ConnectionSettings) -> anyhow::Result<()> {
    let report = store::migrate::prepare_database(connection_settings)
        .await
        .context("migrating the database")?;
    tracing::info!(
        database = connection_settings.database(),
        created = report.database_created,
        already_applied = report.applied_before,
        applied_now = report.applied_now,
        "database migrated"
    );
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<ExitCode> {
    let (connection_settings, cluster) = resolve(&settings).await?;
    let result = store::migrate::prepare_database(&connection_settings).await;
    if let Some(cluster) = cluster.filter(ManagedCluster::started_here) {
        tokio::task::spawn_blocking(move || cluster.stop()).await??;
    }
    let report = result.context("migrating the database")?;
    println!(
        "database {}: {} migration(s) applied now, {} already applied{}",
        connection_settings.database(),
        report.applied_now,
        report.applied_before,
        if report.database_created {
            " (database created)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `action` against the database, then releases it (stopping a managed server this
/// command started).
async fn with_database<T>(
    settings: &Settings,
    action: impl AsyncFnOnce(&Connected) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let connected = Connected::open(settings, false).await?;
    let result = action(&connected).await;
    connected.close().await?;
    result
}

fn parse_tenant(given: &str) -> anyhow::Result<TenantId> {
    Ok(given.parse()?)
}

async fn tenant(command: TenantCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        TenantCommand::Create {
            name,
            plan,
            industry,
            region,
        } => {
            let plan: Plan = plan.parse()?;
            let attributes = TenantAttributes::parse(&name, plan, &industry, &region)?;
            let tenant = with_database(&settings, async |connected| {
                Ok(store::control::create_tenant(
                    &connected.database,
                    Actor::current_cli_user(),
                    &attributes,
                )
                .await?)
            })
            .await?;
            println!("created tenant {} ({})", tenant.tenant_id, tenant.name);
        }
        TenantCommand::List { json } => {
            let tenants = with_database(&settings, async |connected| {
                Ok(
                    store::control::list_tenants(&connected.database, Actor::current_cli_user())
                        .await?,
                )
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tenants)?);
            } else if tenants.is_empty() {
                println!("no tenants yet: create one with `tributary tenant create`");
            } else {
                println!(
                    "{:<36}  {:<10}  {:<12}  {:<10}  {:<8}  NAME",
                    "TENANT ID", "PLAN", "INDUSTRY", "REGION", "STATUS"
                );
                for tenant in tenants {
                    println!(
                        "{:<36}  {:<10}  {:<12}  {:<10}  {:<8}  {}",
                        tenant.tenant_id,
                        tenant.plan,
                        tenant.industry,
                        tenant.region,
                        tenant.status,
                        tenant.name
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn user(command: UserCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Create { email, name } => {
            let email = Email::parse(&email)?;
            let user = with_database(&settings, async |connected| {
                Ok(store::control::create_user(
                    &connected.database,
                    Actor::current_cli_user(),
                    &email,
                    &name,
                )
                .await?)
            })
            .await?;
            println!("created user {} ({})", user.user_id, user.email);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn staff(command: StaffCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        StaffCommand::Grant { email } => {
            let email = Email::parse(&email)?;
            let user = with_database(&settings, async |connected| {
                Ok(store::accounts::grant_staff(
                    &connected.database,
                    Actor::current_cli_user(),
                    &email,
                )
                .await?)
            })
            .await?;
            println!("{email} ({user}) is internal operations staff");
        }
        StaffCommand::Revoke { email } => {
            let email = Email::parse(&email)?;
            with_database(&settings, async |connected| {
                Ok(store::accounts::revoke_staff(
                    &connected.database,
                    Actor::current_cli_user(),
                    &email,
                )
                .await?)
            })
            .await?;
            println!("{email} is no longer staff; its sessions have ended");
        }
        StaffCommand::List { json } => {
            let staff = with_database(&settings, async |connected| {
                Ok(store::accounts::list_staff(&connected.database).await?)
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&staff)?);
            } else {
                for member in staff {
                    println!(
                        "{}\t{}\tgranted by {}",
                        member.email, member.user_id, member.granted_by
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn member(command: MemberCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        MemberCommand::Add {
            tenant,
            email,
            role,
        } => {
            let tenant = parse_tenant(&tenant)?;
            let email = Email::parse(&email)?;
            let role: Role = role.parse()?;
            if !role.is_tenant_role() {
                bail!("a member's role is one of owner, admin, operator, viewer");
            }
            let member = with_database(&settings, async |connected| {
                Ok(store::control::set_member(
                    &connected.database,
                    Actor::current_cli_user(),
                    tenant,
                    &email,
                    role,
                )
                .await?)
            })
            .await?;
            println!("{} is now {} of tenant {tenant}", member.email, member.role);
        }
        MemberCommand::Remove { tenant, email } => {
            let tenant = parse_tenant(&tenant)?;
            let email = Email::parse(&email)?;
            with_database(&settings, async |connected| {
                Ok(store::control::remove_member(
                    &connected.database,
                    Actor::current_cli_user(),
                    tenant,
                    &email,
                )
                .await?)
            })
            .await?;
            println!("removed {email} from tenant {tenant}");
        }
        MemberCommand::List { tenant, json } => {
            let tenant = parse_tenant(&tenant)?;
            let members = with_database(&settings, async |connected| {
                Ok(store::control::list_members(
                    &connected.database,
                    Actor::current_cli_user(),
                    tenant,
                )
                .await?)
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&members)?);
            } else {
                println!("{:<36}  {:<9}  {:<32}  NAME", "USER ID", "ROLE", "EMAIL");
                for member in members {
                    println!(
                        "{:<36}  {:<9}  {:<32}  {}",
                        member.user_id, member.role, member.email, member.display_name
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn control_tx(connected: &Connected, tenant: TenantId) -> anyhow::Result<store::TenantTx> {
    Ok(store::TenantTx::begin(
        &connected.database,
        store::Scope::Control {
            tenant: Some(tenant),
            actor: Actor::current_cli_user(),
        },
    )
    .await?)
}

async fn source(command: SourceCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    let edge_url = format!("https://{}", settings.edge_addr);
    match command {
        SourceCommand::Create { tenant, name, kind } => {
            let tenant = parse_tenant(&tenant)?;
            let (source, token) = with_database(&settings, async |connected| {
                let mut tx = control_tx(connected, tenant).await?;
                let created = store::sources::create_source(&mut tx, &name, &kind).await?;
                tx.commit().await?;
                Ok(created)
            })
            .await?;
            println!(
                "created source {} ({}, {})",
                source.source_id, source.name, source.kind
            );
            print_token(&token, &edge_url);
        }
        SourceCommand::Token { tenant, source } => {
            let tenant = parse_tenant(&tenant)?;
            let source: domain::SourceId = source.parse()?;
            let token = with_database(&settings, async |connected| {
                let mut tx = control_tx(connected, tenant).await?;
                let token = store::sources::issue_pairing_token(&mut tx, source).await?;
                tx.commit().await?;
                Ok(token)
            })
            .await?;
            print_token(&token, &edge_url);
        }
        SourceCommand::List { tenant, json } => {
            let tenant = parse_tenant(&tenant)?;
            let sources = with_database(&settings, async |connected| {
                let mut tx = control_tx(connected, tenant).await?;
                let sources = store::sources::list_sources(&mut tx).await?;
                tx.commit().await?;
                Ok(sources)
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sources)?);
            } else {
                println!("{:<36}  {:<9}  {:<8}  NAME", "SOURCE ID", "KIND", "STATUS");
                for source in sources {
                    println!(
                        "{:<36}  {:<9}  {:<8}  {}",
                        source.source_id, source.kind, source.status, source.name
                    );
                }
            }
        }
        SourceCommand::Revoke {
            tenant,
            source,
            reason,
        } => {
            let tenant = parse_tenant(&tenant)?;
            let source: domain::SourceId = source.parse()?;
            let certificates = with_database(&settings, async |connected| {
                let mut tx = control_tx(connected, tenant).await?;
                let certificates = store::sources::revoke_source(&mut tx, source, &reason).await?;
                tx.commit().await?;
                Ok(certificates)
            })
            .await?;
            println!("revoked source {source} and {certificates} certificate(s)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn token(command: TokenCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            tenant,
            name,
            role,
            days,
        } => {
            let tenant = parse_tenant(&tenant)?;
            let role: Role = role.parse()?;
            let (token, text) = with_database(&settings, async |connected| {
                let mut tx = control_tx(connected, tenant).await?;
                let created =
                    store::api_tokens::create(&mut tx, &name, role, time::Duration::days(days))
                        .await?;
                tx.commit().await?;
                Ok(created)
            })
            .await?;
            println!(
                "created API token {} ({}, {}, expires {})",
                token.token_id,
                token.name,
                token.role,
                token
                    .expires_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            );
            println!("the token (shown once):");
            println!("  {text}");
        }
        TokenCommand::Revoke { tenant, token } => {
            let tenant = parse_tenant(&tenant)?;
            let token: uuid::Uuid = token
                .parse()
                .context("the token id is a UUID (the second part of the token)")?;
            with_database(&settings, async |connected| {
                let mut tx = control_tx(connected, tenant).await?;
                store::api_tokens::revoke(&mut tx, token).await?;
                tx.commit().await?;
                Ok(())
            })
            .await?;
            println!("revoked API token {token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(args: ReplayArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    use time::format_description::well_known::Rfc3339;
    let tenant = parse_tenant(&args.tenant)?;
    let kind = match (&args.from, &args.to) {
        (Some(from), Some(to)) => store::replay::ReplayKind::Range {
            from: time::OffsetDateTime::parse(from, &Rfc3339)
                .context("--from must be an RFC 3339 time such as 2026-11-01T00:00:00Z")?,
            to: time::OffsetDateTime::parse(to, &Rfc3339)
                .context("--to must be an RFC 3339 time such as 2026-11-02T00:00:00Z")?,
        },
        _ if args.rebuild => store::replay::ReplayKind::Rebuild,
        _ => store::replay::ReplayKind::DeadLetters,
    };
    let bus_config: bus::BusConfig = settings
        .bus
        .parse()
        .context("invalid bus setting (TRIBUTARY_BUS / --bus)")?;
    let request = with_database(&settings, async |connected| {
        let mut tx = control_tx(connected, tenant).await?;
        let request_id = store::replay::request(&mut tx, &kind).await?;
        tx.commit().await?;
        println!("replay request {request_id} recorded");
        let bus = bus::AnyBus::connect(&bus_config, &connected.database).await?;
        let done =
            pipeline::replay::run_request(&connected.database, &bus, tenant, request_id).await?;
        Ok(done)
    })
    .await?;
    let Some(request) = request else {
        println!("the running platform took the request; follow it in the audit log");
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "replay {}: {} event(s) replayed, {} failed{}",
        request.status,
        request.events_replayed,
        request.events_failed,
        request
            .detail
            .as_deref()
            .map(|detail| format!(" ({detail})"))
            .unwrap_or_default()
    );
    Ok(if request.status == "done" && request.events_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    })
}

async fn retention(command: RetentionCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        RetentionCommand::Set { tenant, days } => {
            let tenant = parse_tenant(&tenant)?;
            with_database(&settings, async |connected| {
                let mut tx = control_tx(connected, tenant).await?;
                store::retention::set_days(&mut tx, days).await?;
                tx.commit().await?;
                Ok(())
            })
            .await?;
            println!("tenant {tenant} keeps bronze events for {days} day(s)");
        }
        RetentionCommand::Run => {
            let report = with_database(&settings, async |connected| {
                Ok(store::retention::enforce(&connected.database).await?)
            })
            .await?;
            println!(
                "deleted {} event(s); dropped {} partition(s){}",
                report.deleted_events,
                report.dropped_partitions.len(),
                if report.dropped_partitions.is_empty() {
                    String::new()
                } else {
                    format!(": {}", report.dropped_partitions.join(", "))
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_token(token: &store::sources::IssuedPairingToken, edge_url: &str) {
    let expires = token
        .expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    println!("pairing token (single use, expires {expires}):");
    println!("  {}", token.token);
    println!("pair the agent with:");
    println!(
        "  tributary-agent pair --edge {edge_url} --token {}",
        token.token
    );
}

async fn audit(command: AuditCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { tenant, json } = command;
    let tenant = tenant.as_deref().map(parse_tenant).transpose()?;
    let reports = with_database(&settings, async |connected| {
        Ok(store::audit::verify(&connected.database, tenant).await?)
    })
    .await?;
    let broken = reports.iter().filter(|report| !report.is_intact()).count();
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for report in &reports {
            match &report.first_break {
                None => println!(
                    "ok      {}  {} entries, chain intact",
                    report.tenant, report.entries
                ),
                Some(first_break) => println!(
                    "BROKEN  {}  {} entries, {}",
                    report.tenant,
                    report.entries,
                    describe_break(first_break)
                ),
            }
        }
        println!("{} chain(s) verified, {broken} broken", reports.len());
    }
    Ok(if broken == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    })
}

fn describe_break(first_break: &store::audit::ChainBreak) -> String {
    use store::audit::ChainBreak;
    match first_break {
        ChainBreak::Sequence { expected, found } => format!(
            "first broken link: expected entry {expected} but found {found} (entries removed or reordered)"
        ),
        ChainBreak::PrevHash { seq } => format!(
            "first broken link at entry {seq}: it does not point at the entry before it (inserted or reordered)"
        ),
        ChainBreak::Hash { seq } => {
            format!(
                "first broken link at entry {seq}: its content does not match its hash (edited)"
            )
        }
        ChainBreak::Head {
            recorded_seq,
            last_seq,
        } => format!(
            "the chain should end at entry {recorded_seq} but ends at {last_seq} (entries removed from or added to its end)"
        ),
    }
}

async fn db(command: DbCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    let DbCommand::Lint { allowed } = command;
    let findings = with_database(&settings, async |connected| {
        Ok(store::catalog::lint(&connected.connection_settings, &allowed).await?)
    })
    .await?;
    for finding in &findings {
        println!("{}: {}", finding.check, finding.object);
    }
    println!("{} finding(s)", findings.len());
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    })
}

async fn ops_tx(connected: &Connected) -> anyhow::Result<store::TenantTx> {
    Ok(store::TenantTx::begin(
        &connected.database,
        store::Scope::InternalOps {
            tenant: Some(TenantId::PLATFORM),
            actor: Actor::current_cli_user(),
        },
    )
    .await?)
}

async fn rollups(command: RollupsCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    use time::format_description::well_known::Rfc3339;
    match command {
        RollupsCommand::Allow { key } => {
            with_database(&settings, async |connected| {
                let mut tx = ops_tx(connected).await?;
                store::rollups::allow_key(&mut tx, &key).await?;
                tx.commit().await?;
                Ok(())
            })
            .await?;
            println!("allowed {key} into the global rollups");
        }
        RollupsCommand::Remove { key, purge } => {
            with_database(&settings, async |connected| {
                let mut tx = ops_tx(connected).await?;
                store::rollups::remove_key(&mut tx, &key, purge).await?;
                tx.commit().await?;
                if purge {
                    pipeline::aggregator::run_once(&connected.database, 5000).await?;
                }
                Ok(())
            })
            .await?;
            println!(
                "removed {key} from the global rollups{}",
                if purge { " and purged its history" } else { "" }
            );
        }
        RollupsCommand::List { json } => {
            let keys = with_database(&settings, async |connected| {
                let mut tx = ops_tx(connected).await?;
                let keys = store::rollups::list_keys(&mut tx).await?;
                tx.commit().await?;
                Ok(keys)
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for entry in keys {
                    let state = if entry.retired_at.is_some() {
                        "removed"
                    } else {
                        "allowed"
                    };
                    println!("{}\t{state}\tadded by {}", entry.key, entry.added_by);
                }
            }
        }
        RollupsCommand::Show {
            key,
            hourly,
            from,
            to,
            json,
        } => {
            let min_cohort = settings.rollup_min_cohort;
            let now = time::OffsetDateTime::now_utc();
            let from = match from {
                Some(from) => time::OffsetDateTime::parse(&from, &Rfc3339)
                    .context("--from must be an RFC 3339 time")?,
                None => now - time::Duration::days(1),
            };
            let to = match to {
                Some(to) => time::OffsetDateTime::parse(&to, &Rfc3339)
                    .context("--to must be an RFC 3339 time")?,
                None => now,
            };
            let granularity = if hourly {
                store::rollups::Granularity::Hour
            } else {
                store::rollups::Granularity::Minute
            };
            let cells = with_database(&settings, async |connected| {
                let mut tx = ops_tx(connected).await?;
                let cells =
                    store::rollups::cells(&mut tx, granularity, &key, from, to, min_cohort).await?;
                tx.commit().await?;
                Ok(cells)
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cells)?);
            } else {
                for cell in cells {
                    println!(
                        "{}\t{}\t{}\t{}\tsum {}\tcount {}\ttenants {}",
                        cell.bucket.format(&Rfc3339).unwrap_or_default(),
                        cell.plan,
                        cell.industry,
                        cell.region,
                        cell.value_sum,
                        cell.value_count,
                        cell.tenant_count
                    );
                }
            }
        }
        RollupsCommand::Aggregate => {
            let outcome = with_database(&settings, async |connected| {
                Ok(pipeline::aggregator::run_once(&connected.database, 5000).await?)
            })
            .await?;
            println!(
                "aggregated {} key-minute(s); purged {} key(s); backfilled {} key(s)",
                outcome.minutes, outcome.purged, outcome.backfilled
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

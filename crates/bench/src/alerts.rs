//! `tributary-bench alerts`: how long the alert evaluator takes to evaluate every rule of many
//! tenants once, against the interval the rules ask for (a ratio: the part of each interval the
//! evaluator is busy). Prints figures; it is not a test. docs/benchmarks.md has the figures of
//! the development machine.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use domain::{Plan, TenantAttributes};
use store::Actor;
use tributary::{Connected, Settings};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
tributary-bench alerts                            10,000 rules over 20 tenants, 3 rounds\n  \
tributary-bench alerts --rules 2000 --tenants 5 --rounds 1\n\n\
Build with --release for meaningful figures.")]
pub struct AlertsArgs {
    /// Rules in all, spread evenly over the tenants (85 % on metrics, 15 % on source health).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub rules: u64,
    /// Tenants, each with one source and `--devices` devices reading three metrics.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub tenants: u32,
    /// Devices per tenant.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub devices: u32,
    /// Rounds: every rule evaluated once per round.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub rounds: u32,
    /// The rules' evaluation interval the time of a round is compared with.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub interval: u64,
    /// Rules the evaluator takes per transaction (its default is the platform's).
    #[arg(long, value_name = "N")]
    pub batch: Option<i64>,
}

pub async fn alerts(args: AlertsArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    if args.rules == 0 || args.tenants == 0 || args.rounds == 0 || args.interval == 0 {
        bail!("--rules, --tenants, --rounds and --interval must be at least 1");
    }
    crate::scratch::with_scratch_database(settings, "alerts", async |_, connected| {
        run(&args, connected).await
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn run(args: &AlertsArgs, connected: &Connected) -> anyhow::Result<()> {
    let database = &connected.database;
    let now = time::OffsetDateTime::now_utc();
    let per_tenant = args.rules.div_ceil(u64::from(args.tenants));
    println!(
        "seeding {} tenants: {per_tenant} rules, {} devices × 3 metrics × 30 minutes each ...",
        args.tenants, args.devices
    );
    let (mut metric_rules, mut pipeline_rules) = (0, 0);
    for n in 0..args.tenants {
        let attributes =
            TenantAttributes::parse(&format!("Alerts {n}"), Plan::Team, "energy", "eu")?;
        let tenant =
            store::control::create_tenant(&database.app, Actor::Cli("bench".into()), &attributes)
                .await?
                .tenant_id;
        let seed = store::service::bench_support::seed_alert_rules(
            &connected.connection_settings,
            tenant,
            per_tenant,
            args.devices,
            now,
        )
        .await?;
        metric_rules += seed.metric_rules;
        pipeline_rules += seed.pipeline_rules;
    }
    let _ =
        store::service::bench_support::analyze_read_models(&connected.connection_settings).await;
    let batch = args
        .batch
        .unwrap_or(pipeline::alerts::EvaluatorConfig::default().batch);
    println!(
        "{} rules ({metric_rules} on metrics, {pipeline_rules} on source health), {} per transaction",
        metric_rules + pipeline_rules,
        batch
    );
    let interval = Duration::from_secs(args.interval);
    let mut seconds = Vec::new();
    for round in 0..args.rounds {
        let at = now + time::Duration::seconds(i64::from(round) * args.interval as i64);
        store::service::bench_support::make_rules_due(&database.service, at).await?;
        let started = Instant::now();
        let (mut rules, mut series, mut notifications, mut failed) = (0, 0, 0, 0);
        loop {
            let report = pipeline::alerts::evaluate_round(database, at, batch).await?;
            rules += report.rules;
            series += report.series;
            notifications += report.notifications;
            failed += report.failed;
            if (report.rules as i64) < batch {
                break;
            }
        }
        let elapsed = started.elapsed();
        seconds.push(elapsed.as_secs_f64());
        println!(
            "round {}: {rules} rules, {series} series, {notifications} notifications, {failed} \
             failed: {:.2} s ({:.0} rules/s), {:.3} of the {} s interval",
            round + 1,
            elapsed.as_secs_f64(),
            rules as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() / interval.as_secs_f64(),
            args.interval
        );
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    println!(
        "median round: {median:.2} s; ratio to the {} s interval {:.3} (target <= 0.1)",
        args.interval,
        median / interval.as_secs_f64()
    );
    Ok(())
}

//! `tributary db`: checking the database catalog against the isolation rules, and the server's
//! settings against the workload's.

use std::process::ExitCode;

use crate::cli::DbCommand;
use crate::commands::shared::{EXIT_CHECK_FAILED, with_database};
use crate::settings::Settings;

pub async fn run(command: DbCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        DbCommand::Lint { allowed } => lint(&allowed, &settings).await,
        DbCommand::Check { memory_gib } => check(memory_gib, &settings).await,
    }
}

/// Each recommended setting: `ok` or `advice`, the server's value, the recommendation and why.
async fn check(memory_gib: Option<u64>, settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut machine = store::tuning::Machine::detect();
    if let Some(gib) = memory_gib {
        machine.memory_bytes = gib << 30;
    }
    let advice = with_database(settings, async |connected| {
        Ok(store::tuning::check(&connected.connection_settings, &machine).await?)
    })
    .await?;
    println!(
        "settings for Tributary's workload on a machine of {:.1} GiB of memory:",
        machine.memory_bytes as f64 / (1u64 << 30) as f64
    );
    for item in &advice {
        if item.ok {
            println!("ok      {} = {}", item.name, item.current);
        } else {
            println!(
                "advice  {} = {}: set it to {} ({})",
                item.name, item.current, item.recommended, item.why
            );
        }
    }
    let below = advice.iter().filter(|item| !item.ok).count();
    println!("{below} setting(s) below the advice");
    Ok(if below == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    })
}

async fn lint(allowed: &[String], settings: &Settings) -> anyhow::Result<ExitCode> {
    let findings = with_database(settings, async |connected| {
        Ok(store::catalog::lint(&connected.connection_settings, allowed).await?)
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

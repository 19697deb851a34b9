//! `tributary db`: checking the database catalog against the isolation rules.

use std::process::ExitCode;

use crate::cli::DbCommand;
use crate::commands::shared::{EXIT_CHECK_FAILED, with_database};
use crate::settings::Settings;

pub async fn run(command: DbCommand, settings: Settings) -> anyhow::Result<ExitCode> {
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

//! `tributary retention`: a tenant's bronze retention, and enforcing every tenant's now.

use std::process::ExitCode;

use crate::cli::RetentionCommand;
use crate::commands::shared::{control_tx, parse_tenant, with_database};
use crate::settings::Settings;

pub async fn run(command: RetentionCommand, settings: Settings) -> anyhow::Result<ExitCode> {
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
                Ok(store::service::retention::enforce(&connected.database.service).await?)
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

//! `tributary migrate`: bootstrap and migrations of the platform database, without starting it.

use std::process::ExitCode;

use anyhow::Context;
use store::cluster::ManagedCluster;

use crate::connection::resolve;
use crate::settings::Settings;

pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
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

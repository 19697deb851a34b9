//! `tributary rollups`: the global rollups' metric-key allowlist, the console, aggregation now.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::RollupsCommand;
use crate::commands::shared::{ops_tx, with_database};
use crate::settings::Settings;

pub async fn run(command: RollupsCommand, settings: Settings) -> anyhow::Result<ExitCode> {
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
                    pipeline::aggregator::run_once(&connected.database.service, 5000).await?;
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
                Ok(pipeline::aggregator::run_once(&connected.database.service, 5000).await?)
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

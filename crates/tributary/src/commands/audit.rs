//! `tributary audit`: verifying the audit hash chains outside the database.

use std::process::ExitCode;

use crate::cli::AuditCommand;
use crate::commands::shared::{EXIT_CHECK_FAILED, parse_tenant, with_database};
use crate::settings::Settings;

pub async fn run(command: AuditCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { tenant, json } = command;
    let tenant = tenant.as_deref().map(parse_tenant).transpose()?;
    let reports = with_database(&settings, async |connected| {
        Ok(store::service::audit::verify(&connected.database.service, tenant).await?)
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

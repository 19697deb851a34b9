//! `tributary source`: a tenant's sources, their pairing tokens and their revocation.

use std::process::ExitCode;

use crate::cli::SourceCommand;
use crate::commands::shared::{control_tx, parse_tenant, with_database};
use crate::settings::Settings;

pub async fn run(command: SourceCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    let edge_url = crate::edge_url::published(&settings);
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

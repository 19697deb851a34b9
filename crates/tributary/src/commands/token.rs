//! `tributary token`: API tokens for the JSON API, created (shown once) and revoked.

use std::process::ExitCode;

use anyhow::Context;
use domain::Role;

use crate::cli::TokenCommand;
use crate::commands::shared::{control_tx, parse_tenant, with_database};
use crate::settings::Settings;

pub async fn run(command: TokenCommand, settings: Settings) -> anyhow::Result<ExitCode> {
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

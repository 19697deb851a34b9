//! `tributary tenant`: creating and listing tenants (customer workspaces).

use std::process::ExitCode;

use domain::{Plan, TenantAttributes};
use store::Actor;

use crate::cli::TenantCommand;
use crate::commands::shared::with_database;
use crate::settings::Settings;

pub async fn run(command: TenantCommand, settings: Settings) -> anyhow::Result<ExitCode> {
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
                    &connected.database.app,
                    Actor::current_cli_user(),
                    &attributes,
                )
                .await?)
            })
            .await?;
            println!("created tenant {} ({})", tenant.tenant_id, tenant.name);
        }
        TenantCommand::List { json } => {
            let tenants =
                with_database(&settings, async |connected| {
                    Ok(store::control::list_tenants(
                        &connected.database.app,
                        Actor::current_cli_user(),
                    )
                    .await?)
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

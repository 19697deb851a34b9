//! `tributary member`: users' memberships in tenants, with their roles.

use std::process::ExitCode;

use anyhow::bail;
use domain::{Email, Role};
use store::Actor;

use crate::cli::MemberCommand;
use crate::commands::shared::{parse_tenant, with_database};
use crate::settings::Settings;

pub async fn run(command: MemberCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        MemberCommand::Add {
            tenant,
            email,
            role,
        } => {
            let tenant = parse_tenant(&tenant)?;
            let email = Email::parse(&email)?;
            let role: Role = role.parse()?;
            if !role.is_tenant_role() {
                bail!("a member's role is one of owner, admin, operator, viewer");
            }
            let member = with_database(&settings, async |connected| {
                Ok(store::control::set_member(
                    &connected.database.app,
                    Actor::current_cli_user(),
                    tenant,
                    &email,
                    role,
                )
                .await?)
            })
            .await?;
            println!("{} is now {} of tenant {tenant}", member.email, member.role);
        }
        MemberCommand::Remove { tenant, email } => {
            let tenant = parse_tenant(&tenant)?;
            let email = Email::parse(&email)?;
            with_database(&settings, async |connected| {
                Ok(store::control::remove_member(
                    &connected.database.app,
                    Actor::current_cli_user(),
                    tenant,
                    &email,
                )
                .await?)
            })
            .await?;
            println!("removed {email} from tenant {tenant}");
        }
        MemberCommand::List { tenant, json } => {
            let tenant = parse_tenant(&tenant)?;
            let members = with_database(&settings, async |connected| {
                Ok(store::control::list_members(
                    &connected.database.app,
                    Actor::current_cli_user(),
                    tenant,
                )
                .await?)
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&members)?);
            } else {
                println!("{:<36}  {:<9}  {:<32}  NAME", "USER ID", "ROLE", "EMAIL");
                for member in members {
                    println!(
                        "{:<36}  {:<9}  {:<32}  {}",
                        member.user_id, member.role, member.email, member.display_name
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

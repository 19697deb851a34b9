//! `tributary staff`: granting, revoking and listing internal operations staff.

use std::process::ExitCode;

use domain::Email;
use store::Actor;

use crate::cli::StaffCommand;
use crate::commands::shared::with_database;
use crate::settings::Settings;

pub async fn run(command: StaffCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        StaffCommand::Grant { email } => {
            let email = Email::parse(&email)?;
            let user = with_database(&settings, async |connected| {
                Ok(store::accounts::grant_staff(
                    &connected.database.app,
                    Actor::current_cli_user(),
                    &email,
                )
                .await?)
            })
            .await?;
            println!("{email} ({user}) is internal operations staff");
        }
        StaffCommand::Revoke { email } => {
            let email = Email::parse(&email)?;
            with_database(&settings, async |connected| {
                Ok(store::accounts::revoke_staff(
                    &connected.database.app,
                    Actor::current_cli_user(),
                    &email,
                )
                .await?)
            })
            .await?;
            println!("{email} is no longer staff; its sessions have ended");
        }
        StaffCommand::List { json } => {
            let staff = with_database(&settings, async |connected| {
                Ok(store::accounts::list_staff(&connected.database.app).await?)
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&staff)?);
            } else {
                for member in staff {
                    println!(
                        "{}\t{}\tgranted by {}",
                        member.email, member.user_id, member.granted_by
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

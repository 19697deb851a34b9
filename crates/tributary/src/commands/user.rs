//! `tributary user`: creating user accounts.

use std::process::ExitCode;

use domain::Email;
use store::Actor;

use crate::cli::UserCommand;
use crate::commands::shared::with_database;
use crate::settings::Settings;

pub async fn run(command: UserCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Create { email, name } => {
            let email = Email::parse(&email)?;
            let user = with_database(&settings, async |connected| {
                Ok(store::control::create_user(
                    &connected.database.app,
                    Actor::current_cli_user(),
                    &email,
                    &name,
                )
                .await?)
            })
            .await?;
            println!("created user {} ({})", user.user_id, user.email);
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The operator commands, one module per command group; `run` dispatches a parsed command.

mod audit;
mod db;
mod member;
mod migrate;
mod replay;
mod retention;
mod rollups;
mod shared;
mod source;
mod staff;
mod tenant;
mod token;
mod user;

use std::process::ExitCode;

use crate::cli::Command;
use crate::settings::Settings;

pub async fn run(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => crate::up::run(settings, !args.no_demo).await,
        Command::Migrate => migrate::run(settings).await,
        Command::Tenant(command) => tenant::run(command, settings).await,
        Command::User(command) => user::run(command, settings).await,
        Command::Staff(command) => staff::run(command, settings).await,
        Command::Member(command) => member::run(command, settings).await,
        Command::Source(command) => source::run(command, settings).await,
        Command::Token(command) => token::run(command, settings).await,
        Command::Replay(args) => replay::run(args, settings).await,
        Command::Retention(command) => retention::run(command, settings).await,
        Command::Rollups(command) => rollups::run(command, settings).await,
        Command::Audit(command) => audit::run(command, settings).await,
        Command::Db(command) => db::run(command, settings).await,
    }
}

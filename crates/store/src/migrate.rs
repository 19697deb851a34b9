//! Bootstrap (cluster roles) and the versioned schema migrations embedded in the binary.
//!
//! Migrations are immutable once landed: sqlx records each one's checksum and refuses to start
//! on a database whose applied migration differs from the embedded one.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::StoreError;
use crate::connect::{ConnectionSettings, RoleCredentials};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

const MIGRATIONS_TABLE: &str = "tributary_meta._sqlx_migrations";

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub database_created: bool,
    pub applied_before: usize,
    pub applied_now: usize,
}

/// The embedded migrations, for `tributary migrate --list` and tests.
pub fn embedded_migrations() -> impl Iterator<Item = (i64, &'static str)> {
    MIGRATOR
        .iter()
        .map(|migration| (migration.version, &*migration.description))
}

/// Creates the platform database if needed, converges the cluster's roles, and applies every
/// pending migration as the owner role. Safe to run concurrently from several processes.
pub async fn prepare_database(
    settings: &ConnectionSettings,
) -> Result<MigrationReport, StoreError> {
    let database_created = ensure_database(settings).await?;
    let mut connection = PgConnection::connect_with(&settings.admin).await?;

    let mut attempt = 0;
    loop {
        attempt += 1;
        match bootstrap(&mut connection, settings).await {
            Ok(()) => break,
            // Two processes converging roles at once conflict on the shared catalog; the
            // loser simply tries again.
            Err(error) if attempt < 5 => {
                tracing::debug!(%error, attempt, "bootstrap conflicted, retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(error) => return Err(error),
        }
    }

    sqlx::raw_sql("set role tributary_owner; set search_path = tributary_meta")
        .execute(&mut connection)
        .await?;
    let applied_before = applied_count(&mut connection).await?;
    let mut migrator = Migrator {
        migrations: MIGRATOR.migrations.clone(),
        ..Migrator::DEFAULT
    };
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator.run(&mut connection).await?;
    let applied_after = applied_count(&mut connection).await?;
    sqlx::raw_sql("reset role; reset search_path")
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    Ok(MigrationReport {
        database_created,
        applied_before,
        applied_now: applied_after - applied_before,
    })
}

async fn applied_count(connection: &mut PgConnection) -> Result<usize, StoreError> {
    let exists: bool =
        sqlx::query_scalar("select to_regclass('tributary_meta._sqlx_migrations') is not null")
            .fetch_one(&mut *connection)
            .await?;
    if !exists {
        return Ok(0);
    }
    let count: i64 =
        sqlx::query_scalar("select count(*) from tributary_meta._sqlx_migrations where success")
            .fetch_one(&mut *connection)
            .await?;
    Ok(usize::try_from(count).unwrap_or(0))
}

async fn bootstrap(
    connection: &mut PgConnection,
    settings: &ConnectionSettings,
) -> Result<(), StoreError> {
    let mut tx = connection.begin().await?;
    sqlx::raw_sql(include_str!("../sql/bootstrap.sql"))
        .execute(&mut *tx)
        .await?;
    if settings.manage_role_passwords {
        for (role, credentials) in [
            ("tributary_app", &settings.app),
            ("tributary_service", &settings.service),
        ] {
            if let RoleCredentials::Password(password) = credentials {
                // ALTER ROLE takes no bind parameters; the password travels as one and is
                // quoted by the server's own format(%L).
                sqlx::query("select set_config('tributary.bootstrap_password', $1, true)")
                    .bind(password.expose_secret())
                    .execute(&mut *tx)
                    .await?;
                let statement = match role {
                    "tributary_app" => {
                        "do $$ begin execute format('alter role tributary_app password %L', \
                         current_setting('tributary.bootstrap_password')); end $$"
                    }
                    _ => {
                        "do $$ begin execute format('alter role tributary_service password %L', \
                         current_setting('tributary.bootstrap_password')); end $$"
                    }
                };
                sqlx::raw_sql(statement).execute(&mut *tx).await?;
            }
        }
        sqlx::query("select set_config('tributary.bootstrap_password', '', true)")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Creates the platform database on its server when it does not exist.
async fn ensure_database(settings: &ConnectionSettings) -> Result<bool, StoreError> {
    let name = settings.database().to_owned();
    let maintenance = settings.admin.clone().database(&settings.admin_database);
    let mut connection = PgConnection::connect_with(&maintenance).await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut connection)
            .await?;
    let mut created = false;
    if !exists {
        // CREATE DATABASE takes no bind parameters; the name comes from configuration, never
        // from a request, and is quoted as an identifier.
        let statement = format!("create database {}", quote_identifier(&name));
        match sqlx::raw_sql(AssertSqlSafe(statement))
            .execute(&mut connection)
            .await
        {
            Ok(_) => created = true,
            // Another process created it first.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
            Err(error) => return Err(error.into()),
        }
    }
    connection.close().await?;
    Ok(created)
}

/// Quotes a PostgreSQL identifier.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("tributary"), "\"tributary\"");
        assert_eq!(quote_identifier("a\"b; drop"), "\"a\"\"b; drop\"");
    }

    #[test]
    fn migrations_are_numbered_without_gaps() {
        let versions: Vec<i64> = embedded_migrations().map(|(version, _)| version).collect();
        let last = versions.last().copied().unwrap_or(0);
        let expected: Vec<i64> = (1..=last).collect();
        assert_eq!(
            versions, expected,
            "migrations are numbered 1, 2, 3, ... without gaps"
        );
    }
}

//! Real PostgreSQL for tests: one private cluster per test process, and a fresh migrated
//! database for every test, cloned from a template so it takes milliseconds.
//!
//! The cluster is the platform's own managed cluster (initdb in a temporary directory,
//! `wal_level=logical`), so tests exercise the same code as `tributary up`. Set
//! `TRIBUTARY_TEST_DATABASE_URL` to a superuser URL of an existing server to use it instead;
//! the template and test databases are then created there.
//!
//! Tests connect as the production roles (`tributary_app` through `TenantTx`,
//! `tributary_service`); the admin connection is for arranging fixtures and for simulating an
//! attacker with superuser rights, never for the code under test.

#[cfg(feature = "browser")]
pub mod browser;
pub mod nats;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use store::cluster::ManagedCluster;
use store::{ConnectionSettings, Database, RoleCredentials};

/// The test run's server and its migrated template database.
#[derive(Debug)]
struct TestServer {
    settings: ConnectionSettings,
    template: String,
    /// Superuser or BYPASSRLS logins the server had before the tests touched it (none on the
    /// private cluster but its bootstrap superuser).
    preexisting_privileged_logins: Vec<String>,
}

static SERVER: OnceLock<Result<TestServer, String>> = OnceLock::new();

/// Passwords the test roles get on a server given by URL, where concurrent test processes share
/// the cluster-wide roles and must agree on them.
const SHARED_SERVER_ROLE_PASSWORD: &str = "tributary-test-role";

fn server() -> &'static TestServer {
    let server = SERVER.get_or_init(|| {
        // Runs once per process, possibly from inside a test's runtime: do the async setup on a
        // thread of its own with its own runtime.
        std::thread::spawn(start_server)
            .join()
            .unwrap_or_else(|_| Err("test server setup panicked".into()))
    });
    match server {
        Ok(server) => server,
        Err(message) => panic!("test PostgreSQL is unavailable: {message}"),
    }
}

fn start_server() -> Result<TestServer, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    let template = format!("tributary_template_{}", short_id());
    let base = match std::env::var("TRIBUTARY_TEST_DATABASE_URL") {
        Ok(url) => {
            let admin: PgConnectOptions = url
                .parse()
                .map_err(|_| "TRIBUTARY_TEST_DATABASE_URL is not a valid URL".to_owned())?;
            ConnectionSettings {
                admin,
                admin_database: "postgres".into(),
                app: RoleCredentials::Password(SHARED_SERVER_ROLE_PASSWORD.to_owned().into()),
                service: RoleCredentials::Password(SHARED_SERVER_ROLE_PASSWORD.to_owned().into()),
                manage_role_passwords: true,
            }
        }
        Err(_) => start_private_cluster()?,
    };
    let settings = base.with_database(&template);
    let preexisting_privileged_logins = runtime
        .block_on(privileged_logins(&base))
        .map_err(|error| format!("listing privileged logins: {}", error_chain(&error)))?;
    runtime
        .block_on(store::migrate::prepare_database(&settings))
        .map_err(|error| format!("migrating the template database: {}", error_chain(&error)))?;
    Ok(TestServer {
        settings: base,
        template,
        preexisting_privileged_logins,
    })
}

async fn privileged_logins(settings: &ConnectionSettings) -> Result<Vec<String>, sqlx::Error> {
    let maintenance = settings.admin.clone().database(&settings.admin_database);
    let mut connection = PgConnection::connect_with(&maintenance).await?;
    let logins = sqlx::query_scalar(
        "select rolname::text from pg_roles where rolcanlogin and (rolsuper or rolbypassrls) \
         and rolname not like 'tributary\\_%'",
    )
    .fetch_all(&mut connection)
    .await?;
    connection.close().await?;
    Ok(logins)
}

/// Starts the platform's managed cluster in a temporary directory, and a watchdog that stops
/// it and removes the directory once this process is gone, however it ends.
fn start_private_cluster() -> Result<ConnectionSettings, String> {
    let dir = std::env::temp_dir().join(format!("tributary-test-{}", short_id()));
    std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
    let cluster = ManagedCluster::start(&dir).map_err(|error| error.to_string())?;
    spawn_watchdog(&cluster.data_dir().join("postgres"), &dir);
    Ok(cluster.connection_settings().clone())
}

/// A source database for the agent's tests: a cluster of its own (superuser `postgres`, trust
/// on loopback) with the given settings, stopped and removed when dropped or when the test
/// process dies.
#[derive(Debug)]
pub struct SourceCluster {
    cluster: store::cluster::ScratchCluster,
    dir: std::path::PathBuf,
}

impl SourceCluster {
    pub fn start(settings: &[(&str, &str)]) -> Self {
        Self::start_with_files(settings, &[])
    }

    /// [`SourceCluster::start`] with files (e.g. a TLS certificate and key) in its data
    /// directory.
    pub fn start_with_files(settings: &[(&str, &str)], files: &[(&str, &[u8])]) -> Self {
        let dir = std::env::temp_dir().join(format!("tributary-source-{}", short_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = store::cluster::ScratchCluster::start_with_files(&dir, settings, files)
            .unwrap_or_else(|error| panic!("starting a source cluster: {}", error_chain(&error)));
        spawn_watchdog(&dir.join("postgres"), &dir);
        Self { cluster, dir }
    }

    /// A cluster as the agent wants it: logical decoding on, slots and senders to spare.
    pub fn logical() -> Self {
        Self::start(&[
            ("wal_level", "logical"),
            ("max_replication_slots", "8"),
            ("max_wal_senders", "8"),
        ])
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE` (the superuser).
    pub fn url(&self, database: &str) -> String {
        self.cluster.url(database)
    }

    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// Stops the server at once (like a crash), keeping its files.
    pub fn stop(&self) {
        self.cluster.stop().unwrap();
    }
}

impl Drop for SourceCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_watchdog(pgdata: &std::path::Path, dir: &std::path::Path) {
    // SIGQUIT is PostgreSQL's immediate shutdown; the cluster is thrown away anyway.
    let script = "while kill -0 \"$WATCHED\" 2>/dev/null; do sleep 0.5; done; \
                  pid=$(head -n 1 \"$PGDATA/postmaster.pid\" 2>/dev/null); \
                  [ -n \"$pid\" ] && kill -QUIT \"$pid\" 2>/dev/null; \
                  while [ -n \"$pid\" ] && kill -0 \"$pid\" 2>/dev/null; do sleep 0.2; done; \
                  rm -rf \"$DIR\"";
    let _ = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("WATCHED", std::process::id().to_string())
        .env("PGDATA", pgdata)
        .env("DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A fresh database of its own for one test, migrated, with the production roles.
#[derive(Debug)]
pub struct TestDatabase {
    settings: ConnectionSettings,
}

impl TestDatabase {
    pub async fn new() -> Self {
        let server = server();
        let name = format!("tributary_test_{}", short_id());
        let maintenance = server
            .settings
            .admin
            .clone()
            .database(&server.settings.admin_database);
        let mut connection = PgConnection::connect_with(&maintenance)
            .await
            .expect("connect to the test server as admin");
        // Names are generated above, never taken from input.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "create database {name} template {}",
            server.template
        )))
        .execute(&mut connection)
        .await
        .expect("clone the template database");
        connection.close().await.ok();
        Self {
            settings: server.settings.with_database(&name),
        }
    }

    pub fn settings(&self) -> &ConnectionSettings {
        &self.settings
    }

    /// Privileged logins the server had before the tests ran; on a shared server these are the
    /// operator's documented break-glass accounts for the catalog lint.
    pub fn preexisting_privileged_logins(&self) -> Vec<String> {
        server().preexisting_privileged_logins.clone()
    }

    /// Pools as the platform's `tributary_app` and `tributary_service` login roles.
    pub async fn connect(&self) -> Database {
        Database::connect_with(&self.settings, 4)
            .await
            .expect("connect as the platform roles")
    }

    /// A superuser connection: for fixtures and for playing an attacker, never for the code
    /// under test.
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect_with(&self.settings.admin)
            .await
            .expect("connect to the test database as admin")
    }

    /// A connection as `tributary_service`, the pipeline's role.
    pub async fn service(&self) -> PgConnection {
        PgConnection::connect_with(&self.settings.service_options())
            .await
            .expect("connect to the test database as the service role")
    }
}

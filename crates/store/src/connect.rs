//! How the platform reaches its database: the admin connection (bootstrap and migrations) and
//! the two login roles it runs as, `tributary_app` (the request path) and `tributary_service`
//! (the pipeline).

use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::StoreError;

pub const APP_ROLE: &str = "tributary_app";
pub const SERVICE_ROLE: &str = "tributary_service";

/// How one login role authenticates.
#[derive(Debug, Clone)]
pub enum RoleCredentials {
    /// Same server and database as the admin connection, this password; the platform sets it on
    /// the role during bootstrap.
    Password(SecretString),
    /// A complete connection given by configuration; the platform leaves the role's password
    /// alone.
    Options(Box<PgConnectOptions>),
}

/// Everything needed to connect, whether the cluster is managed or given.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// An administrative login on the platform database (superuser, or a role with CREATEROLE
    /// that may create schemas): used only for bootstrap and migrations.
    pub admin: PgConnectOptions,
    /// A database on the same server the admin can always connect to, used to create the
    /// platform database when it does not exist yet.
    pub admin_database: String,
    pub app: RoleCredentials,
    pub service: RoleCredentials,
    /// Whether bootstrap sets the app and service roles' passwords from `Password` credentials.
    pub manage_role_passwords: bool,
}

/// Passwords the platform generated for its roles on a server it does not manage, kept in the
/// data directory so that every process of the platform uses the same ones.
#[derive(Serialize, Deserialize)]
struct GeneratedRolePasswords {
    app_password: String,
    service_password: String,
}

impl ConnectionSettings {
    /// Settings for a server given by URL. The app and service roles use the URLs given for
    /// them, or else passwords generated once and kept in `data_dir/role-passwords.json`.
    pub fn from_url(
        admin_url: &SecretString,
        app_url: Option<&SecretString>,
        service_url: Option<&SecretString>,
        data_dir: &Path,
    ) -> Result<Self, StoreError> {
        let mut admin: PgConnectOptions = admin_url
            .expose_secret()
            .parse()
            .map_err(|_| StoreError::Config("the database URL is not a valid postgres:// URL"))?;
        if admin.get_database().is_none() {
            admin = admin.database(crate::cluster::PLATFORM_DATABASE);
        }
        let parse_role = |url: &SecretString| -> Result<RoleCredentials, StoreError> {
            let options: PgConnectOptions = url
                .expose_secret()
                .parse()
                .map_err(|_| StoreError::Config("a role database URL is not a valid URL"))?;
            Ok(RoleCredentials::Options(Box::new(options)))
        };
        let generated = if app_url.is_none() || service_url.is_none() {
            Some(generated_role_passwords(data_dir)?)
        } else {
            None
        };
        let app = match app_url {
            Some(url) => parse_role(url)?,
            None => RoleCredentials::Password(SecretString::from(
                generated.as_ref().expect("generated").app_password.clone(),
            )),
        };
        let service = match service_url {
            Some(url) => parse_role(url)?,
            None => RoleCredentials::Password(SecretString::from(
                generated
                    .as_ref()
                    .expect("generated")
                    .service_password
                    .clone(),
            )),
        };
        Ok(Self {
            admin,
            admin_database: "postgres".into(),
            app,
            service,
            manage_role_passwords: true,
        })
    }

    /// The same settings pointed at another database of the same server.
    pub fn with_database(&self, database: &str) -> Self {
        let retarget = |credentials: &RoleCredentials| match credentials {
            RoleCredentials::Password(password) => RoleCredentials::Password(password.clone()),
            RoleCredentials::Options(options) => {
                RoleCredentials::Options(Box::new(options.as_ref().clone().database(database)))
            }
        };
        Self {
            admin: self.admin.clone().database(database),
            admin_database: self.admin_database.clone(),
            app: retarget(&self.app),
            service: retarget(&self.service),
            manage_role_passwords: self.manage_role_passwords,
        }
    }

    pub fn database(&self) -> &str {
        self.admin.get_database().unwrap_or("postgres")
    }

    pub fn admin_role(&self) -> &str {
        self.admin.get_username()
    }

    pub fn app_options(&self) -> PgConnectOptions {
        self.role_options(&self.app, APP_ROLE)
    }

    pub fn service_options(&self) -> PgConnectOptions {
        self.role_options(&self.service, SERVICE_ROLE)
    }

    fn role_options(&self, credentials: &RoleCredentials, role: &str) -> PgConnectOptions {
        match credentials {
            RoleCredentials::Password(password) => self
                .admin
                .clone()
                .username(role)
                .password(password.expose_secret()),
            RoleCredentials::Options(options) => options.as_ref().clone(),
        }
        .application_name("tributary")
    }
}

fn generated_role_passwords(data_dir: &Path) -> Result<GeneratedRolePasswords, StoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let path = data_dir.join("role-passwords.json");
    if let Ok(bytes) = std::fs::read(&path) {
        return serde_json::from_slice(&bytes).map_err(|_| {
            StoreError::Config("role-passwords.json in the data directory is corrupt")
        });
    }
    std::fs::create_dir_all(data_dir).map_err(StoreError::DataDir)?;
    let generated = GeneratedRolePasswords {
        app_password: crate::random_token(24),
        service_password: crate::random_token(24),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(StoreError::DataDir)?;
    file.write_all(&serde_json::to_vec_pretty(&generated).expect("serialise"))
        .map_err(StoreError::DataDir)?;
    Ok(generated)
}

/// The request path's handle: a pool of the login `tributary_app`, which owns nothing, inherits
/// nothing and cannot bypass row-level security. It is the only handle [`crate::TenantTx`]
/// accepts for member, API-token, internal-operations and control scopes, and the only one the
/// web app is given, so a page that writes bronze or reads across tenants does not compile.
#[derive(Debug, Clone)]
pub struct AppDb {
    pool: PgPool,
}

/// The pipeline's handle: a pool of the login `tributary_service` (BYPASSRLS). For the edge, the
/// bus, the pipeline's consumers, the scheduler's jobs and operator tools; never the request
/// path. The functions that need it live under [`crate::service`].
#[derive(Debug, Clone)]
pub struct ServiceDb {
    pool: PgPool,
}

/// Both handles, for the binary that wires the roles together. It hands each role only the
/// handle that role needs.
#[derive(Debug, Clone)]
pub struct Database {
    pub app: AppDb,
    pub service: ServiceDb,
}

impl Database {
    pub async fn connect(settings: &ConnectionSettings) -> Result<Self, StoreError> {
        Self::connect_with(settings, 10).await
    }

    /// Pools of at most `max_connections` each.
    pub async fn connect_with(
        settings: &ConnectionSettings,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = |options: PgConnectOptions| {
            PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
        };
        Ok(Self {
            app: AppDb {
                pool: pool(settings.app_options()).await?,
            },
            service: ServiceDb {
                pool: pool(settings.service_options()).await?,
            },
        })
    }

    /// Whether both pools can run a query.
    pub async fn check_health(&self) -> Result<(), StoreError> {
        self.app.check_health().await?;
        self.service.check_health().await
    }

    pub async fn close(&self) {
        self.app.close().await;
        self.service.close().await;
    }
}

impl AppDb {
    /// Crate-private: outside this crate tenant data is reachable only through
    /// [`crate::TenantTx`].
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The raw pool, for the store's own tests of pooled-connection hygiene.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn pool_for_tests(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the pool can run a query.
    pub async fn check_health(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl ServiceDb {
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the pool can run a query.
    pub async fn check_health(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

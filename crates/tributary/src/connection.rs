//! The connection to the platform database every command opens: the managed cluster started
//! (or adopted) under the data directory, or a server given by URL.

use anyhow::Context;
use store::cluster::ManagedCluster;
use store::{ConnectionSettings, Database};

use crate::settings::{DatabaseChoice, Settings};

/// A connection to the platform database, and the managed cluster behind it if there is one.
#[derive(Debug)]
pub struct Connected {
    pub database: Database,
    pub connection_settings: ConnectionSettings,
    cluster: Option<ManagedCluster>,
    /// Stop the managed server on close: always for `up`; for other commands only when they
    /// started it themselves (a running platform's server is left alone).
    stop_cluster: bool,
}

impl Connected {
    /// Connects, starting the managed cluster if there is no database URL. `platform` is true
    /// for `up`, which also migrates and owns the cluster's lifetime.
    pub async fn open(settings: &Settings, platform: bool) -> anyhow::Result<Self> {
        let (connection_settings, cluster) = resolve(settings).await?;
        let stop_cluster = platform || cluster.as_ref().is_some_and(ManagedCluster::started_here);
        let opened = async {
            if platform {
                migrate_database(&connection_settings).await?;
            }
            Database::connect(&connection_settings).await.context(
                "cannot connect as the platform's roles; if this database was never migrated, \
                 run `tributary migrate` first",
            )
        }
        .await;
        match opened {
            Ok(database) => Ok(Self {
                database,
                connection_settings,
                cluster,
                stop_cluster,
            }),
            Err(error) => {
                if stop_cluster && let Some(cluster) = &cluster {
                    let _ = cluster.stop();
                }
                Err(error)
            }
        }
    }

    pub fn describe(&self) -> String {
        match &self.cluster {
            Some(cluster) => format!(
                "managed PostgreSQL cluster in {} (127.0.0.1:{}, socket in {})",
                cluster.data_dir().display(),
                cluster.port(),
                cluster.socket_dir().display()
            ),
            None => format!(
                "PostgreSQL at {}:{}, database {}",
                self.connection_settings.admin.get_host(),
                self.connection_settings.admin.get_port(),
                self.connection_settings.database()
            ),
        }
    }

    /// What the managed cluster was tuned to as it started (`None` for a given server, or an
    /// adopted one).
    pub fn tuning(&self) -> Option<String> {
        let (machine, settings) = self.cluster.as_ref()?.tuning()?;
        let values: Vec<String> = settings
            .iter()
            .map(|setting| format!("{}={}", setting.name, setting.value()))
            .collect();
        Some(format!(
            "sized for {:.1} GiB of memory and {} CPUs: {}",
            machine.memory_bytes as f64 / (1u64 << 30) as f64,
            machine.cpus,
            values.join(" ")
        ))
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.database.close().await;
        if self.stop_cluster
            && let Some(cluster) = self.cluster
        {
            tokio::task::spawn_blocking(move || cluster.stop())
                .await?
                .context("stopping the managed PostgreSQL server")?;
            tracing::info!("managed PostgreSQL server stopped");
        }
        Ok(())
    }
}

pub(crate) async fn resolve(
    settings: &Settings,
) -> anyhow::Result<(ConnectionSettings, Option<ManagedCluster>)> {
    match &settings.database {
        DatabaseChoice::Managed => {
            let data_dir = settings.data_dir.clone();
            if !data_dir.join("postgres").join("PG_VERSION").exists() {
                tracing::info!(
                    data_dir = %data_dir.display(),
                    "creating the managed PostgreSQL cluster (first start only)"
                );
            }
            let cluster = tokio::task::spawn_blocking(move || ManagedCluster::start(&data_dir))
                .await?
                .context("starting the managed PostgreSQL cluster")?;
            if cluster.started_here() {
                tracing::info!(port = cluster.port(), "managed PostgreSQL server started");
            } else {
                tracing::info!(
                    port = cluster.port(),
                    "managed PostgreSQL server already running; using it"
                );
            }
            Ok((cluster.connection_settings().clone(), Some(cluster)))
        }
        DatabaseChoice::Given {
            admin_url,
            app_url,
            service_url,
        } => {
            let connection_settings = ConnectionSettings::from_url(
                admin_url,
                app_url.as_ref(),
                service_url.as_ref(),
                &settings.data_dir,
            )?;
            Ok((connection_settings, None))
        }
    }
}

async fn migrate_database(connection_settings: &ConnectionSettings) -> anyhow::Result<()> {
    let report = store::migrate::prepare_database(connection_settings)
        .await
        .context("migrating the database")?;
    tracing::info!(
        database = connection_settings.database(),
        created = report.database_created,
        already_applied = report.applied_before,
        applied_now = report.applied_now,
        "database migrated"
    );
    Ok(())
}

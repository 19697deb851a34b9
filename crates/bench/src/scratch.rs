//! The database a benchmark runs on: the one given, or a private cluster in a temporary
//! directory made for the run and removed after it.

use anyhow::Context;
use tributary::Settings;

/// Runs `body` on the database `settings` name, or, without one, on a private cluster in a
/// fresh temporary directory (`tributary-bench-<name>-<random>`, removed afterwards whatever
/// the outcome); Ctrl-C interrupts it. `body` gets the settings with that data directory.
pub(crate) async fn with_scratch_database<T>(
    settings: Settings,
    name: &str,
    body: impl AsyncFnOnce(&Settings, &tributary::Connected) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut settings = settings;
    // /tmp is world-traversable, so the server's OS user reaches it when this runs as root.
    let temporary = match settings.database {
        tributary::DatabaseChoice::Managed => {
            let dir = std::env::temp_dir().join(format!(
                "tributary-bench-{name}-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            settings.data_dir = dir.clone();
            Some(dir)
        }
        tributary::DatabaseChoice::Given { .. } => None,
    };
    let remove = |temporary: &Option<std::path::PathBuf>| {
        if let Some(dir) = temporary {
            let _ = std::fs::remove_dir_all(dir);
        }
    };
    println!("starting the database ...");
    let connected = match tributary::Connected::open(&settings, true).await {
        Ok(connected) => connected,
        Err(error) => {
            remove(&temporary);
            return Err(error);
        }
    };
    println!("  {}", connected.describe());
    let outcome = tokio::select! {
        outcome = body(&settings, &connected) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let closed = connected.close().await;
    remove(&temporary);
    closed?;
    outcome
}

/// The data directory of the managed cluster `settings` run on, when it is managed: where the
/// benchmarks find its server processes to count their CPU.
pub(crate) fn managed_pgdata(settings: &Settings) -> Option<std::path::PathBuf> {
    match settings.database {
        tributary::DatabaseChoice::Managed => Some(settings.data_dir.join("postgres")),
        tributary::DatabaseChoice::Given { .. } => None,
    }
}

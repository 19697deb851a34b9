//! The edge address agents are told to pair with: the configured `edge_public_url`, else the
//! address the running `up` listens on (recorded in the data directory when it starts, so a
//! port chosen by the system is the real one), else `https://<edge_addr>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::settings::Settings;

/// The file `up` records the edge's listening address in, under the data directory.
const RECORD: &str = "edge-address";

fn record_path(settings: &Settings) -> PathBuf {
    settings.data_dir.join(RECORD)
}

/// Records where the edge of this `up` listens, for the commands run beside it.
pub fn record(settings: &Settings, listening: SocketAddr) -> anyhow::Result<()> {
    let path = record_path(settings);
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    std::fs::write(&path, format!("{listening}\n"))
        .with_context(|| format!("writing {}", path.display()))
}

/// The edge URL to print in a pairing command.
pub fn published(settings: &Settings) -> String {
    if let Some(url) = &settings.edge_public_url {
        return url.clone();
    }
    let recorded = std::fs::read_to_string(record_path(settings))
        .ok()
        .and_then(|text| text.trim().parse::<SocketAddr>().ok());
    format!("https://{}", recorded.unwrap_or(settings.edge_addr))
}

//! The PostgreSQL source: a publication and a logical replication slot (`pgoutput`), an
//! initial snapshot read in the snapshot the slot exported, then the slot's stream with no gap
//! and no overlap. The source may forget WAL only up to a transaction the edge acknowledged.

pub mod catalog;
mod check;
pub mod pgoutput;
pub mod publication;
mod snapshot;
pub mod stream;
pub mod values;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use pgwire_replication::{ReplicationConfig, TlsConfig};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};

pub use check::{Finding, Level, check, source_tables};
pub use stream::Shared;

/// The PostgreSQL source's settings (the `[source]` table with `kind = "postgres"`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `postgres://user:password@host:port/database?sslmode=...`.
    pub url: String,
    /// `schema.table` names; empty: every table of the publication (all tables when the agent
    /// creates it).
    pub tables: Vec<String>,
    pub slot: String,
    pub publication: String,
    /// How often the agent writes a heartbeat into the WAL and checks the slot's health.
    pub heartbeat: Duration,
}

impl Settings {
    /// Refuses slot and publication names that would need quoting: the replication protocol's
    /// commands take them as bare words.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (what, name) in [("slot", &self.slot), ("publication", &self.publication)] {
            if name.is_empty()
                || name.len() > 63
                || !name
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
            {
                bail!("the {what} name {name:?} must be 1 to 63 characters of a-z, 0-9 and _");
            }
        }
        if self.publication.len() > publication::MAX_PUBLICATION_NAME {
            bail!(
                "the publication name {:?} must be at most {} characters (the agent also keeps {:?})",
                self.publication,
                publication::MAX_PUBLICATION_NAME,
                publication::insert_only_name(&self.publication)
            );
        }
        replication_config(self)?;
        Ok(())
    }

    /// The configured tables as (schema, table); a name without a schema is in `public`.
    pub fn table_names(&self) -> Vec<(String, String)> {
        self.tables
            .iter()
            .map(|name| match name.split_once('.') {
                Some((schema, table)) => (schema.to_owned(), table.to_owned()),
                None => ("public".to_owned(), name.clone()),
            })
            .collect()
    }
}

/// The source's connection options for ordinary SQL, with the session settings the value
/// conversions rely on.
fn sql_options(settings: &Settings) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(&settings.url)
        .context("the source URL is not a valid postgres:// URL")?;
    Ok(options
        .application_name("tributary-agent")
        .options(values::SESSION_SETTINGS.iter().copied())
        .log_statements(tracing::log::LevelFilter::Debug))
}

pub async fn connect_sql(settings: &Settings) -> anyhow::Result<PgConnection> {
    sql_options(settings)?
        .connect()
        .await
        .context("connecting to the source database")
}

/// The replication connection's settings, from the same URL.
fn replication_config(settings: &Settings) -> anyhow::Result<ReplicationConfig> {
    let url = url::Url::parse(&settings.url).context("the source URL is not a valid URL")?;
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let host = url.host_str().unwrap_or("localhost").to_owned();
    let user = match url.username() {
        "" => std::env::var("USER").unwrap_or_else(|_| "postgres".into()),
        user => decode(user),
    };
    let password = url.password().map(decode).unwrap_or_default();
    let database = match url.path().trim_start_matches('/') {
        "" => user.clone(),
        database => decode(database),
    };
    let query = |name: &str| {
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let root = query("sslrootcert").map(PathBuf::from);
    let tls = match query("sslmode").as_deref().unwrap_or("disable") {
        "disable" | "allow" | "prefer" => TlsConfig::disabled(),
        "require" => TlsConfig::require(),
        "verify-ca" => TlsConfig::verify_ca(root),
        "verify-full" => {
            if host.parse::<std::net::IpAddr>().is_ok() {
                bail!(
                    "sslmode=verify-full needs the server's name in the source URL, not an IP \
                     address (the replication connection verifies names only): use the name on \
                     the server's certificate, or sslmode=verify-ca"
                );
            }
            TlsConfig::verify_full(root)
        }
        other => bail!("sslmode={other} is not one of disable, require, verify-ca, verify-full"),
    };
    let options = values::SESSION_SETTINGS
        .iter()
        .map(|(name, value)| format!("-c {name}={}", value.replace(' ', "")))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        settings.slot.clone(),
        vec![
            settings.publication.clone(),
            publication::insert_only_name(&settings.publication),
        ],
    )
    .with_port(url.port().unwrap_or(5432))
    .with_tls(tls)
    .with_options(options)
    .with_application_name("tributary-agent")
    .with_status_interval(STATUS_INTERVAL))
}

/// How often the replication connection reports the confirmed position to the source.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// What the agent remembers of its slot, in `postgres.json` in the state directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotState {
    pub slot: String,
    pub publication: String,
    /// Where the slot became consistent: the snapshot's position; streamed changes follow it.
    pub consistent_point: u64,
    /// When the snapshot was taken (Unix milliseconds): the commit time of its `read` events.
    pub snapshot_millis: i64,
    /// The tables the snapshot reads, in order.
    pub tables: Vec<(String, String)>,
    pub snapshot_done: bool,
    /// Which transactions the exported snapshot saw as committed, recorded before its first row
    /// is read: a continued read of a table without a key keeps only the rows those inserted.
    #[serde(default)]
    pub horizon: Option<Horizon>,
}

/// A snapshot's view of transactions, as `pg_current_snapshot()` prints it: every transaction
/// below `xmin` had ended, none from `xmax` on had, and of those between, the ones in `xip`
/// were still running (for the snapshot a slot exports, every one not yet committed,
/// subtransactions included). Full 64-bit transaction ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizon {
    pub xmin: u64,
    pub xmax: u64,
    pub xip: Vec<u64>,
}

impl Horizon {
    /// Parses `xmin:xmax:xip,xip,...`.
    pub fn parse(text: &str) -> Option<Horizon> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|xid| xid.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        (xmin <= xmax && xip.iter().all(|xid| (xmin..xmax).contains(xid))).then_some(Horizon {
            xmin,
            xmax,
            xip,
        })
    }
}

const STATE_FILE: &str = "postgres.json";

pub fn load_state(state_dir: &Path) -> anyhow::Result<Option<SlotState>> {
    let path = state_dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is corrupt", path.display())
            })?))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

fn save_state(state_dir: &Path, state: &SlotState) -> anyhow::Result<()> {
    crate::spool::write_atomically(&state_dir.join(STATE_FILE), &serde_json::to_vec(state)?)
}

/// The slot as the source reports it.
#[derive(Debug, Clone)]
struct SlotRow {
    wal_status: Option<String>,
    active: bool,
}

async fn slot_row(connection: &mut PgConnection, slot: &str) -> anyhow::Result<Option<SlotRow>> {
    let row: Option<(Option<String>, bool)> = sqlx::query_as(
        "select wal_status::text, active from pg_replication_slots where slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(connection)
    .await
    .context("reading pg_replication_slots")?;
    Ok(row.map(|(wal_status, active)| SlotRow { wal_status, active }))
}

/// The message for a slot that can no longer give the changes the agent needs.
fn slot_lost(slot: &str, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the replication slot {slot:?} {why}: the changes since the last confirmed position can \
         no longer be read, and the agent will not skip them silently. Run \
         `tributary-agent resync --config ...` to drop the slot and take a new snapshot, or ask \
         for a resync on the source's page and start the agent again: it does the same as it \
         starts"
    )
}

/// The tables of both publications (what the snapshot reads), sorted.
async fn captured_tables(
    connection: &mut PgConnection,
    settings: &Settings,
) -> sqlx::Result<Vec<(String, String)>> {
    let mut tables = catalog::publication_tables(connection, &settings.publication).await?;
    tables.extend(
        catalog::publication_tables(
            connection,
            &publication::insert_only_name(&settings.publication),
        )
        .await?,
    );
    tables.sort();
    tables.dedup();
    Ok(tables)
}

/// The server's message of a database error, without the driver's wrapping.
fn database_message(error: &sqlx::Error) -> String {
    match error.as_database_error() {
        Some(database) => database.message().to_owned(),
        None => error.to_string(),
    }
}

/// Drops the slot and forgets the source's positions, so the next run takes a new snapshot.
/// Batches already spooled stay and are still sent.
pub async fn resync(settings: &Settings, state_dir: &Path) -> anyhow::Result<String> {
    settings.validate()?;
    let mut connection = connect_sql(settings).await?;
    let mut message = String::new();
    match slot_row(&mut connection, &settings.slot).await? {
        Some(row) if row.active => bail!(
            "the slot {:?} is in use: stop the agent first (tributary-agent run) and retry",
            settings.slot
        ),
        Some(_) => {
            sqlx::query("select pg_drop_replication_slot($1)")
                .bind(&settings.slot)
                .execute(&mut connection)
                .await
                .context("dropping the replication slot")?;
            message.push_str(&format!("dropped the slot {:?}; ", settings.slot));
        }
        None => {}
    }
    match std::fs::remove_file(state_dir.join(STATE_FILE)) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    crate::spool::save_acked(state_dir, &crate::spool::Resume::default())?;
    message.push_str("the next run creates a new slot and takes a new snapshot");
    Ok(message)
}

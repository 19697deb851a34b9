//! What the data sources' table and a source's page show of its events, beyond the agent's
//! heartbeat: events per minute over the last hour (the overview's per-minute counts,
//! [`store::dashboards::events_per_minute`], drawn as a sparkline) and the newest event. Read by
//! the page (`crate::app`) and its live stream (`crate::live`) alike, so neither imports the
//! other for it.

use std::collections::HashMap;

use domain::{Permission, Role, SourceId};
use store::{StoreError, TenantTx};
use time::{Duration, OffsetDateTime};

use crate::charts;
use crate::shell::timestamp;

/// The throughput sparkline's window, in minutes.
const SPARKLINE_MINUTES: i64 = 60;

/// What the sources table shows beyond the sources themselves: each source's events per minute
/// over the last hour and its newest event. Empty for a role that cannot read bronze.
#[derive(Debug, Default)]
pub(crate) struct SourceActivity {
    /// Per source, [`SPARKLINE_MINUTES`] counts, oldest first, the last one the current minute.
    per_minute: HashMap<uuid::Uuid, Vec<f64>>,
    last_events: HashMap<SourceId, OffsetDateTime>,
    shown: bool,
}

impl SourceActivity {
    /// Reads the activity `role` may see; the overview's per-minute counts
    /// ([`store::dashboards::events_per_minute`]), laid out minute by minute.
    pub(crate) async fn read(tx: &mut TenantTx, role: Role) -> Result<Self, StoreError> {
        if !role.allows(Permission::ViewBronze) {
            return Ok(Self::default());
        }
        let now = OffsetDateTime::now_utc();
        let current_minute = now.unix_timestamp().div_euclid(60);
        let mut per_minute: HashMap<uuid::Uuid, Vec<f64>> = HashMap::new();
        let window = Duration::minutes(SPARKLINE_MINUTES);
        for minute in store::dashboards::events_per_minute(tx, window).await? {
            let age = current_minute - minute.minute.unix_timestamp().div_euclid(60);
            let Some(index) = (SPARKLINE_MINUTES - 1)
                .checked_sub(age)
                .and_then(|index| usize::try_from(index).ok())
            else {
                continue;
            };
            let counts = per_minute
                .entry(minute.source_id)
                .or_insert_with(|| vec![0.0; SPARKLINE_MINUTES as usize]);
            if let Some(count) = counts.get_mut(index) {
                *count += minute.events as f64;
            }
        }
        Ok(Self {
            per_minute,
            last_events: store::sources::last_events(tx).await?,
            shown: true,
        })
    }

    /// The source's throughput sparkline, or empty where the role cannot see it.
    pub(crate) fn sparkline(&self, source: SourceId) -> String {
        if !self.shown {
            return String::new();
        }
        let counts = self
            .per_minute
            .get(source.as_uuid())
            .cloned()
            .unwrap_or_else(|| vec![0.0; SPARKLINE_MINUTES as usize]);
        let total: f64 = counts.iter().sum();
        let peak = counts.iter().copied().fold(0.0, f64::max);
        let title = format!(
            "{} events in the last hour, at most {} in a minute",
            total as i64, peak as i64
        );
        charts::sparkline(&counts, &title)
    }

    /// When the source's newest event was committed, in words.
    pub(crate) fn last_event(&self, source: SourceId) -> String {
        if !self.shown {
            return "—".to_owned();
        }
        self.last_events
            .get(&source)
            .map_or_else(|| "none yet".to_owned(), |at| timestamp(*at))
    }
}

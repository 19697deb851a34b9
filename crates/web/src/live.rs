//! Live updates by server-sent events for the pages that show moving data: the overview's event
//! activity (`/app/overview/stream`) and the data sources' agent status
//! (`/app/data-sources/stream`). Each stream sends the page's HTML fragment when it changes,
//! checked every [`TICK`], and a keep-alive comment when nothing changed for a while; the htmx
//! SSE extension swaps the fragment in.
//!
//! Every tick re-checks the session (without counting as activity, so the idle timeout still
//! ends it) and the member's current role in the tenant, then reads through a `TenantTx` of
//! that role: a stream ends with an `end` event when the session ends, the membership goes or
//! the role loses the page's permission, and it can never show another tenant's rows. A session
//! may hold at most [`MAX_STREAMS_PER_SESSION`] streams at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use domain::{Permission, Role, TenantId, UserId};
use sha2::{Digest, Sha256};
use store::{Scope, StoreError, TenantTx};
use tokio::sync::watch;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{PageError, render_failures};
use crate::shell::timestamp;

/// How often a stream looks for changes.
pub const TICK: Duration = Duration::from_secs(2);
/// How long a stream may stay silent before a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How many streams one session may hold open at once: a few tabs. An overview holds two (its
/// dashboard's and the event activity's), and a click to another range opens the new page's
/// streams before the server notices the old page's are gone (at their next tick), so four
/// refused the streams of a second quick range change and left the page without live updates
/// until the browser's retries got through.
pub const MAX_STREAMS_PER_SESSION: usize = 8;
/// Consecutive failed ticks (the database away) after which a stream gives up.
const MAX_FAILED_TICKS: u32 = 5;
/// An agent that has not reported for this long is shown as silent.
const HEARTBEAT_STALE: time::Duration = time::Duration::seconds(60);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/overview/stream", get(overview_stream))
        .route("/app/data-sources/stream", get(sources_stream))
        .route_layer(axum::middleware::from_fn_with_state("app", render_failures))
}

/// The streams open per session, and the signal that ends them all when the server stops.
#[derive(Debug, Clone)]
pub struct LiveStreams {
    open: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
    closing: Arc<watch::Sender<bool>>,
}

impl Default for LiveStreams {
    fn default() -> Self {
        Self {
            open: Arc::default(),
            closing: Arc::new(watch::channel(false).0),
        }
    }
}

impl LiveStreams {
    /// Ends every open stream (the server is shutting down and waits for its connections).
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// A place for one more stream of the session `token`, unless it holds the most already.
    fn acquire(&self, token: &str) -> Option<StreamSlot> {
        let key = Sha256::digest(token.as_bytes()).to_vec();
        let mut open = self.open.lock().ok()?;
        let count = open.entry(key.clone()).or_default();
        if *count >= MAX_STREAMS_PER_SESSION {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            streams: self.clone(),
            key,
        })
    }
}

/// One open stream's place; given back when the stream is dropped (the client went away, or
/// the stream ended).
#[derive(Debug)]
struct StreamSlot {
    streams: LiveStreams,
    key: Vec<u8>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.streams.open.lock()
            && let Some(count) = open.get_mut(&self.key)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What a stream shows.
#[derive(Debug, Clone)]
enum Feed {
    Activity,
    Sources,
    /// A view drawn by the page that opened the stream (a dashboard's figures and panels).
    View(Arc<dyn LiveView>),
}

/// A page's view that a stream re-renders on each tick; the page module implements it, so
/// this module needs to know no page.
pub(crate) trait LiveView: Send + Sync + std::fmt::Debug {
    /// The permission that opens the page.
    fn permission(&self) -> Permission;

    /// The SSE event name the page's `sse-swap` listens for.
    fn event_name(&self) -> &'static str;

    /// The view as `role` sees it now.
    fn render<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        role: Role,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, StoreError>> + Send + 'a>>;
}

impl Feed {
    fn permission(&self) -> Permission {
        match self {
            Feed::Activity => Permission::ViewBronze,
            Feed::Sources => Permission::ViewSources,
            Feed::View(view) => view.permission(),
        }
    }

    /// The SSE event name the page's `sse-swap` listens for.
    fn event_name(&self) -> &'static str {
        match self {
            Feed::Activity => "activity",
            Feed::Sources => "sources",
            Feed::View(view) => view.event_name(),
        }
    }

    async fn render(&self, tx: &mut TenantTx, role: Role) -> Result<String, StoreError> {
        match self {
            Feed::Activity => activity_fragment(tx).await,
            Feed::Sources => sources_table(tx, role).await,
            Feed::View(view) => view.render(tx, role).await,
        }
    }
}

#[derive(Template)]
#[template(path = "app/live_activity.html")]
struct ActivityFragment {
    last_hour: i64,
    last_day: i64,
    latest_at: String,
    latest_table: String,
}

/// The overview's event activity, rendered.
pub(crate) async fn activity_fragment(tx: &mut TenantTx) -> Result<String, StoreError> {
    let activity = store::live::event_activity(tx).await?;
    let (latest_at, latest_table) = match activity.latest {
        Some((at, table)) => (timestamp(at), table),
        None => ("none in the last 24 hours".to_owned(), String::new()),
    };
    Ok(render_fragment(&ActivityFragment {
        last_hour: activity.last_hour,
        last_day: activity.last_day,
        latest_at,
        latest_table,
    }))
}

#[derive(Debug)]
struct SourceRow {
    /// The source's name, its id one click away (the API's paths take the id).
    name: crate::labels::Labelled,
    kind: String,
    status: String,
    created: String,
    /// The agent's own state (`streaming`, `snapshot`, ...), or `never reported`.
    agent_state: String,
    lag: String,
    heartbeat: String,
    silent: bool,
    last_error: String,
    /// What waits in the agent's spool and how long it takes to drain, or `caught up`.
    spool: String,
    /// Tables whose updates and deletes are not captured, each with its fix.
    not_captured: Vec<NotCaptured>,
    /// The status derived from the heartbeat (`store::sources::derive_status`).
    health: store::sources::DerivedStatus,
    health_tone: &'static str,
    agent_version: String,
    last_event: String,
    /// Events per minute over the last hour (SVG); empty where the role cannot see them.
    sparkline: String,
    detail_href: String,
    /// The source's dead-letter explorer.
    dead_letters_href: String,
    /// Its letters waiting for a replay, when counted.
    dead_letters: Option<i64>,
}

#[derive(Debug)]
struct NotCaptured {
    table: String,
    fix: String,
}

#[derive(Template)]
#[template(path = "app/live_sources.html")]
struct SourcesFragment {
    sources: Vec<SourceRow>,
}

fn bytes_text(bytes: i64) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// `caught up`, or the spool's bytes, the rate it is sent at and the time to drain it.
fn spool_text(agent: &serde_json::Value) -> String {
    if agent.is_null() {
        return "—".to_owned();
    }
    if agent["caught_up"].as_bool() == Some(true) {
        return "caught up".to_owned();
    }
    let mut text = format!(
        "{} waiting",
        bytes_text(agent["spool_bytes"].as_i64().unwrap_or(0))
    );
    match (
        agent["send_bytes_per_second"].as_f64(),
        agent["drain_seconds"].as_f64(),
    ) {
        (Some(rate), Some(seconds)) => text.push_str(&format!(
            " · sent at {}/s · drained in {seconds:.0} s",
            bytes_text(rate as i64)
        )),
        _ => text.push_str(" · not being sent"),
    }
    text
}

pub(crate) fn lag_text(agent: &serde_json::Value) -> String {
    let seconds = agent["lag_seconds"].as_f64();
    let bytes = agent["lag_bytes"].as_i64();
    let mut parts = Vec::new();
    if let Some(seconds) = seconds {
        parts.push(format!("{seconds:.1} s"));
    }
    if let Some(bytes) = bytes {
        parts.push(bytes_text(bytes));
    }
    if parts.is_empty() {
        "—".to_owned()
    } else {
        parts.join(" · ")
    }
}

/// The data sources table as `role` sees it now: with each source's activity, and its dead
/// letters waiting for a replay when the role may see dead letters.
pub(crate) async fn sources_table(tx: &mut TenantTx, role: Role) -> Result<String, StoreError> {
    let sources = store::sources::list_sources(tx).await?;
    let activity = crate::source_activity::SourceActivity::read(tx, role).await?;
    let waiting = if role.allows(Permission::ViewDeadLetters) {
        Some(store::dlq::waiting_by_source(tx).await?)
    } else {
        None
    };
    Ok(sources_fragment(sources, &activity, waiting.as_ref()))
}

/// The data sources table, with each source's dead letters waiting for a replay if `waiting`
/// counts them.
pub(crate) fn sources_fragment(
    sources: Vec<store::sources::Source>,
    activity: &crate::source_activity::SourceActivity,
    waiting: Option<&HashMap<domain::SourceId, i64>>,
) -> String {
    let now = time::OffsetDateTime::now_utc();
    let rows = sources
        .into_iter()
        .map(|source| {
            let agent = source.agent.unwrap_or(serde_json::Value::Null);
            let reported = agent["reported_at"].as_str().and_then(|text| {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .ok()
            });
            SourceRow {
                health_tone: source.health.status.tone(),
                health: source.health.clone(),
                agent_version: agent["agent_version"].as_str().unwrap_or("—").to_owned(),
                last_event: activity.last_event(source.source_id),
                sparkline: activity.sparkline(source.source_id),
                detail_href: format!("/app/data-sources/{}", source.source_id),
                // `app::dead_letters`' page, written out: this module knows no page.
                dead_letters_href: format!("/app/data-sources/{}/dead-letters", source.source_id),
                dead_letters: waiting
                    .map(|waiting| waiting.get(&source.source_id).copied().unwrap_or(0)),
                name: crate::labels::Labelled::named(
                    source.name,
                    "source",
                    source.source_id.to_string(),
                ),
                kind: source.kind,
                status: source.status,
                created: timestamp(source.created_at),
                agent_state: agent["state"]
                    .as_str()
                    .unwrap_or("never reported")
                    .to_owned(),
                lag: lag_text(&agent),
                heartbeat: reported.map_or_else(|| "—".to_owned(), timestamp),
                silent: reported.is_some_and(|at| now - at > HEARTBEAT_STALE),
                last_error: agent["last_error"].as_str().unwrap_or_default().to_owned(),
                spool: spool_text(&agent),
                not_captured: agent["not_captured"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|table| table.as_str())
                    .map(|table| NotCaptured {
                        table: table.to_owned(),
                        fix: format!(
                            "ALTER TABLE {table} REPLICA IDENTITY FULL, or add a primary key"
                        ),
                    })
                    .collect(),
            }
        })
        .collect();
    render_fragment(&SourcesFragment { sources: rows })
}

fn render_fragment(template: &impl Template) -> String {
    template.render().unwrap_or_else(|error| {
        tracing::error!(%error, "live fragment failed to render");
        String::new()
    })
}

async fn overview_stream(
    State(state): State<AppState>,
    member: Member,
) -> Result<Response, PageError> {
    open_stream(state, member, Feed::Activity)
}

async fn sources_stream(
    State(state): State<AppState>,
    member: Member,
) -> Result<Response, PageError> {
    open_stream(state, member, Feed::Sources)
}

/// A page's own live stream of `view` (a dashboard's, `/app/dashboards/{id}/live`).
pub(crate) fn view_stream(
    state: AppState,
    member: Member,
    view: Arc<dyn LiveView>,
) -> Result<Response, PageError> {
    open_stream(state, member, Feed::View(view))
}

fn open_stream(state: AppState, member: Member, feed: Feed) -> Result<Response, PageError> {
    member.require(feed.permission())?;
    let session = member.session();
    let Some(slot) = state.live.acquire(&session.token) else {
        tracing::info!(user = %session.user.user_id, "refused a live stream over the session's limit");
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            "Too many live views are open in this session. Close one and reload.",
        )
            .into_response());
    };
    let ticker = Ticker {
        closing: state.live.closing.subscribe(),
        state,
        token: session.token.clone(),
        user: session.user.user_id,
        tenant: member.tenant(),
        feed,
        last: None,
        first: true,
        ended: false,
        failed_ticks: 0,
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(ticker, Ticker::next_event);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// One stream's state between ticks.
struct Ticker {
    state: AppState,
    closing: watch::Receiver<bool>,
    token: String,
    user: UserId,
    tenant: TenantId,
    feed: Feed,
    /// The fragment last sent, to send only changes.
    last: Option<String>,
    first: bool,
    ended: bool,
    failed_ticks: u32,
    _slot: StreamSlot,
}

enum Tick {
    Changed(String),
    Unchanged,
    /// The session, the membership or the permission is gone.
    End,
}

impl Ticker {
    async fn next_event(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if self.ended {
            return None;
        }
        loop {
            if !self.first {
                tokio::select! {
                    () = tokio::time::sleep(TICK) => {}
                    _ = self.closing.wait_for(|closing| *closing) => return None,
                }
            }
            self.first = false;
            match self.tick().await {
                Ok(Tick::Changed(html)) => {
                    self.failed_ticks = 0;
                    let event = Event::default()
                        .event(self.feed.event_name())
                        .retry(Duration::from_secs(5))
                        .data(html);
                    return Some((Ok(event), self));
                }
                Ok(Tick::Unchanged) => {
                    // A comment each quiet tick: a client that went away is noticed (the write
                    // fails) within one tick, not one keep-alive interval, and stops costing
                    // queries and its session's place.
                    self.failed_ticks = 0;
                    return Some((Ok(Event::default().comment("unchanged")), self));
                }
                Ok(Tick::End) => {
                    self.ended = true;
                    let event = Event::default().event("end").data("ended");
                    return Some((Ok(event), self));
                }
                Err(error) => {
                    self.failed_ticks += 1;
                    tracing::warn!(%error, failed_ticks = self.failed_ticks, "live stream tick failed");
                    if self.failed_ticks >= MAX_FAILED_TICKS {
                        return None;
                    }
                }
            }
        }
    }

    async fn tick(&mut self) -> Result<Tick, StoreError> {
        let database = &self.state.database;
        if store::live::session_user(database, &self.token).await? != Some(self.user) {
            return Ok(Tick::End);
        }
        let role = store::accounts::memberships(database, self.user)
            .await?
            .into_iter()
            .find(|membership| membership.tenant_id == self.tenant)
            .map(|membership| membership.role);
        let Some(role) = role.filter(|role| role.allows(self.feed.permission())) else {
            return Ok(Tick::End);
        };
        let mut tx = TenantTx::begin(
            database,
            Scope::Member {
                tenant: self.tenant,
                user: self.user,
                role,
            },
        )
        .await?;
        let html = self.feed.render(&mut tx, role).await?;
        tx.commit().await?;
        if self.last.as_deref() == Some(html.as_str()) {
            return Ok(Tick::Unchanged);
        }
        self.last = Some(html.clone());
        Ok(Tick::Changed(html))
    }
}

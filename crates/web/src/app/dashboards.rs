//! `/app/overview` and `/app/dashboards`: the workspace's saved dashboards, each a grid of
//! chart panels over its metrics drawn by [`crate::charts`] from the analytics read layer, under
//! the workspace's headline figures, for a chosen time range (the last hour, day, week or 30
//! days, or between two moments), kept current by server-sent events. Every role sees them;
//! owners and admins edit them (audited by the store). A workspace without a saved dashboard is
//! shown one built from its own metric keys ([`store::dashboards::default_panels`]), which an
//! admin can save and then edit.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Permission, Role};
use serde::Deserialize;
use store::analytics::{self, Aggregation, GroupBy, SeriesQuery, Step};
use store::dashboards::{ChartType, Dashboard, Panel};
use store::{StoreError, TenantTx};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

use crate::AppState;
use crate::auth::session::Member;
use crate::charts::{self, Chart, Kind, Line};
use crate::pages::{Chrome, PageError, render};
use crate::shell::{Shell, shell};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/overview", get(overview))
        .route("/app/dashboards", post(create))
        .route("/app/dashboards/{id}", get(dashboard_page))
        .route("/app/dashboards/{id}/live", get(live))
        .route("/app/dashboards/{id}/edit", get(edit_page))
        .route("/app/dashboards/{id}/rename", post(rename))
        .route("/app/dashboards/{id}/delete", post(delete))
        .route("/app/dashboards/{id}/panels", post(add_panel))
        .route(
            "/app/dashboards/{id}/panels/{index}/remove",
            post(remove_panel),
        )
        .route(
            "/app/dashboards/{id}/panels/{index}/up",
            post(move_panel_up),
        )
}

/// The path segment of the dashboard a workspace without a saved one is shown.
const DEFAULT: &str = "default";

/// A relative range the selector offers: its parameter, label and length.
const PRESETS: [(&str, &str, i64); 4] = [
    ("1h", "Last hour", 3_600),
    ("24h", "Last day", 86_400),
    ("7d", "Last week", 7 * 86_400),
    ("30d", "Last 30 days", 30 * 86_400),
];

/// The time window a dashboard shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Range {
    /// One of [`PRESETS`], ending now.
    Last(usize),
    Between(OffsetDateTime, OffsetDateTime),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangeQuery {
    range: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// `2026-12-05T14:30` (what a `datetime-local` input sends, read as UTC) or RFC 3339.
fn moment(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok().or_else(|| {
        let local = format_description!("[year]-[month]-[day]T[hour]:[minute]");
        PrimitiveDateTime::parse(text, local)
            .ok()
            .map(PrimitiveDateTime::assume_utc)
    })
}

fn local_text(at: OffsetDateTime) -> String {
    at.format(format_description!("[year]-[month]-[day]T[hour]:[minute]"))
        .unwrap_or_default()
}

/// A query parameter that was given and is not empty.
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

impl Range {
    fn parse(query: &RangeQuery) -> Result<Range, String> {
        match (present(&query.from), present(&query.to)) {
            (None, None) => {}
            (Some(from), Some(to)) => {
                let (Some(from), Some(to)) = (moment(from), moment(to)) else {
                    return Err("from and to are moments such as 2026-12-05T14:30 (UTC)".into());
                };
                if from >= to {
                    return Err("from must be before to".into());
                }
                if to - from > Step::Day.max_range() {
                    return Err("a range covers at most 5 years".into());
                }
                return Ok(Range::Between(from, to));
            }
            _ => return Err("a custom range needs both from and to".into()),
        }
        match present(&query.range) {
            None => Ok(Range::Last(0)),
            Some(name) => PRESETS
                .iter()
                .position(|(preset, _, _)| *preset == name)
                .map(Range::Last)
                .ok_or_else(|| "range is one of 1h, 24h, 7d, 30d".to_owned()),
        }
    }

    /// `[from, to)`, with `to` now for a relative range.
    fn window(&self, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
        match self {
            Range::Last(preset) => (now - Duration::seconds(PRESETS[*preset].2), now),
            Range::Between(from, to) => (*from, *to),
        }
    }

    /// The query string that selects it.
    fn query(&self) -> String {
        match self {
            Range::Last(preset) => format!("range={}", PRESETS[*preset].0),
            Range::Between(from, to) => format!(
                "from={}&to={}",
                crate::rules::query_encode(&local_text(*from)),
                crate::rules::query_encode(&local_text(*to))
            ),
        }
    }

    /// Whether new readings can still land in it.
    fn live(&self, now: OffsetDateTime) -> bool {
        match self {
            Range::Last(_) => true,
            Range::Between(_, to) => *to > now,
        }
    }
}

/// The step a window is drawn at: a few hundred buckets at most, never finer than the panel
/// asks for.
fn step_for(span: Duration, preferred: Step) -> Step {
    let display = if span <= Duration::hours(2) {
        Step::Minute
    } else if span <= Duration::days(2) {
        Step::FiveMinutes
    } else if span <= Duration::days(60) {
        Step::Hour
    } else {
        Step::Day
    };
    if preferred.seconds() >= display.seconds() && span <= preferred.max_range() {
        preferred
    } else {
        display
    }
}

/// One panel, drawn.
#[derive(Debug)]
pub(crate) struct PanelView {
    pub(crate) heading: String,
    pub(crate) unit: String,
    /// What it draws, in words: `avg per 5m`.
    pub(crate) detail: String,
    /// The chart's SVG (rendered by its own template, which escapes every label).
    pub(crate) svg: String,
    pub(crate) legend: Vec<LegendEntry>,
    /// For a table panel: the newest buckets first.
    pub(crate) table: Option<TableView>,
    /// Readings in the window.
    pub(crate) points: usize,
    /// Why the panel could not be drawn (an invalid range for it).
    pub(crate) problem: Option<String>,
    /// The metric's explorer filter, when it names one entity.
    pub(crate) explore: Option<String>,
}

impl PanelView {
    /// The panel without its link to the explorer (for a page that is that link's target).
    pub(crate) fn without_explore(self) -> Self {
        PanelView {
            explore: None,
            ..self
        }
    }
}

#[derive(Debug)]
pub(crate) struct LegendEntry {
    pub(crate) class: String,
    pub(crate) label: String,
}

#[derive(Debug)]
pub(crate) struct TableView {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<(String, Vec<String>)>,
}

/// Rows a table panel shows.
const TABLE_ROWS: usize = 60;

/// `panel` drawn over `window`: its chart or table, legend and point count.
pub(crate) async fn panel_view(
    tx: &mut TenantTx,
    panel: &Panel,
    window: (OffsetDateTime, OffsetDateTime),
) -> Result<PanelView, StoreError> {
    let (from, to) = window;
    let step = step_for(to - from, panel.step);
    let query = SeriesQuery {
        key: panel.key.clone(),
        from,
        to,
        step,
        aggregation: panel.aggregation,
        site: panel.site.clone(),
        device: panel.device.clone(),
        group_by: panel.group_by,
        limit: panel.limit,
    };
    let mut view = PanelView {
        heading: panel.heading(),
        unit: panel.unit.clone(),
        // What the heading does not already say: the query behind a titled panel, and the
        // step actually drawn when the range asked for a coarser one than the panel's.
        detail: if !panel.title.is_empty() {
            format!(
                "{} · {} per {}",
                panel.key,
                panel.aggregation.as_str(),
                step.as_str()
            )
        } else if step != panel.step {
            format!("drawn per {}", step.as_str())
        } else {
            String::new()
        },
        svg: String::new(),
        legend: Vec::new(),
        table: None,
        points: 0,
        problem: None,
        explore: panel
            .device
            .as_ref()
            .map(|device| {
                format!(
                    "/app/explore/devices/{}",
                    crate::rules::query_encode(device)
                )
            })
            .or_else(|| {
                panel
                    .site
                    .as_ref()
                    .map(|site| format!("/app/explore/sites/{}", crate::rules::query_encode(site)))
            }),
    };
    let series = match analytics::series(tx, &query).await {
        Ok(series) => series,
        Err(StoreError::InvalidParameter { message, .. }) => {
            view.problem = Some(message);
            return Ok(view);
        }
        Err(error) => return Err(error),
    };
    let lines: Vec<Line> = series
        .into_iter()
        .map(|series| Line {
            label: series
                .label
                .clone()
                .or(series.group.clone())
                .unwrap_or_default(),
            points: series
                .points
                .into_iter()
                .map(|point| (point.at, point.value))
                .collect(),
        })
        .collect();
    view.points = lines.iter().map(|line| line.points.len()).sum();
    if panel.group_by.is_some() {
        view.legend = lines
            .iter()
            .enumerate()
            .map(|(index, line)| LegendEntry {
                class: format!("s{}", index % 8),
                label: line.label.clone(),
            })
            .collect();
    }
    // The chart's window is whole buckets: from the first that `from` falls in to the end of
    // the one `to` falls in.
    let seconds = step.seconds();
    let start = floor(from, seconds);
    let end =
        floor(to, seconds) + Duration::seconds(if floor(to, seconds) == to { 0 } else { seconds });
    match panel.chart {
        ChartType::Table => {
            let mut moments: Vec<OffsetDateTime> = lines
                .iter()
                .flat_map(|line| line.points.iter().map(|(at, _)| *at))
                .collect();
            moments.sort_unstable_by(|a, b| b.cmp(a));
            moments.dedup();
            moments.truncate(TABLE_ROWS);
            let columns = if panel.group_by.is_some() {
                lines.iter().map(|line| line.label.clone()).collect()
            } else {
                vec![panel.aggregation.as_str().to_owned()]
            };
            let rows = moments
                .into_iter()
                .map(|at| {
                    let cells = lines
                        .iter()
                        .map(|line| {
                            line.points
                                .iter()
                                .find(|(point, _)| *point == at)
                                .map(|(_, value)| charts::value_text(*value, &panel.unit))
                                .unwrap_or_default()
                        })
                        .collect();
                    (crate::shell::timestamp(at), cells)
                })
                .collect();
            view.table = Some(TableView { columns, rows });
        }
        chart => {
            let svg = charts::draw(
                &Chart {
                    kind: if chart == ChartType::Bar {
                        Kind::Bar
                    } else {
                        Kind::Line
                    },
                    from: start,
                    to: end,
                    step: seconds,
                    unit: &panel.unit,
                    title: &view.heading,
                },
                &lines,
            );
            view.svg = svg.render().unwrap_or_else(|error| {
                tracing::error!(%error, "a chart failed to render");
                String::new()
            });
        }
    }
    Ok(view)
}

fn floor(at: OffsetDateTime, seconds: i64) -> OffsetDateTime {
    let unix = at.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(unix - unix.rem_euclid(seconds)).unwrap_or(at)
}

/// One source's ingest over the last five minutes.
#[derive(Debug)]
struct SourceRate {
    name: String,
    /// `insert 12.4/min · update 3/min`.
    rates: String,
    lag: String,
}

/// The figures above the panels; the pipeline's only for roles that may see it.
#[derive(Debug)]
struct Figures {
    entities: store::dashboards::EntityFigures,
    /// Events per minute by source and operation, with each source's lag.
    sources: Option<Vec<SourceRate>>,
    dead_letters: Option<i64>,
}

async fn figures(tx: &mut TenantTx, role: Role) -> Result<Figures, StoreError> {
    let entities = store::dashboards::entity_figures(tx).await?;
    let sources = if role.allows(Permission::ViewBronze) && role.allows(Permission::ViewSources) {
        let rates = store::dashboards::event_rates(tx).await?;
        let sources = store::sources::list_sources(tx).await?;
        Some(
            sources
                .into_iter()
                .map(|source| {
                    let rates: Vec<String> = rates
                        .iter()
                        .filter(|rate| &rate.source_id == source.source_id.as_uuid())
                        .map(|rate| format!("{} {}/min", rate.op, rate_text(rate.per_minute)))
                        .collect();
                    let agent = source.agent.unwrap_or(serde_json::Value::Null);
                    SourceRate {
                        name: source.name,
                        rates: if rates.is_empty() {
                            "no events in the last 5 minutes".into()
                        } else {
                            rates.join(" · ")
                        },
                        lag: crate::live::lag_text(&agent),
                    }
                })
                .collect(),
        )
    } else {
        None
    };
    let dead_letters = if role.allows(Permission::ViewDeadLetters) {
        Some(store::dashboards::dead_letters(tx).await?)
    } else {
        None
    };
    Ok(Figures {
        entities,
        sources,
        dead_letters,
    })
}

fn rate_text(per_minute: f64) -> String {
    charts::value_text(per_minute, "")
}

/// The part of a dashboard page the live stream replaces: figures and panels.
#[derive(Template)]
#[template(path = "app/dashboard_body.html")]
struct DashboardBody {
    figures: Figures,
    panels: Vec<PanelView>,
    /// No metric readings at all yet: say what to do next.
    no_metrics: bool,
    may_pair: bool,
    window: String,
}

/// Which dashboard a URL names.
#[derive(Debug, Clone, PartialEq)]
pub enum Which {
    Default,
    Saved(Uuid),
}

impl Which {
    fn parse(segment: &str) -> Result<Which, PageError> {
        if segment == DEFAULT {
            return Ok(Which::Default);
        }
        Uuid::parse_str(segment)
            .map(Which::Saved)
            .map_err(|_| PageError::NotFound)
    }

    fn segment(&self) -> String {
        match self {
            Which::Default => DEFAULT.to_owned(),
            Which::Saved(id) => id.to_string(),
        }
    }
}

/// The dashboard `which` names, or the default one built from the workspace's keys.
async fn load(tx: &mut TenantTx, which: &Which) -> Result<(String, Vec<Panel>), StoreError> {
    match which {
        Which::Saved(id) => {
            let dashboard = store::dashboards::get(tx, *id).await?;
            Ok((dashboard.name, dashboard.panels))
        }
        Which::Default => {
            let catalogue = analytics::catalogue(tx).await?;
            Ok((
                "Overview".to_owned(),
                store::dashboards::default_panels(&catalogue),
            ))
        }
    }
}

/// What a live stream re-renders on each tick.
#[derive(Debug, Clone)]
pub struct LiveView {
    which: Which,
    range: Range,
}

/// The figures and panels of the view for `role`, rendered: the live stream's event.
impl crate::live::LiveView for LiveView {
    fn permission(&self) -> Permission {
        Permission::ViewDashboards
    }

    fn event_name(&self) -> &'static str {
        "dashboard"
    }

    fn render<'a>(
        &'a self,
        tx: &'a mut TenantTx,
        role: Role,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, StoreError>> + Send + 'a>> {
        Box::pin(async move {
            let (_, panels) = load(tx, &self.which).await?;
            body(tx, role, &panels, &self.range).await
        })
    }
}

async fn body(
    tx: &mut TenantTx,
    role: Role,
    panels: &[Panel],
    range: &Range,
) -> Result<String, StoreError> {
    let now = OffsetDateTime::now_utc();
    let window = range.window(now);
    let figures = figures(tx, role).await?;
    let mut views = Vec::with_capacity(panels.len());
    for panel in panels {
        views.push(panel_view(tx, panel, window).await?);
    }
    let no_metrics = panels.is_empty() && analytics::catalogue(tx).await?.metrics.is_empty();
    let body = DashboardBody {
        figures,
        panels: views,
        no_metrics,
        may_pair: role.allows(Permission::ManageSources),
        window: format!(
            "{} to {}",
            crate::shell::timestamp(window.0),
            crate::shell::timestamp(window.1)
        ),
    };
    Ok(body.render().unwrap_or_else(|error| {
        tracing::error!(%error, "a dashboard failed to render");
        String::new()
    }))
}

#[derive(Debug)]
struct Tab {
    href: String,
    name: String,
    current: bool,
}

#[derive(Debug)]
struct RangeLink {
    href: String,
    label: &'static str,
    current: bool,
}

#[derive(Template)]
#[template(path = "app/dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    shell: Shell,
    name: String,
    /// The dashboard's own path (`/app/overview` for the first).
    path: String,
    segment: String,
    tabs: Vec<Tab>,
    ranges: Vec<RangeLink>,
    custom_from: String,
    custom_to: String,
    custom: bool,
    /// The live stream's URL, when new readings can land in the window.
    live: Option<String>,
    body: String,
    may_edit: bool,
    problem: Option<String>,
    /// The live event activity, for roles that read bronze.
    activity_html: Option<String>,
}

async fn overview(
    State(state): State<AppState>,
    member: Member,
    Query(query): Query<RangeQuery>,
) -> Result<Response, PageError> {
    show(&state, &member, None, &query).await
}

async fn dashboard_page(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, PageError> {
    let which = Which::parse(&id)?;
    show(&state, &member, Some(which), &query).await
}

/// The overview (`which` absent: the first dashboard) or one dashboard.
async fn show(
    state: &AppState,
    member: &Member,
    which: Option<Which>,
    query: &RangeQuery,
) -> Result<Response, PageError> {
    let (range, problem) = match Range::parse(query) {
        Ok(range) => (range, None),
        Err(message) => (Range::Last(0), Some(message)),
    };
    let mut tx = member.tx(state, Permission::ViewDashboards).await?;
    let saved: Vec<Dashboard> = store::dashboards::list(&mut tx).await?;
    let which = which.unwrap_or_else(|| {
        saved
            .first()
            .map_or(Which::Default, |dashboard| Which::Saved(dashboard.id))
    });
    let (name, panels) = load(&mut tx, &which).await?;
    let body = body(&mut tx, member.role(), &panels, &range).await?;
    let activity_html = if member.role().allows(Permission::ViewBronze) {
        Some(crate::live::activity_fragment(&mut tx).await?)
    } else {
        None
    };
    tx.commit().await?;
    let path_of = |which: &Which, first: bool| {
        if first {
            "/app/overview".to_owned()
        } else {
            format!("/app/dashboards/{}", which.segment())
        }
    };
    let tabs: Vec<Tab> = if saved.is_empty() {
        vec![Tab {
            href: "/app/overview".into(),
            name: name.clone(),
            current: true,
        }]
    } else {
        saved
            .iter()
            .enumerate()
            .map(|(index, dashboard)| Tab {
                href: path_of(&Which::Saved(dashboard.id), index == 0),
                name: dashboard.name.clone(),
                current: which == Which::Saved(dashboard.id),
            })
            .collect()
    };
    let first = match &which {
        Which::Default => saved.is_empty(),
        Which::Saved(id) => saved.first().is_some_and(|dashboard| dashboard.id == *id),
    };
    let path = path_of(&which, first);
    let ranges = PRESETS
        .iter()
        .enumerate()
        .map(|(index, (_, label, _))| RangeLink {
            href: format!("{path}?{}", Range::Last(index).query()),
            label,
            current: range == Range::Last(index),
        })
        .collect();
    let now = OffsetDateTime::now_utc();
    let (from, to) = range.window(now);
    let status = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(render(
        status,
        &DashboardPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(member, "/app/overview"),
            name,
            segment: which.segment(),
            path,
            tabs,
            ranges,
            custom_from: local_text(from),
            custom_to: local_text(to),
            custom: matches!(range, Range::Between(..)),
            live: range
                .live(now)
                .then(|| format!("/app/dashboards/{}/live?{}", which.segment(), range.query())),
            body,
            may_edit: member.role().allows(Permission::ManageWorkspace),
            problem,
            activity_html,
        },
    ))
}

async fn live(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, PageError> {
    let which = Which::parse(&id)?;
    let range = Range::parse(&query).map_err(PageError::BadRequest)?;
    if let Which::Saved(id) = which {
        // Not found is said now, not as a stream that ends at once.
        let mut tx = member.tx(&state, Permission::ViewDashboards).await?;
        store::dashboards::get(&mut tx, id).await?;
        tx.commit().await?;
    }
    crate::live::view_stream(state, member, Arc::new(LiveView { which, range }))
}

// ---- editing ----

#[derive(Debug)]
struct PanelRow {
    index: usize,
    heading: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "app/dashboard_edit.html")]
struct EditPage {
    chrome: Chrome,
    shell: Shell,
    name: String,
    segment: String,
    saved: bool,
    panels: Vec<PanelRow>,
    keys: Vec<String>,
    full: bool,
    problem: Option<String>,
    form: PanelForm,
}

/// The add-a-panel form, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct PanelForm {
    title: String,
    key: String,
    agg: String,
    step: String,
    chart: String,
    group_by: String,
    limit: String,
    site: String,
    device: String,
    unit: String,
}

impl PanelForm {
    fn panel(&self) -> Result<Panel, String> {
        let filled = |text: &str| {
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_owned())
        };
        let key = self.key.trim();
        if key.is_empty() {
            return Err("key: choose a metric key".into());
        }
        let panel = Panel {
            title: self.title.trim().to_owned(),
            key: key.to_owned(),
            aggregation: Aggregation::parse(&self.agg)
                .ok_or("aggregation: one of avg, min, max, sum, count, last")?,
            step: Step::parse(&self.step).ok_or("step: one of 1m, 5m, 1h, 1d")?,
            site: filled(&self.site),
            device: filled(&self.device),
            group_by: match self.group_by.as_str() {
                "" => None,
                text => Some(GroupBy::parse(text).ok_or("group by: site or device")?),
            },
            limit: match self.limit.trim() {
                "" => 5,
                text => text.parse().map_err(|_| "limit: a number from 1 to 50")?,
            },
            chart: ChartType::parse(&self.chart).ok_or("chart: line, bar or table")?,
            unit: match filled(&self.unit) {
                Some(unit) => unit,
                None => store::dashboards::unit_of(key).to_owned(),
            },
        };
        panel.validate()?;
        Ok(panel)
    }
}

async fn edit_page(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let which = Which::parse(&id)?;
    edit(&state, &member, &which, None, PanelForm::default()).await
}

async fn edit(
    state: &AppState,
    member: &Member,
    which: &Which,
    problem: Option<String>,
    form: PanelForm,
) -> Result<Response, PageError> {
    let mut tx = member.tx(state, Permission::ManageWorkspace).await?;
    let (name, panels) = load(&mut tx, which).await?;
    let catalogue = analytics::catalogue(&mut tx).await?;
    tx.commit().await?;
    let status = if problem.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok(render(
        status,
        &EditPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(member, "/app/overview"),
            name,
            segment: which.segment(),
            saved: matches!(which, Which::Saved(_)),
            full: panels.len() >= store::dashboards::MAX_PANELS,
            panels: panels
                .iter()
                .enumerate()
                .map(|(index, panel)| PanelRow {
                    index,
                    heading: panel.heading(),
                    detail: format!(
                        "{} · {} per {} · {}{}",
                        panel.key,
                        panel.aggregation.as_str(),
                        panel.step.as_str(),
                        panel.chart.as_str(),
                        panel
                            .group_by
                            .map(|group| format!(" · top {} by {}", panel.limit, group.as_str()))
                            .unwrap_or_default()
                    ),
                })
                .collect(),
            keys: catalogue
                .metrics
                .into_iter()
                .map(|metric| metric.key)
                .collect(),
            problem,
            form: PanelForm {
                agg: if form.agg.is_empty() {
                    "avg".into()
                } else {
                    form.agg
                },
                step: if form.step.is_empty() {
                    "1m".into()
                } else {
                    form.step
                },
                chart: if form.chart.is_empty() {
                    "line".into()
                } else {
                    form.chart
                },
                ..form
            },
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateForm {
    name: String,
    /// `default`: start from the default dashboard's panels; else empty.
    from: String,
}

/// Saves a new dashboard (empty, or a copy of the default one) and opens its editor.
async fn create(
    State(state): State<AppState>,
    member: Member,
    axum::Form(form): axum::Form<CreateForm>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(&state, Permission::ManageWorkspace).await?;
    let panels = if form.from == DEFAULT {
        store::dashboards::default_panels(&analytics::catalogue(&mut tx).await?)
    } else {
        Vec::new()
    };
    let name = if form.name.trim().is_empty() {
        "Overview"
    } else {
        form.name.as_str()
    };
    let id = match store::dashboards::create(&mut tx, name, &panels).await {
        Ok(id) => id,
        Err(StoreError::Invalid(message)) => return Err(PageError::BadRequest(message)),
        Err(error) => return Err(error.into()),
    };
    tx.commit().await?;
    tracing::info!(by = %member.session().user.user_id, dashboard = %id, "dashboard created");
    Ok(Redirect::to(&format!("/app/dashboards/{id}/edit")).into_response())
}

/// Applies `change` to a saved dashboard's name and panels and saves them; a refused change
/// shows the editor again with the reason.
async fn change(
    state: &AppState,
    member: &Member,
    id: &str,
    form: PanelForm,
    change: impl FnOnce(&mut String, &mut Vec<Panel>) -> Result<(), String>,
) -> Result<Response, PageError> {
    let which = Which::parse(id)?;
    let Which::Saved(id) = which else {
        // The default dashboard is computed: it is saved first (the editor offers that).
        return Err(PageError::NotFound);
    };
    let mut tx = member.tx(state, Permission::ManageWorkspace).await?;
    let dashboard = store::dashboards::get(&mut tx, id).await?;
    let (mut name, mut panels) = (dashboard.name, dashboard.panels);
    if let Err(message) = change(&mut name, &mut panels) {
        drop(tx);
        return edit(state, member, &which, Some(message), form).await;
    }
    match store::dashboards::update(&mut tx, id, &name, &panels).await {
        Ok(()) => {}
        Err(StoreError::Invalid(message)) => {
            drop(tx);
            return edit(state, member, &which, Some(message), form).await;
        }
        Err(error) => return Err(error.into()),
    }
    tx.commit().await?;
    tracing::info!(by = %member.session().user.user_id, dashboard = %id, "dashboard changed");
    Ok(Redirect::to(&format!("/app/dashboards/{id}/edit")).into_response())
}

async fn add_panel(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<PanelForm>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageWorkspace)?;
    let panel = form.panel();
    change(&state, &member, &id, form, |_, panels| {
        if panels.len() >= store::dashboards::MAX_PANELS {
            return Err(format!(
                "a dashboard holds at most {} panels",
                store::dashboards::MAX_PANELS
            ));
        }
        panels.push(panel?);
        Ok(())
    })
    .await
}

fn index_of(text: &str) -> Result<usize, PageError> {
    text.parse().map_err(|_| PageError::NotFound)
}

async fn remove_panel(
    State(state): State<AppState>,
    member: Member,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageWorkspace)?;
    let index = index_of(&index)?;
    change(&state, &member, &id, PanelForm::default(), |_, panels| {
        if index >= panels.len() {
            return Err("that panel is no longer there".into());
        }
        panels.remove(index);
        Ok(())
    })
    .await
}

async fn move_panel_up(
    State(state): State<AppState>,
    member: Member,
    Path((id, index)): Path<(String, String)>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageWorkspace)?;
    let index = index_of(&index)?;
    change(&state, &member, &id, PanelForm::default(), |_, panels| {
        if index == 0 || index >= panels.len() {
            return Err("that panel cannot move up".into());
        }
        panels.swap(index - 1, index);
        Ok(())
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RenameForm {
    name: String,
}

async fn rename(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<RenameForm>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageWorkspace)?;
    change(&state, &member, &id, PanelForm::default(), |name, _| {
        *name = form.name.trim().to_owned();
        Ok(())
    })
    .await
}

async fn delete(
    State(state): State<AppState>,
    member: Member,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Which::Saved(id) = Which::parse(&id)? else {
        return Err(PageError::NotFound);
    };
    let mut tx = member.tx(&state, Permission::ManageWorkspace).await?;
    store::dashboards::delete(&mut tx, id).await?;
    tx.commit().await?;
    tracing::info!(by = %member.session().user.user_id, dashboard = %id, "dashboard deleted");
    Ok(Redirect::to("/app/overview").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(range: &str, from: &str, to: &str) -> RangeQuery {
        let some = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        RangeQuery {
            range: some(range),
            from: some(from),
            to: some(to),
        }
    }

    #[test]
    fn ranges_are_presets_or_two_moments_and_anything_else_is_named() {
        assert_eq!(Range::parse(&query("", "", "")), Ok(Range::Last(0)));
        assert_eq!(Range::parse(&query("7d", "", "")), Ok(Range::Last(2)));
        let between = Range::parse(&query("", "2026-12-01T00:00", "2026-12-02T12:30")).unwrap();
        assert_eq!(
            between.query(),
            "from=2026-12-01T00%3A00&to=2026-12-02T12%3A30"
        );
        assert!(!between.live(OffsetDateTime::now_utc()));
        for (bad, message) in [
            (query("2h", "", ""), "range is one of"),
            (query("", "2026-12-01T00:00", ""), "both from and to"),
            (query("", "2026-12-02T00:00", "2026-12-01T00:00"), "before"),
            (query("", "yesterday", "today"), "moments"),
            (query("", "2010-01-01T00:00", "2026-01-01T00:00"), "5 years"),
        ] {
            let error = Range::parse(&bad).unwrap_err();
            assert!(error.contains(message), "{error}");
        }
    }

    #[test]
    fn the_step_follows_the_window_unless_the_panel_asks_for_coarser() {
        assert_eq!(step_for(Duration::hours(1), Step::Minute), Step::Minute);
        assert_eq!(step_for(Duration::hours(1), Step::Hour), Step::Hour);
        assert_eq!(step_for(Duration::days(1), Step::Minute), Step::FiveMinutes);
        assert_eq!(step_for(Duration::days(7), Step::FiveMinutes), Step::Hour);
        assert_eq!(step_for(Duration::days(365), Step::Hour), Step::Day);
    }

    #[test]
    fn a_panel_form_names_what_is_wrong_and_takes_the_keys_unit_by_default() {
        let form = PanelForm {
            key: "power_kw".into(),
            agg: "max".into(),
            step: "5m".into(),
            chart: "bar".into(),
            group_by: "device".into(),
            limit: "3".into(),
            ..PanelForm::default()
        };
        let panel = form.panel().unwrap();
        assert_eq!(
            (panel.unit.as_str(), panel.limit, panel.group_by),
            ("kW", 3, Some(GroupBy::Device))
        );
        for (broken, message) in [
            (
                PanelForm {
                    key: " ".into(),
                    ..form.clone()
                },
                "key",
            ),
            (
                PanelForm {
                    agg: "median".into(),
                    ..form.clone()
                },
                "aggregation",
            ),
            (
                PanelForm {
                    limit: "x".into(),
                    ..form.clone()
                },
                "limit",
            ),
            (
                PanelForm {
                    limit: "99".into(),
                    ..form.clone()
                },
                "limit",
            ),
            (
                PanelForm {
                    group_by: "tenant".into(),
                    ..form.clone()
                },
                "group by",
            ),
        ] {
            let error = broken.panel().unwrap_err();
            assert!(error.contains(message), "{error}");
        }
    }
}

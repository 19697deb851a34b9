//! `/app/explore`: the workspace's sites, devices and sessions as its read models hold them, a
//! searchable, filtered list per kind paged by cursor, and each entity's detail (its columns,
//! extras, related entities and the latest hour of its metrics), all read through
//! [`store::analytics`], the read layer the JSON API also uses. Every role may open it
//! (`view_dashboards`); row-level security keeps another tenant's entities not found.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::routing::get;
use domain::Permission;
use serde::Deserialize;
use serde_json::Value;
use store::analytics::{
    Aggregation, Catalogue, Entity, EntityKind, EntityQuery, EntitySort, InvalidParameter,
    SeriesQuery, Step,
};
use store::{StoreError, TenantTx};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, render};
use crate::rules::query_encode;
use crate::shell::{Shell, shell, timestamp};

/// The explorer's first page, its entry in `web::APP_PAGES`.
pub const HOME: &str = "/app/explore/devices";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app/explore", get(|| async { Redirect::to(HOME) }))
        .route("/app/explore/{kind}", get(list_page))
        .route("/app/explore/{kind}/{id}", get(entity_page))
}

/// How a typed column's value is shown.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Text,
    /// An RFC 3339 time, shown in UTC as the other app pages show moments.
    Time,
    /// The id of an entity of the kind at this path segment, linked to its page.
    Link(&'static str),
}

/// A typed column of a kind: its name in the read model, its label, how it is shown.
type Column = (&'static str, &'static str, Shape);

/// An entity kind as the explorer shows it.
#[derive(Debug)]
struct Kind {
    kind: EntityKind,
    /// The path segment: `sites`, `devices`, `sessions`.
    path: &'static str,
    /// The tab's label and heading.
    plural: &'static str,
    /// Lowercase, for sentences ("no devices yet").
    noun: &'static str,
    /// The columns its list shows after the id.
    list_columns: &'static [Column],
    /// Every typed column, as its page lists them.
    detail_columns: &'static [Column],
    /// Which filters its list has: site, device, status.
    filters: (bool, bool, bool),
    /// Its sorts as the `sort` parameter names them, labelled: those the read layer takes for
    /// the kind.
    sorts: &'static [(&'static str, &'static str, EntitySort)],
}

const KINDS: [Kind; 3] = [
    Kind {
        kind: EntityKind::Site,
        path: "sites",
        plural: "Sites",
        noun: "sites",
        list_columns: &[
            ("name", "Name", Shape::Text),
            ("region", "Region", Shape::Text),
        ],
        detail_columns: &[
            ("name", "Name", Shape::Text),
            ("region", "Region", Shape::Text),
            ("timezone", "Time zone", Shape::Text),
            ("latitude", "Latitude", Shape::Text),
            ("longitude", "Longitude", Shape::Text),
        ],
        filters: (false, false, false),
        sorts: &[
            ("id", "Id", EntitySort::Id),
            ("name", "Name", EntitySort::Name),
            ("recent", "Recently updated", EntitySort::Recent),
            ("updated_at", "Last updated", EntitySort::UpdatedAt),
        ],
    },
    Kind {
        kind: EntityKind::Device,
        path: "devices",
        plural: "Devices",
        noun: "devices",
        list_columns: &[
            ("name", "Name", Shape::Text),
            ("site_id", "Site", Shape::Link("sites")),
            ("status", "Status", Shape::Text),
            ("last_seen_at", "Last seen (UTC)", Shape::Time),
        ],
        detail_columns: &[
            ("name", "Name", Shape::Text),
            ("site_id", "Site", Shape::Link("sites")),
            ("kind", "Kind", Shape::Text),
            ("model", "Model", Shape::Text),
            ("status", "Status", Shape::Text),
            ("firmware", "Firmware", Shape::Text),
            ("last_seen_at", "Last seen (UTC)", Shape::Time),
        ],
        filters: (true, false, true),
        sorts: &[
            ("id", "Id", EntitySort::Id),
            ("name", "Name", EntitySort::Name),
            ("recent", "Last seen", EntitySort::Recent),
            ("updated_at", "Last updated", EntitySort::UpdatedAt),
        ],
    },
    Kind {
        kind: EntityKind::Session,
        path: "sessions",
        plural: "Sessions",
        noun: "sessions",
        list_columns: &[
            ("device_id", "Device", Shape::Link("devices")),
            ("site_id", "Site", Shape::Link("sites")),
            ("status", "Status", Shape::Text),
            ("started_at", "Started (UTC)", Shape::Time),
            ("ended_at", "Ended (UTC)", Shape::Time),
        ],
        detail_columns: &[
            ("device_id", "Device", Shape::Link("devices")),
            ("site_id", "Site", Shape::Link("sites")),
            ("status", "Status", Shape::Text),
            ("started_at", "Started (UTC)", Shape::Time),
            ("ended_at", "Ended (UTC)", Shape::Time),
        ],
        filters: (true, true, true),
        // Sessions have no name.
        sorts: &[
            ("id", "Id", EntitySort::Id),
            ("recent", "Started", EntitySort::Recent),
            ("updated_at", "Last updated", EntitySort::UpdatedAt),
        ],
    },
];

/// The kind at a path segment; any other segment is not a page.
fn kind_at(path: &str) -> Result<&'static Kind, PageError> {
    KINDS
        .iter()
        .find(|kind| kind.path == path)
        .ok_or(PageError::NotFound)
}

/// An entity's page.
fn entity_href(kind_path: &str, id: &str) -> String {
    format!("/app/explore/{kind_path}/{}", query_encode(id))
}

/// One shown value, linked when it names another entity.
#[derive(Debug)]
struct Cell {
    text: String,
    href: Option<String>,
}

/// `column`'s value of `entity` as shown; an absent value is empty.
fn cell(entity: &Entity, (name, _, shape): &Column) -> Cell {
    let text = match entity.columns.get(*name) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => match shape {
            Shape::Time => OffsetDateTime::parse(text, &Rfc3339)
                .map(timestamp)
                .unwrap_or_else(|_| text.clone()),
            Shape::Text | Shape::Link(_) => text.clone(),
        },
        Some(other) => other.to_string(),
    };
    let href = match shape {
        Shape::Link(kind_path) if !text.is_empty() => Some(entity_href(kind_path, &text)),
        _ => None,
    };
    Cell { text, href }
}

/// The list's query parameters, read as text and checked here so that a wrong one is named.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListParams {
    q: Option<String>,
    site: Option<String>,
    device: Option<String>,
    status: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// An optional parameter: empty is the same as absent.
fn given(text: &Option<String>) -> Option<String> {
    text.clone().filter(|text| !text.is_empty())
}

impl ListParams {
    /// The read layer's query for `kind`; the read layer refuses, by name, a filter that does
    /// not apply to the kind.
    fn query(&self, kind: &Kind) -> Result<EntityQuery, InvalidParameter> {
        let invalid = |parameter, message: &str| InvalidParameter {
            parameter,
            message: message.to_owned(),
        };
        let sort = match self.sort.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                kind.sorts
                    .iter()
                    .find(|(value, _, _)| *value == text)
                    .map(|(_, _, sort)| *sort)
                    .ok_or_else(|| {
                        let values: Vec<&str> =
                            kind.sorts.iter().map(|(value, _, _)| *value).collect();
                        invalid(
                            "sort",
                            &format!("sort must be one of {}", values.join(", ")),
                        )
                    })?,
            ),
        };
        let descending = match self.order.as_deref() {
            None | Some("") | Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err(invalid("order", "order must be asc or desc")),
        };
        let limit = match self.limit.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<u32>()
                    .ok()
                    .filter(|limit| (1..=500).contains(limit))
                    .ok_or_else(|| {
                        invalid("limit", "limit must be a whole number from 1 to 500")
                    })?,
            ),
        };
        Ok(EntityQuery {
            search: given(&self.q),
            site: given(&self.site),
            device: given(&self.device),
            status: given(&self.status),
            sort,
            descending,
            limit,
            cursor: given(&self.cursor),
        })
    }

    /// Whether anything narrows the list (or it is not the first page).
    fn narrows(&self) -> bool {
        [
            &self.q,
            &self.site,
            &self.device,
            &self.status,
            &self.cursor,
        ]
        .into_iter()
        .any(|text| given(text).is_some())
    }

    /// The list of `kind` with these parameters, from `cursor` on (`None`: the first page).
    fn href(&self, kind: &Kind, cursor: Option<&str>) -> String {
        let mut pairs = Vec::new();
        for (name, value) in [
            ("q", &self.q),
            ("site", &self.site),
            ("device", &self.device),
            ("status", &self.status),
            ("sort", &self.sort),
            ("order", &self.order),
            ("limit", &self.limit),
        ] {
            if let Some(value) = given(value) {
                pairs.push(format!("{name}={}", query_encode(&value)));
            }
        }
        if let Some(cursor) = cursor {
            pairs.push(format!("cursor={}", query_encode(cursor)));
        }
        let path = format!("/app/explore/{}", kind.path);
        if pairs.is_empty() {
            path
        } else {
            format!("{path}?{}", pairs.join("&"))
        }
    }
}

/// One `<option>` with its label.
#[derive(Debug)]
struct Choice {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

#[derive(Debug)]
struct Tab {
    href: String,
    label: &'static str,
    current: bool,
}

#[derive(Debug)]
struct ListRow {
    id: String,
    href: String,
    cells: Vec<Cell>,
    extras: usize,
}

#[derive(Template)]
#[template(path = "app/explore.html")]
struct ListPage {
    chrome: Chrome,
    shell: Shell,
    tabs: Vec<Tab>,
    heading: &'static str,
    noun: &'static str,
    base: String,
    /// A wrong parameter, named: the page is a 400 and lists nothing.
    problem: Option<String>,
    search: String,
    site_filter: Option<String>,
    device_filter: Option<String>,
    status_filter: Option<String>,
    limit: String,
    sorts: Vec<Choice>,
    descending: bool,
    headers: Vec<&'static str>,
    rows: Vec<ListRow>,
    /// Nothing narrows the list and it is empty: the workspace has none yet.
    none_yet: bool,
    can_pair: bool,
    next_href: Option<String>,
    first_href: Option<String>,
}

/// A kind's list: searched, filtered, sorted, one page after `cursor`.
async fn list_page(
    State(state): State<AppState>,
    member: Member,
    Path(kind): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, PageError> {
    let kind = kind_at(&kind)?;
    let mut tx = member.tx(&state, Permission::ViewDashboards).await?;
    let page = match params.query(kind) {
        Ok(query) => match store::analytics::entities(&mut tx, kind.kind, &query).await {
            Ok(page) => Ok(page),
            Err(StoreError::InvalidParameter { parameter, message }) => {
                Err(InvalidParameter { parameter, message })
            }
            Err(error) => return Err(error.into()),
        },
        Err(invalid) => Err(invalid),
    };
    tx.commit().await?;
    let (status, problem, items, next_cursor) = match page {
        Ok(page) => (StatusCode::OK, None, page.items, page.next_cursor),
        Err(invalid) => (
            StatusCode::BAD_REQUEST,
            Some(format!(
                "The {} parameter is not valid: {}.",
                invalid.parameter, invalid.message
            )),
            Vec::new(),
            None,
        ),
    };
    let chosen_sort = given(&params.sort).unwrap_or_else(|| "id".to_owned());
    let filter =
        |shown: bool, value: &Option<String>| shown.then(|| given(value).unwrap_or_default());
    Ok(render(
        status,
        &ListPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(&member, HOME),
            tabs: KINDS
                .iter()
                .map(|tab| Tab {
                    href: format!("/app/explore/{}", tab.path),
                    label: tab.plural,
                    current: tab.path == kind.path,
                })
                .collect(),
            heading: kind.plural,
            noun: kind.noun,
            base: format!("/app/explore/{}", kind.path),
            none_yet: problem.is_none() && items.is_empty() && !params.narrows(),
            problem,
            search: given(&params.q).unwrap_or_default(),
            site_filter: filter(kind.filters.0, &params.site),
            device_filter: filter(kind.filters.1, &params.device),
            status_filter: filter(kind.filters.2, &params.status),
            limit: given(&params.limit).unwrap_or_default(),
            sorts: kind
                .sorts
                .iter()
                .map(|(value, label, _)| Choice {
                    value,
                    label,
                    selected: *value == chosen_sort,
                })
                .collect(),
            descending: params.order.as_deref() == Some("desc"),
            headers: kind
                .list_columns
                .iter()
                .map(|(_, label, _)| *label)
                .collect(),
            rows: items
                .iter()
                .map(|entity| ListRow {
                    id: entity.id.clone(),
                    href: entity_href(kind.path, &entity.id),
                    cells: kind
                        .list_columns
                        .iter()
                        .map(|column| cell(entity, column))
                        .collect(),
                    extras: entity.extras.len(),
                })
                .collect(),
            can_pair: member.role().allows(Permission::ViewSources),
            next_href: next_cursor.map(|cursor| params.href(kind, Some(&cursor))),
            first_href: given(&params.cursor).map(|_| params.href(kind, None)),
        },
    ))
}

#[derive(Debug)]
struct Fact {
    label: &'static str,
    value: Cell,
}

#[derive(Debug)]
struct ExtraRow {
    key: String,
    value: String,
    value_type: &'static str,
}

#[derive(Debug)]
struct RelatedLink {
    href: String,
    label: String,
}

/// A metric key's latest hour with readings in the last day.
#[derive(Debug)]
struct MetricRow {
    key: String,
    hour: String,
    avg: String,
    min: String,
    max: String,
    count: i64,
}

#[derive(Template)]
#[template(path = "app/explore_entity.html")]
struct EntityPage {
    chrome: Chrome,
    shell: Shell,
    noun: &'static str,
    list_href: String,
    list_label: &'static str,
    id: String,
    updated: String,
    facts: Vec<Fact>,
    extras: Vec<ExtraRow>,
    related: Vec<RelatedLink>,
    /// `None` for sessions, whose metrics are their device's.
    metrics: Option<Vec<MetricRow>>,
    /// The entity's metrics over the last 24 hours, one chart per key.
    panels: Vec<crate::app::dashboards::PanelView>,
    /// The source row's latest changes, for roles that read bronze.
    history: Option<Vec<ChangeRow>>,
    history_days: i32,
}

/// A change of the entity's source row, as listed.
#[derive(Debug)]
struct ChangeRow {
    at: String,
    op: String,
    table: String,
    /// `field = value` of the changed fields (an update with its old image), else of the
    /// whole image; values as sent (masked where the edge masked them), cut to 80 characters.
    fields: Vec<(String, String, bool)>,
}

/// Changes an entity page lists.
const HISTORY_ROWS: i64 = 20;
/// Fields a change lists at most.
const HISTORY_FIELDS: usize = 12;

impl ChangeRow {
    fn of(change: store::analytics::Change) -> ChangeRow {
        let fields = change
            .image
            .iter()
            .map(|(field, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let mut shown: String = text.chars().take(80).collect();
                if shown.len() < text.len() {
                    shown.push('…');
                }
                (field.clone(), shown, change.changed.contains(field))
            })
            .take(HISTORY_FIELDS)
            .collect();
        ChangeRow {
            at: timestamp(change.event_time),
            op: change.op,
            table: change.table,
            fields,
        }
    }
}

/// One entity: unknown, deleted and another tenant's are all not found.
async fn entity_page(
    State(state): State<AppState>,
    member: Member,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let kind = kind_at(&kind)?;
    let mut tx = member.tx(&state, Permission::ViewDashboards).await?;
    let entity = store::analytics::entity(&mut tx, kind.kind, &id)
        .await?
        .ok_or(PageError::NotFound)?;
    let catalogue = store::analytics::catalogue(&mut tx).await?;
    let (metrics, panels) = match kind.kind {
        EntityKind::Session => (None, Vec::new()),
        EntityKind::Site | EntityKind::Device => {
            let metrics = latest_metrics(&mut tx, kind.kind, &entity.id, &catalogue).await?;
            let panels = metric_charts(&mut tx, kind.kind, &entity.id, &metrics).await?;
            (Some(metrics), panels)
        }
    };
    let history = if member.role().allows(Permission::ViewBronze) {
        let changes =
            store::analytics::entity_history(&mut tx, kind.kind, &entity.id, HISTORY_ROWS).await?;
        Some(changes.into_iter().map(ChangeRow::of).collect())
    } else {
        None
    };
    tx.commit().await?;
    let encoded = query_encode(&entity.id);
    let related = match kind.kind {
        EntityKind::Site => vec![
            RelatedLink {
                href: format!("/app/explore/devices?site={encoded}"),
                label: "Devices at this site".into(),
            },
            RelatedLink {
                href: format!("/app/explore/sessions?site={encoded}"),
                label: "Sessions at this site".into(),
            },
        ],
        EntityKind::Device => vec![RelatedLink {
            href: format!("/app/explore/sessions?device={encoded}"),
            label: "Sessions of this device".into(),
        }],
        EntityKind::Session => Vec::new(),
    };
    let time_keys: Vec<&str> = catalogue
        .extras
        .iter()
        .filter(|field| field.entity_kind == kind.kind && field.value_type == "time")
        .map(|field| field.key.as_str())
        .collect();
    Ok(render(
        StatusCode::OK,
        &EntityPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(&member, HOME),
            noun: match kind.kind {
                EntityKind::Site => "Site",
                EntityKind::Device => "Device",
                EntityKind::Session => "Session",
            },
            list_href: format!("/app/explore/{}", kind.path),
            list_label: kind.plural,
            updated: timestamp(entity.updated_at),
            facts: kind
                .detail_columns
                .iter()
                .map(|column| Fact {
                    label: column.1,
                    value: cell(&entity, column),
                })
                .collect(),
            extras: entity
                .extras
                .iter()
                .map(|(key, value)| extra_row(key, value, &time_keys))
                .collect(),
            related,
            metrics,
            panels,
            history,
            history_days: store::analytics::HISTORY_DAYS,
            id: entity.id,
        },
    ))
}

/// An extra as shown. The entity's extras carry times as RFC 3339 text, so a text value is a
/// time when the catalogue has the key as a time of this kind and the text reads as one.
fn extra_row(key: &str, value: &Value, time_keys: &[&str]) -> ExtraRow {
    let (value, value_type) = match value {
        Value::String(text) => match OffsetDateTime::parse(text, &Rfc3339) {
            Ok(at) if time_keys.contains(&key) => (timestamp(at), "time"),
            _ => (text.clone(), "text"),
        },
        Value::Number(number) => (number.to_string(), "number"),
        Value::Bool(flag) => (flag.to_string(), "boolean"),
        // A number the database holds that JSON cannot (not a number, an infinity).
        _ => (String::new(), "number"),
    };
    ExtraRow {
        key: key.to_owned(),
        value,
        value_type,
    }
}

/// The latest hour of each metric key with readings of the entity (a site's: its own, its
/// devices' and its sessions'; a device's: its own and its sessions') in the last 24 hours,
/// one hourly series per key and aggregation. Keys not seen in that day are not queried.
async fn latest_metrics(
    tx: &mut TenantTx,
    kind: EntityKind,
    id: &str,
    catalogue: &Catalogue,
) -> Result<Vec<MetricRow>, PageError> {
    let to = OffsetDateTime::now_utc();
    let from = to - time::Duration::hours(24);
    let mut rows = Vec::new();
    for metric in catalogue.metrics.iter().filter(|key| key.last_seen >= from) {
        let mut latest = Vec::new();
        for aggregation in [Aggregation::Avg, Aggregation::Min, Aggregation::Max] {
            let query = SeriesQuery {
                key: metric.key.clone(),
                from,
                to,
                step: Step::Hour,
                aggregation,
                site: (kind == EntityKind::Site).then(|| id.to_owned()),
                device: (kind == EntityKind::Device).then(|| id.to_owned()),
                group_by: None,
                limit: 1,
            };
            let series = store::analytics::series(tx, &query).await?;
            let Some(point) = series
                .into_iter()
                .next()
                .and_then(|line| line.points.last().cloned())
            else {
                break;
            };
            latest.push(point);
        }
        if let [avg, min, max] = latest.as_slice() {
            rows.push(MetricRow {
                key: metric.key.clone(),
                hour: timestamp(avg.at),
                avg: number(avg.value),
                min: number(min.value),
                max: number(max.value),
                count: avg.count,
            });
        }
    }
    Ok(rows)
}

/// Keys charted on an entity's page at most, the busiest first as the table lists them.
const CHARTED_KEYS: usize = 8;

/// A chart per metric key of `metrics` (those with readings of the entity in the last 24
/// hours): its average per 5 minutes over those 24 hours, drawn as the dashboards draw.
async fn metric_charts(
    tx: &mut TenantTx,
    kind: EntityKind,
    id: &str,
    metrics: &[MetricRow],
) -> Result<Vec<crate::app::dashboards::PanelView>, PageError> {
    let to = OffsetDateTime::now_utc();
    let window = (to - time::Duration::hours(24), to);
    let mut panels = Vec::new();
    for metric in metrics.iter().take(CHARTED_KEYS) {
        let panel = store::dashboards::Panel {
            site: (kind == EntityKind::Site).then(|| id.to_owned()),
            device: (kind == EntityKind::Device).then(|| id.to_owned()),
            unit: store::dashboards::unit_of(&metric.key).to_owned(),
            ..store::dashboards::Panel::of_key(&metric.key, Aggregation::Avg, Step::FiveMinutes)
        };
        let view = crate::app::dashboards::panel_view(tx, &panel, window).await?;
        panels.push(view.without_explore());
    }
    Ok(panels)
}

/// A reading as shown: at most three decimals, without trailing zeros.
fn number(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_show_at_most_three_decimals() {
        assert_eq!(number(42.0), "42");
        assert_eq!(number(21.333_333), "21.333");
        assert_eq!(number(-0.0001), "0");
        assert_eq!(number(1.5), "1.5");
    }

    #[test]
    fn a_wrong_parameter_is_named() {
        let params = |name: &str, value: &str| {
            let mut params = ListParams::default();
            let text = Some(value.to_owned());
            match name {
                "sort" => params.sort = text,
                "order" => params.order = text,
                _ => params.limit = text,
            }
            params
        };
        for (name, value) in [
            ("sort", "size"),
            ("order", "up"),
            ("limit", "0"),
            ("limit", "501"),
        ] {
            let error = params(name, value).query(&KINDS[1]).expect_err(value);
            assert_eq!(error.parameter, name);
        }
        assert!(params("limit", "500").query(&KINDS[1]).is_ok());
        let error = params("sort", "name")
            .query(&KINDS[2])
            .expect_err("sessions");
        assert_eq!(error.message, "sort must be one of id, recent, updated_at");
    }

    #[test]
    fn the_next_page_keeps_the_filters_and_encodes_them() {
        let params = ListParams {
            q: Some("a&b".into()),
            status: Some("online".into()),
            cursor: Some("old".into()),
            ..ListParams::default()
        };
        assert_eq!(
            params.href(&KINDS[1], Some("c+d")),
            "/app/explore/devices?q=a%26b&status=online&cursor=c%2Bd"
        );
        assert_eq!(
            params.href(&KINDS[1], None),
            "/app/explore/devices?q=a%26b&status=online"
        );
    }
}

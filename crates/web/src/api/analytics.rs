//! `/api/v1/analytics/*`: the tenant's read models as the dashboards and explorer read them,
//! through the store's one read layer ([`store::analytics`]). Every role may read them
//! (`view_dashboards`); the database's row-level security keeps each tenant to its own rows, so
//! another tenant's id is simply not found.
//!
//! Query parameters are read as text and checked here, so that a wrong one is answered with
//! `400 invalid_parameter` and `details.parameter` naming it.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use domain::Permission;
use serde::Deserialize;
use serde_json::{Value, json};
use store::StoreError;
use store::analytics::{
    Aggregation, EntityKind, EntityQuery, EntitySort, GroupBy, InvalidParameter, SeriesQuery, Step,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::caller::Caller;
use super::error::ApiError;
use super::extract::{Path, Query};
use super::format::rfc3339;
use super::registry::Routes;
use crate::AppState;

pub(super) fn register(routes: Routes) -> Routes {
    routes
        .at(Method::GET, "/api/v1/analytics/series", series)
        .at(Method::GET, "/api/v1/analytics/keys", keys)
        .at(Method::GET, "/api/v1/analytics/sites", sites)
        .at(Method::GET, "/api/v1/analytics/sites/{id}", site)
        .at(Method::GET, "/api/v1/analytics/devices", devices)
        .at(Method::GET, "/api/v1/analytics/devices/{id}", device)
        .at(Method::GET, "/api/v1/analytics/sessions", sessions)
        .at(Method::GET, "/api/v1/analytics/sessions/{id}", session)
}

/// `400 invalid_parameter` naming the parameter.
fn invalid(parameter: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", message)
        .with_details(json!({ "parameter": parameter }))
}

impl From<InvalidParameter> for ApiError {
    fn from(error: InvalidParameter) -> Self {
        invalid(error.parameter, error.message)
    }
}

fn time_parameter(name: &str, text: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    text.map(|text| {
        OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|_| invalid(name, format!("{name} must be an RFC 3339 time")))
    })
    .transpose()
}

fn number_parameter(
    name: &str,
    text: Option<&str>,
    range: (u32, u32),
) -> Result<Option<u32>, ApiError> {
    text.map(|text| {
        text.parse::<u32>()
            .ok()
            .filter(|number| (range.0..=range.1).contains(number))
            .ok_or_else(|| {
                invalid(
                    name,
                    format!(
                        "{name} must be a whole number from {} to {}",
                        range.0, range.1
                    ),
                )
            })
    })
    .transpose()
}

/// An optional text parameter: empty is the same as absent; longer than `max` characters (an
/// id is at most 500) is refused.
fn filter(name: &str, text: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match text {
        Some(text) if text.chars().count() > max => {
            Err(invalid(name, format!("{name} is at most {max} characters")))
        }
        text => Ok(text.filter(|text| !text.is_empty())),
    }
}

#[derive(Deserialize)]
struct SeriesParams {
    key: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
    agg: Option<String>,
    site: Option<String>,
    device: Option<String>,
    group_by: Option<String>,
    limit: Option<String>,
}

/// The query `params` ask for. `to` defaults to now and `from` to an hour before `to`; the step
/// to the finest that can cover the range; the aggregation to `avg`.
fn series_query(params: SeriesParams) -> Result<SeriesQuery, ApiError> {
    let key = filter("key", params.key, 200)?.ok_or_else(|| invalid("key", "key is required"))?;
    let to = time_parameter("to", params.to.as_deref())?.unwrap_or_else(OffsetDateTime::now_utc);
    let from =
        time_parameter("from", params.from.as_deref())?.unwrap_or(to - time::Duration::hours(1));
    let step = match params.step.as_deref() {
        None | Some("") => Step::for_range(to - from),
        Some(text) => Step::parse(text)
            .ok_or_else(|| invalid("step", "step must be one of 1m, 5m, 1h, 1d"))?,
    };
    let aggregation = match params.agg.as_deref() {
        None | Some("") => Aggregation::Avg,
        Some(text) => Aggregation::parse(text)
            .ok_or_else(|| invalid("agg", "agg must be one of avg, min, max, sum, count, last"))?,
    };
    let group_by = match params.group_by.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            GroupBy::parse(text)
                .ok_or_else(|| invalid("group_by", "group_by must be site or device"))?,
        ),
    };
    let limit = number_parameter("limit", params.limit.as_deref(), (1, 50))?.unwrap_or(10);
    let query = SeriesQuery {
        key,
        from,
        to,
        step,
        aggregation,
        site: filter("site", params.site, 500)?,
        device: filter("device", params.device, 500)?,
        group_by,
        limit,
    };
    query.validate()?;
    Ok(query)
}

async fn series(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<SeriesParams>,
) -> Result<Json<Value>, ApiError> {
    let query = series_query(params)?;
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let series = store::analytics::series(&mut tx, &query).await?;
    tx.commit().await?;
    Ok(Json(json!({
        "key": query.key,
        "from": rfc3339(query.from),
        "to": rfc3339(query.to),
        "step": query.step.as_str(),
        "agg": query.aggregation.as_str(),
        "series": series,
    })))
}

async fn keys(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let catalogue = store::analytics::catalogue(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(json!(catalogue)))
}

#[derive(Deserialize)]
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

/// The list query `params` ask for of `kind`; a filter the kind does not have is refused.
fn list_query(kind: EntityKind, params: ListParams) -> Result<EntityQuery, ApiError> {
    let site = filter("site", params.site, 500)?;
    let device = filter("device", params.device, 500)?;
    if site.is_some() && kind == EntityKind::Site {
        return Err(invalid("site", "sites are not filtered by site"));
    }
    if device.is_some() && kind != EntityKind::Session {
        return Err(invalid("device", "only sessions are filtered by device"));
    }
    let status = filter("status", params.status, 500)?;
    if status.is_some() && kind == EntityKind::Site {
        return Err(invalid("status", "sites have no status"));
    }
    let sort = match params.sort.as_deref() {
        None | Some("") => None,
        Some("id") => Some(EntitySort::Id),
        Some("name") if kind != EntityKind::Session => Some(EntitySort::Name),
        Some("recent") => Some(EntitySort::Recent),
        Some("updated_at") => Some(EntitySort::UpdatedAt),
        Some(_) => {
            return Err(invalid(
                "sort",
                match kind {
                    EntityKind::Session => "sort must be one of id, recent, updated_at",
                    _ => "sort must be one of id, name, recent, updated_at",
                },
            ));
        }
    };
    let descending = match params.order.as_deref() {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(invalid("order", "order must be asc or desc")),
    };
    Ok(EntityQuery {
        search: filter("q", params.q, 500)?,
        site,
        device,
        status,
        sort,
        descending,
        limit: number_parameter("limit", params.limit.as_deref(), (1, 500))?,
        cursor: filter("cursor", params.cursor, 2000)?,
    })
}

async fn list(
    state: AppState,
    caller: Caller,
    kind: EntityKind,
    params: ListParams,
) -> Result<Json<Value>, ApiError> {
    let query = list_query(kind, params)?;
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let page = store::analytics::entities(&mut tx, kind, &query).await?;
    tx.commit().await?;
    Ok(Json(json!(page)))
}

async fn one(
    state: AppState,
    caller: Caller,
    kind: EntityKind,
    id: &str,
) -> Result<Json<Value>, ApiError> {
    let mut tx = caller.tx(&state, Permission::ViewDashboards).await?;
    let entity = store::analytics::entity(&mut tx, kind, id).await?;
    tx.commit().await?;
    let what = match kind {
        EntityKind::Site => "site",
        EntityKind::Device => "device",
        EntityKind::Session => "session",
    };
    entity
        .map(|entity| Json(json!(entity)))
        .ok_or_else(|| StoreError::NotFound(what).into())
}

async fn sites(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    list(state, caller, EntityKind::Site, params).await
}

async fn devices(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    list(state, caller, EntityKind::Device, params).await
}

async fn sessions(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    list(state, caller, EntityKind::Session, params).await
}

async fn site(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    one(state, caller, EntityKind::Site, &id).await
}

async fn device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    one(state, caller, EntityKind::Device, &id).await
}

async fn session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    one(state, caller, EntityKind::Session, &id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> SeriesParams {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        SeriesParams {
            key: get("key"),
            from: get("from"),
            to: get("to"),
            step: get("step"),
            agg: get("agg"),
            site: get("site"),
            device: get("device"),
            group_by: get("group_by"),
            limit: get("limit"),
        }
    }

    fn refused_parameter(pairs: &[(&str, &str)]) -> (String, String) {
        let error = series_query(params(pairs)).expect_err("refused");
        let body = error.body();
        (
            body["error"]["details"]["parameter"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let key = ("key", "temperature");
        let long = "x".repeat(501);
        for (pairs, parameter) in [
            (vec![], "key"),
            (vec![key, ("from", "yesterday")], "from"),
            (vec![key, ("to", "2026-13-01T00:00:00Z")], "to"),
            (vec![key, ("step", "2m")], "step"),
            (vec![key, ("agg", "median")], "agg"),
            (vec![key, ("group_by", "tenant")], "group_by"),
            (vec![key, ("group_by", "site"), ("limit", "51")], "limit"),
            (vec![key, ("limit", "-1")], "limit"),
            (vec![key, ("site", long.as_str())], "site"),
            (vec![("key", long.as_str())], "key"),
        ] {
            assert_eq!(refused_parameter(&pairs).0, parameter, "{pairs:?}");
        }
    }

    #[test]
    fn a_range_too_large_for_its_step_names_the_largest_allowed() {
        let (parameter, message) = refused_parameter(&[
            ("key", "temperature"),
            ("from", "2026-11-01T00:00:00Z"),
            ("to", "2026-11-03T00:00:00Z"),
            ("step", "1m"),
        ]);
        assert_eq!(parameter, "to");
        assert!(message.contains("1 day"), "{message}");
    }

    #[test]
    fn defaults_are_the_last_hour_at_one_minute_averaged() {
        let query = series_query(params(&[("key", "temperature")])).unwrap();
        assert_eq!(query.to - query.from, time::Duration::hours(1));
        assert_eq!(
            (query.step, query.aggregation, query.group_by, query.limit),
            (Step::Minute, Aggregation::Avg, None, 10)
        );
        let week = series_query(params(&[
            ("key", "temperature"),
            ("from", "2026-11-01T00:00:00Z"),
            ("to", "2026-11-08T00:00:00Z"),
        ]))
        .unwrap();
        assert_eq!(week.step, Step::FiveMinutes);
    }

    #[test]
    fn a_filter_the_kind_does_not_have_is_refused() {
        let list = |site: Option<&str>, device: Option<&str>| ListParams {
            q: None,
            site: site.map(str::to_owned),
            device: device.map(str::to_owned),
            status: None,
            sort: None,
            order: None,
            limit: None,
            cursor: None,
        };
        assert!(list_query(EntityKind::Site, list(Some("s1"), None)).is_err());
        assert!(list_query(EntityKind::Device, list(None, Some("d1"))).is_err());
        assert!(list_query(EntityKind::Session, list(Some("s1"), Some("d1"))).is_ok());
    }
}

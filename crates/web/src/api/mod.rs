//! The JSON API, `/api/v1`: what the web app's screens (and tenants' scripts) call. Callers
//! authenticate with an API token (`Authorization: Bearer tat1...`) that names the tenant and a
//! tenant role; every route checks the domain's permission table, and the database enforces the
//! same through `TenantTx`.
//!
//! This module only assembles the router from its children, one per resource; what they share
//! lives in children of its own (error, caller, registry, extract, format), never here, so no
//! child imports its parent.

use axum::http::Method;
use axum::{Json, Router};

use self::registry::Routes;
use crate::AppState;

mod account;
mod alerts;
mod analytics;
mod caller;
mod conformance;
mod connectors;
mod dead_letters;
mod drift;
mod error;
mod extract;
mod format;
mod mappings;
mod masking;
mod members;
mod openapi;
mod ops;
mod registry;
pub(crate) mod reports;
mod sources;
mod sso;
mod workspace;

fn register() -> Routes {
    let routes = Routes::new().at(Method::GET, "/api/v1/openapi.json", openapi_document);
    let routes = analytics::register(dead_letters::register(sources::register(routes)));
    let routes = connectors::register(routes);
    let routes = masking::register(mappings::register(routes));
    let routes = workspace::register(members::register(account::register(routes)));
    let routes = reports::register(alerts::register(routes));
    sso::register(ops::register(drift::register(routes)))
}

pub fn routes() -> Router<AppState> {
    register()
        .into_router()
        .method_not_allowed_fallback(extract::method_not_allowed)
}

/// What [`routes`] serves, as (method, path).
#[cfg(test)]
fn routes_served() -> Vec<(Method, &'static str)> {
    register().served()
}

/// `/api/v1/openapi.json`: public, like any API's description.
async fn openapi_document() -> Json<serde_json::Value> {
    Json(openapi::document())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The OpenAPI document describes exactly what is served: every registered route is
    /// documented and every documented operation registered.
    #[test]
    fn every_served_route_is_documented_and_every_documented_one_served() {
        let served: BTreeSet<(String, String)> = routes_served()
            .into_iter()
            .map(|(method, path)| (method.as_str().to_ascii_lowercase(), path.to_owned()))
            .collect();
        let documented: BTreeSet<(String, String)> = openapi::OPERATIONS
            .iter()
            .map(|entry| (entry.method.to_owned(), entry.path.to_owned()))
            .collect();
        assert_eq!(
            served.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "served but not documented"
        );
        assert_eq!(
            documented.difference(&served).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented but not served"
        );
    }
}

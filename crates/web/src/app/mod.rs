//! The signed-in app under `/app`, one module per page family. Every route takes a `Member`
//! (or `Staff`, or an `AppUser` where both are served), checks the domain's permission table,
//! and reads through a `TenantTx`; a handler's (or an extractor's) `PageError` is drawn inside
//! the app's shell by the routes' [`render_app_failures`] layer. The chrome around the pages is
//! [`crate::shell`].

mod account;
mod alerts;
mod audit;
mod connectors;
pub(crate) mod dashboards;
mod dead_letters;
mod drift;
mod explore;
mod masking;
mod ops;
mod reports;
mod settings;
mod sources;
mod sso;
mod tokens;

use axum::Router;

use crate::AppState;
use crate::shell::render_app_failures;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(crate::shell::routes())
        .merge(account::routes())
        .merge(dashboards::routes())
        .merge(sources::routes())
        .merge(connectors::routes())
        .merge(dead_letters::routes())
        .merge(explore::routes())
        .merge(drift::routes())
        .merge(alerts::routes())
        .merge(reports::routes())
        .merge(settings::routes())
        .merge(tokens::routes())
        .merge(sso::routes())
        .merge(masking::routes())
        .merge(audit::routes())
        .merge(ops::routes())
        .route_layer(axum::middleware::from_fn(render_app_failures))
}

//! [`Routes`], how every resource module registers its routes: each with its method, so that the
//! OpenAPI document ([`super::openapi::OPERATIONS`]) can be checked against exactly what is
//! served.

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodFilter, on};

use crate::AppState;

/// The API's routes, each registered with its method.
pub(crate) struct Routes {
    router: Router<AppState>,
    served: Vec<(Method, &'static str)>,
}

impl Routes {
    pub(super) fn new() -> Self {
        Self {
            router: Router::new(),
            served: Vec::new(),
        }
    }

    pub(super) fn at<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("the API uses plain methods");
        self.router = self.router.route(path, on(filter, handler));
        self.served.push((method, path));
        self
    }

    pub(super) fn into_router(self) -> Router<AppState> {
        self.router
    }

    /// What is registered, as (method, path).
    #[cfg(test)]
    pub(super) fn served(self) -> Vec<(Method, &'static str)> {
        self.served
    }
}

//! What every HTML page shares: the chrome (anti-forgery token, signed-in user, current section),
//! rendering, and the error pages (400, 403, 404, 429, 500, 503) in the same design.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

/// The parts of the layout every page fills.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    /// The anti-forgery token every form carries (see `csrf`).
    pub csrf: String,
    /// Which top-level section is current, for `aria-current`.
    pub section: &'static str,
    pub user: Option<ChromeUser>,
}

/// One `<option>` of a `<select>`.
#[derive(Debug, Clone)]
pub struct SelectOption {
    pub value: &'static str,
    pub selected: bool,
}

/// The options of a select over `values`, with `chosen` selected.
pub fn select_options(values: &[&'static str], chosen: &str) -> Vec<SelectOption> {
    values
        .iter()
        .map(|value| SelectOption {
            value,
            selected: *value == chosen,
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct ChromeUser {
    pub display_name: String,
}

/// How long a throttled client should wait, in seconds: one throttling window.
pub const RETRY_AFTER_SECONDS: &str = "900";

/// Renders `template` with `status`; a template that fails to render becomes a plain 500. A 429
/// says when to come back (`Retry-After`).
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) if status == StatusCode::TOO_MANY_REQUESTS => (
            status,
            [(header::RETRY_AFTER, RETRY_AFTER_SECONDS)],
            Html(html),
        )
            .into_response(),
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "The page could not be shown. Try again later.",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: &'a Chrome,
    status: u16,
    heading: &'a str,
    message: &'a str,
    action_href: &'a str,
    action_label: &'a str,
}

/// An HTML route's failure: a status and a safe message in the site's design. Never SQL,
/// internals or another tenant's existence.
#[derive(Debug)]
pub enum PageError {
    BadRequest(String),
    /// Not signed in: go to the sign-in page and come back to `next`.
    SignIn {
        next: String,
    },
    Forbidden,
    NotFound,
    /// A form without a valid anti-forgery token, or from another site.
    Forgery,
    Unavailable,
}

impl PageError {
    pub fn into_page(self, chrome: &Chrome) -> Response {
        let (status, heading, message, href, label) = match &self {
            PageError::SignIn { next } => {
                return Redirect::to(&format!("/auth?next={}", encode_next(next))).into_response();
            }
            PageError::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                "That request could not be handled",
                message.as_str(),
                "/",
                "Go to the home page",
            ),
            PageError::Forbidden => (
                StatusCode::FORBIDDEN,
                "You do not have access to this page",
                "Your role in this workspace does not include it. Ask an owner or admin of the \
                 workspace if you need it.",
                "/app",
                "Back to the app",
            ),
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is no page at this address. It may have moved, or the link may be wrong.",
                "/",
                "Go to the home page",
            ),
            PageError::Forgery => (
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form was missing its security token or came from another site. Reload the \
                 page and try again.",
                "/",
                "Go to the home page",
            ),
            PageError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Something went wrong on our side",
                "The platform could not complete this request. Try again in a moment.",
                "/",
                "Go to the home page",
            ),
        };
        render(
            status,
            &ErrorPage {
                chrome,
                status: status.as_u16(),
                heading,
                message,
                action_href: href,
                action_label: label,
            },
        )
    }
}

impl From<store::StoreError> for PageError {
    fn from(error: store::StoreError) -> Self {
        if let store::StoreError::NotFound(_) = error {
            return PageError::NotFound;
        }
        if error.is_access_denied() {
            // The database refused what the permission check let through: fail closed.
            tracing::warn!(%error, "database refused a page's query");
            return PageError::Forbidden;
        }
        tracing::error!(%error, "page request failed");
        PageError::Unavailable
    }
}

/// `next` for the sign-in redirect: only a path inside the app, percent-encoded.
pub fn encode_next(next: &str) -> String {
    let next = safe_next(next);
    let mut encoded = String::new();
    for byte in next.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Where to go after signing in: `next` if it is a path under `/app` (or an invitation link),
/// else `/app`. Anything
/// else (another host, `//evil`, a backslash) would make the sign-in page an open redirect.
pub fn safe_next(next: &str) -> &str {
    let acceptable =
        (next == "/app" || next.starts_with("/app/") || next.starts_with("/auth/invitation/"))
            && next
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.~?=&%".contains(&b));
    if acceptable { next } else { "/app" }
}

//! What every HTML page shares: the chrome (anti-forgery token, signed-in user, current section),
//! rendering, and the error pages (400, 403, 404, 429, 500, 503) in the same design, drawn for
//! a handler that returns a [`PageError`] by the [`render_failures`] layer (the app's pages have
//! their own layer, `shell::render_app_failures`, which draws the same [`ErrorView`] inside the
//! app's shell).

use std::any::Any;
use std::sync::{Arc, OnceLock};

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
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
///
/// A handler returns it (`Result<Response, PageError>`), and the [`render_failures`] layer of
/// its router draws the page with the visitor's chrome; [`PageError::into_page`] draws it
/// directly where the chrome is at hand.
#[derive(Debug, Clone)]
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
    /// The inviter or the workspace sent as many invitations as it may this hour
    /// (`crate::rules::send_invitation`); try again after `retry_after` seconds.
    TooManyInvitations {
        retry_after: &'static str,
    },
}

/// What an error page says: its status, heading and message, and the way back.
#[derive(Debug, Clone)]
pub struct ErrorView {
    pub status: StatusCode,
    pub heading: &'static str,
    pub message: String,
    pub action_href: &'static str,
    pub action_label: &'static str,
    /// When to try again (a 429's `Retry-After`).
    pub retry_after: Option<&'static str>,
}

impl ErrorView {
    /// The view's `Retry-After`, if any, on `response`.
    pub fn finish(&self, mut response: Response) -> Response {
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        response
    }
}

impl PageError {
    /// What the error page says; `None` for [`PageError::SignIn`], which is a redirect.
    pub fn view(&self) -> Option<ErrorView> {
        let (status, heading, message, action_href, action_label) = match self {
            PageError::SignIn { .. } => return None,
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
                "/app/overview",
                "Back to the overview",
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
            PageError::TooManyInvitations { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many invitations",
                "You, or this workspace, sent as many invitations as allowed this hour (20 per \
                 person, 50 per workspace). Nothing was sent. Try again in an hour.",
                "/app/settings#members-heading",
                "Back to settings",
            ),
        };
        Some(ErrorView {
            status,
            heading,
            message: message.to_owned(),
            action_href,
            action_label,
            retry_after: match self {
                PageError::TooManyInvitations { retry_after } => Some(*retry_after),
                _ => None,
            },
        })
    }

    pub fn into_page(self, chrome: &Chrome) -> Response {
        let Some(view) = self.view() else {
            let PageError::SignIn { next } = self else {
                unreachable!("only a sign-in has no page");
            };
            return Redirect::to(&format!("/auth?next={}", encode_next(&next))).into_response();
        };
        view.finish(render(
            view.status,
            &ErrorPage {
                chrome,
                status: view.status.as_u16(),
                heading: view.heading,
                message: &view.message,
                action_href: view.action_href,
                action_label: view.action_label,
            },
        ))
    }
}

/// The chrome of a request's visitor, kept for [`render_failures`]: the layer puts an empty slot
/// in the request, and the visitor's extractor (`auth::session::Visitor`) fills it. An app
/// page's extractor (`auth::session::AppUser`) also keeps the signed-in account, which the app's
/// own layer draws its shell from; this module does not know its type.
#[derive(Debug, Clone, Default)]
pub struct ChromeSlot(Arc<SlotContents>);

#[derive(Debug, Default)]
struct SlotContents {
    chrome: OnceLock<Chrome>,
    account: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl ChromeSlot {
    /// Keeps `chrome` (the first one given: a request has one visitor).
    pub fn fill(&self, chrome: Chrome) {
        // A second extraction of the same visitor gives the same chrome.
        let _ = self.0.chrome.set(chrome);
    }

    /// Keeps the request's signed-in account (the first one given).
    pub fn fill_account(&self, account: Arc<dyn Any + Send + Sync>) {
        let _ = self.0.account.set(account);
    }

    /// The visitor's chrome, or an anonymous one if no extractor ran.
    pub fn chrome(&self) -> Chrome {
        self.0.chrome.get().cloned().unwrap_or_default()
    }

    /// The signed-in account an app page's extractor kept, if one ran.
    pub fn account(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.0.account.get().cloned()
    }
}

/// A handler's failure inside its response, waiting for [`render_failures`] to draw it.
#[derive(Debug, Clone)]
struct Unrendered(PageError);

impl IntoResponse for PageError {
    /// The failure page with an anonymous chrome, carrying the failure itself so that the
    /// router's [`render_failures`] layer draws it again with the visitor's chrome.
    fn into_response(self) -> Response {
        let mut response = self.clone().into_page(&Chrome::default());
        response.extensions_mut().insert(Unrendered(self));
        response
    }
}

/// The layer of a router whose handlers return [`PageError`]s: draws a failure with the chrome
/// of the request's visitor in `section`, as the handler would have drawn it with
/// `visitor.chrome(section)`. Used as
/// `route_layer(axum::middleware::from_fn_with_state("app", render_failures))`.
pub async fn render_failures(
    State(section): State<&'static str>,
    mut request: Request,
    next: Next,
) -> Response {
    let slot = ChromeSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    match take_failure(&mut response) {
        Some(error) => error.into_page(&Chrome {
            section,
            ..slot.chrome()
        }),
        None => response,
    }
}

/// The [`PageError`] a handler (or an extractor) returned inside `response`, for a layer to draw.
pub fn take_failure(response: &mut Response) -> Option<PageError> {
    response
        .extensions_mut()
        .remove::<Unrendered>()
        .map(|Unrendered(error)| error)
}

/// A refusal a member can correct on the page that refused it (a parameter named with what is
/// wrong with it, a name taken): the status and the words to show; any other error is the error
/// page's.
pub(crate) fn correctable(error: store::StoreError) -> Result<(StatusCode, String), PageError> {
    match error {
        store::StoreError::InvalidParameter { parameter, message } => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{parameter}: {message}"),
        )),
        store::StoreError::AlreadyExists(what) => Ok((
            StatusCode::CONFLICT,
            format!("a {what} of that name exists"),
        )),
        error => Err(error.into()),
    }
}

impl From<store::StoreError> for PageError {
    fn from(error: store::StoreError) -> Self {
        match error {
            store::StoreError::NotFound(_) => return PageError::NotFound,
            // The store refused what the role may not do (a dataset it may not read).
            store::StoreError::Forbidden(_) => return PageError::Forbidden,
            _ => {}
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

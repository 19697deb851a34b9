//! Resetting a forgotten password: asking for a link (answered the same, as fast, whether or
//! not the account exists), and choosing a new password with it, which ends every session.

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use domain::Email;
use store::StoreError;

use super::page::AuthForm;
use super::password;
use super::session::Visitor;
use super::throttle::{self, THROTTLED, address, over_limit};
use crate::AppState;
use crate::cookies;
use crate::pages::{Chrome, PageError, render};

/// How long a password reset link works.
const RESET_LIFETIME: time::Duration = time::Duration::minutes(30);
/// Reset requests per client address, and per account, per throttling window.
const RESET_ADDRESS_LIMIT: i32 = 10;
const RESET_ACCOUNT_LIMIT: i32 = 3;
const RESET_SENT: &str = "If an account exists for that address, we have sent it a link. The link works once, within 30 minutes.";
const RESET_INVALID: &str = "This link has expired or was already used. Ask for a new one.";

#[derive(Template)]
#[template(path = "auth/reset.html")]
struct ResetPage {
    chrome: Chrome,
    error: Option<&'static str>,
    notice: Option<&'static str>,
    /// The token of a valid link: show the new-password form.
    token: Option<String>,
    /// Show the form asking for the email address.
    show_request: bool,
    min_password: usize,
    max_password: usize,
}

impl ResetPage {
    fn new(visitor: &Visitor) -> Self {
        Self {
            chrome: visitor.chrome("auth"),
            error: None,
            notice: None,
            token: None,
            show_request: false,
            min_password: password::MIN_CHARS,
            max_password: password::MAX_CHARS,
        }
    }
}

pub(super) async fn reset_request_page(visitor: Visitor) -> Response {
    let page = ResetPage {
        show_request: true,
        ..ResetPage::new(&visitor)
    };
    render(StatusCode::OK, &page)
}

/// Answers the same, as fast, whether or not the account exists: the answer depends only on the
/// throttles, and the account is looked up, its link issued and sent (by mail, or to the server
/// log for local use) in the background, after the answer. Looking the account up first would
/// make an existing account's answer slower by the issuing, and so tell who has an account.
pub(super) async fn request_reset(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<AuthForm>,
) -> Result<Response, PageError> {
    let email = Email::parse(&form.email).ok();
    let account = email.as_ref().map_or("", |email| email.as_str()).to_owned();
    let by_address = over_limit(
        &state,
        &throttle::address_bucket("reset", &address(&visitor)),
        RESET_ADDRESS_LIMIT,
    )
    .await?;
    let by_account = over_limit(
        &state,
        &format!("reset account {account}"),
        RESET_ACCOUNT_LIMIT,
    )
    .await?;
    if by_address || by_account {
        let page = ResetPage {
            error: Some(THROTTLED),
            show_request: true,
            ..ResetPage::new(&visitor)
        };
        return Ok(render(StatusCode::TOO_MANY_REQUESTS, &page));
    }
    if let Some(email) = email {
        let state = state.clone();
        tokio::spawn(async move {
            // Issuing a link (a write and its commit) is work only an existing account costs:
            // started at once, it shares the machine with this very answer and the next
            // request's, and their timing would tell who has an account. After a random
            // delay it lands on whichever requests come then, existing or not alike.
            tokio::time::sleep(issue_delay()).await;
            if let Err(error) = send_reset_link(&state, &email).await {
                tracing::error!(%error, "a password reset link could not be issued");
            }
        });
    }
    let page = ResetPage {
        notice: Some(RESET_SENT),
        ..ResetPage::new(&visitor)
    };
    Ok(render(StatusCode::OK, &page))
}

/// A random delay of 100 to 600 ms before a reset link is issued.
fn issue_delay() -> std::time::Duration {
    let mut bytes = [0u8; 2];
    // Without the system's randomness, the longest delay.
    let random = getrandom::fill(&mut bytes).map_or(u16::MAX, |()| u16::from_le_bytes(bytes));
    std::time::Duration::from_millis(100 + u64::from(random) * 500 / u64::from(u16::MAX))
}

/// Issues and sends a reset link to `email`'s account, if there is one and it is not disabled.
async fn send_reset_link(state: &AppState, email: &Email) -> Result<(), StoreError> {
    let Some(credentials) = store::accounts::credentials(&state.database, email)
        .await?
        .filter(|credentials| !credentials.disabled)
    else {
        return Ok(());
    };
    let token = cookies::random_value();
    store::accounts::issue_password_reset(
        &state.database,
        credentials.user_id,
        &token,
        RESET_LIFETIME,
    )
    .await?;
    crate::mail::deliver_password_reset(
        state,
        credentials.user_id,
        email,
        &token,
        RESET_LIFETIME.whole_minutes(),
    );
    Ok(())
}

pub(super) async fn reset_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let valid = store::accounts::password_reset_user(&state.database, &token)
        .await?
        .is_some();
    let page = if valid {
        ResetPage {
            token: Some(token),
            ..ResetPage::new(&visitor)
        }
    } else {
        ResetPage {
            error: Some(RESET_INVALID),
            show_request: true,
            ..ResetPage::new(&visitor)
        }
    };
    Ok(render(
        if valid {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        },
        &page,
    ))
}

pub(super) async fn reset_password(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
    Form(form): Form<AuthForm>,
) -> Result<Response, PageError> {
    if let Err(message) = password::check_new(&form.password) {
        let mut page = ResetPage {
            token: Some(token),
            ..ResetPage::new(&visitor)
        };
        // The message is one of two fixed texts, chosen by length.
        page.error = Some(if message.contains("at least") {
            "Choose a password of at least 12 characters."
        } else {
            "Choose a password of at most 128 characters."
        });
        return Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let given = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || password::hash(&given))
        .await
        .map_err(|_| StoreError::Config("password hashing task failed"))?;
    match store::accounts::redeem_password_reset(&state.database, &token, &hash).await? {
        Some(user) => {
            tracing::info!(%user, "password reset; every session ended");
            let mut response = Redirect::to("/auth?reset=1").into_response();
            let headers = response.headers_mut();
            headers.append(header::SET_COOKIE, cookies::clear(cookies::SESSION));
            headers.append(
                header::SET_COOKIE,
                cookies::set(cookies::CSRF, &cookies::random_value(), None),
            );
            Ok(response)
        }
        None => {
            let page = ResetPage {
                error: Some(RESET_INVALID),
                show_request: true,
                ..ResetPage::new(&visitor)
            };
            Ok(render(StatusCode::NOT_FOUND, &page))
        }
    }
}

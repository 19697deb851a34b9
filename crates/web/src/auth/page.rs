//! The `/auth` page: its one form, shared by sign-in and sign-up (and read by the reset and
//! invitation forms), and the page in either mode.

use askama::Template;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use domain::Plan;
use serde::Deserialize;

use super::password;
use super::session::Visitor;
use crate::pages::{Chrome, SelectOption, render, safe_next, select_options};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuthForm {
    pub(super) email: String,
    pub(super) password: String,
    pub(super) display_name: String,
    pub(super) workspace: String,
    pub(super) plan: String,
    pub(super) industry: String,
    pub(super) region: String,
    pub(super) next: String,
}

#[derive(Template)]
#[template(path = "auth/index.html")]
pub(super) struct AuthPage {
    chrome: Chrome,
    sign_up: bool,
    error: Option<String>,
    notice: Option<String>,
    form: AuthForm,
    next: String,
    plans: Vec<SelectOption>,
    min_password: usize,
    max_password: usize,
}

impl AuthPage {
    pub(super) fn new(visitor: &Visitor, sign_up: bool, form: AuthForm) -> Self {
        let next = safe_next(&form.next).to_owned();
        let plan_names = Plan::ALL.map(Plan::as_str);
        AuthPage {
            plans: select_options(&plan_names, &form.plan),
            chrome: visitor.chrome("auth"),
            sign_up,
            error: None,
            notice: None,
            form,
            next,
            min_password: password::MIN_CHARS,
            max_password: password::MAX_CHARS,
        }
    }

    pub(super) fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        // Never send a password back into a page.
        self.form.password.clear();
        self
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AuthQuery {
    mode: String,
    next: String,
    signed_out: Option<String>,
    reset: Option<String>,
}

/// `/auth`: sign in, or sign up with `?mode=sign-up`.
pub(super) async fn auth_page(visitor: Visitor, Query(query): Query<AuthQuery>) -> Response {
    let sign_up = query.mode == "sign-up";
    let form = AuthForm {
        next: query.next,
        plan: "team".into(),
        ..AuthForm::default()
    };
    let mut page = AuthPage::new(&visitor, sign_up, form);
    if query.signed_out.is_some() {
        page.notice = Some("You are signed out.".into());
    }
    if query.reset.is_some() {
        page.notice = Some("Your password was changed. Sign in with the new one.".into());
    }
    render(StatusCode::OK, &page)
}

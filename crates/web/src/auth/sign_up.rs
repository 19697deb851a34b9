//! Signing up: a workspace and its owner, created only once the address is confirmed by a
//! mailed link. The form answers the same whether or not the address has an account.

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use domain::{Email, Plan, TenantAttributes};
use store::StoreError;

use super::page::{AuthForm, AuthPage};
use super::password;
use super::session::Visitor;
use super::sign_in::start_session;
use super::throttle::{self, THROTTLED, address, over_limit};
use crate::AppState;
use crate::cookies;
use crate::pages::{Chrome, PageError, render};

pub(super) async fn sign_up(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<AuthForm>,
) -> Result<Response, PageError> {
    Ok(try_sign_up(&state, &visitor, form).await?)
}

/// How long a sign-up link works.
const SIGN_UP_LIFETIME: time::Duration = time::Duration::hours(24);
const SIGN_UP_INVALID: &str = "This link has expired or was already used. Sign up again.";

/// Where the sign-up message went, and the workspace it is about.
struct SignUpSent {
    email: String,
    workspace: String,
}

#[derive(Template)]
#[template(path = "auth/sign_up.html")]
struct SignUpPage {
    chrome: Chrome,
    error: Option<&'static str>,
    /// After the form: where the message went and the workspace it is about. The same whether or
    /// not the address has an account.
    sent: Option<SignUpSent>,
    /// A valid link: what confirming it creates.
    pending: Option<store::accounts::PendingSignUp>,
    token: String,
    valid_hours: i64,
}

impl SignUpPage {
    fn new(visitor: &Visitor) -> Self {
        Self {
            chrome: visitor.chrome("auth"),
            error: None,
            sent: None,
            pending: None,
            token: String::new(),
            valid_hours: SIGN_UP_LIFETIME.whole_hours(),
        }
    }

    fn invalid(visitor: &Visitor) -> Response {
        let page = SignUpPage {
            error: Some(SIGN_UP_INVALID),
            ..SignUpPage::new(visitor)
        };
        render(StatusCode::NOT_FOUND, &page)
    }
}

/// Checks the form and answers "check your email" whenever it is valid, after hashing the
/// password. Only then, in the background, does it look at whether the address has an account
/// ([`record_sign_up`]). The answer is the same page after the same work either way, so it tells
/// nobody whether the account exists.
async fn try_sign_up(
    state: &AppState,
    visitor: &Visitor,
    form: AuthForm,
) -> Result<Response, StoreError> {
    let refuse = |form: AuthForm, status: StatusCode, message: String| {
        render(
            status,
            &AuthPage::new(visitor, true, form).with_error(message),
        )
    };
    if over_limit(
        state,
        &throttle::address_bucket("sign-up", &address(visitor)),
        throttle::SIGN_UP_LIMIT,
    )
    .await?
    {
        return Ok(refuse(
            form,
            StatusCode::TOO_MANY_REQUESTS,
            THROTTLED.into(),
        ));
    }
    let email = match Email::parse(&form.email) {
        Ok(email) => email,
        Err(_) => {
            return Ok(refuse(
                form,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Enter your email address, like name@example.com.".into(),
            ));
        }
    };
    if form.display_name.trim().is_empty() {
        return Ok(refuse(
            form,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter your name.".into(),
        ));
    }
    if let Err(message) = password::check_new(&form.password) {
        return Ok(refuse(form, StatusCode::UNPROCESSABLE_ENTITY, message));
    }
    let plan: Plan = match form.plan.parse() {
        Ok(plan) => plan,
        Err(_) => {
            return Ok(refuse(
                form,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Choose one of the plans.".into(),
            ));
        }
    };
    let workspace =
        match TenantAttributes::parse(&form.workspace, plan, &form.industry, &form.region) {
            Ok(workspace) => workspace,
            Err(error) => {
                return Ok(refuse(
                    form,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("Workspace {error}."),
                ));
            }
        };
    if let Err(StoreError::Invalid(message)) = store::accounts::display_name(&form.display_name) {
        return Ok(refuse(form, StatusCode::UNPROCESSABLE_ENTITY, message));
    }
    // Counted only for valid forms, whether or not the address has an account: every one of
    // them mails the address.
    if over_limit(
        state,
        &throttle::sign_up_account_bucket(email.as_str()),
        throttle::SIGN_UP_ACCOUNT_LIMIT,
    )
    .await?
    {
        return Ok(refuse(
            form,
            StatusCode::TOO_MANY_REQUESTS,
            THROTTLED.into(),
        ));
    }
    let given = form.password.clone();
    let password_hash = tokio::task::spawn_blocking(move || password::hash(&given))
        .await
        .map_err(|_| StoreError::Config("password hashing task failed"))?;
    // What happens next depends on whether the address has an account, so it happens after the
    // answer, which therefore takes as long either way.
    let sent = SignUpSent {
        email: email.as_str().to_owned(),
        workspace: workspace.name.clone(),
    };
    let pending = PendingForm {
        email,
        display_name: form.display_name,
        password_hash,
        workspace,
        client_addr: visitor.client_addr,
    };
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(error) = record_sign_up(&state, pending).await {
            tracing::warn!(%error, "recording a sign-up failed");
        }
    });
    let page = SignUpPage {
        sent: Some(sent),
        ..SignUpPage::new(visitor)
    };
    Ok(render(StatusCode::OK, &page))
}

/// A valid sign-up form, its password hashed.
struct PendingForm {
    email: Email,
    display_name: String,
    password_hash: String,
    workspace: TenantAttributes,
    client_addr: Option<std::net::IpAddr>,
}

/// For an address without an account: records the pending sign-up and sends its link. For one
/// with an account: records nothing and tells the account that someone tried.
async fn record_sign_up(state: &AppState, form: PendingForm) -> Result<(), StoreError> {
    if let Some(existing) = store::accounts::credentials(&state.database, &form.email).await? {
        // A disabled account is not told: signing in or resetting would not help it.
        if !existing.disabled {
            crate::mail::deliver_sign_up_notice(state, existing.user_id, &form.email);
        }
        return Ok(());
    }
    let token = cookies::random_value();
    let account = store::accounts::NewAccount {
        email: &form.email,
        display_name: &form.display_name,
        password_hash: &form.password_hash,
        workspace: &form.workspace,
        client_addr: form.client_addr,
    };
    let signup = store::accounts::record_pending_sign_up(
        &state.database,
        &account,
        &token,
        SIGN_UP_LIFETIME,
    )
    .await?;
    crate::mail::deliver_sign_up(
        state,
        signup,
        &form.email,
        &form.workspace.name,
        &token,
        SIGN_UP_LIFETIME.whole_hours(),
    );
    tracing::info!(%signup, "sign-up waiting for its address to be confirmed");
    Ok(())
}

/// A sign-up link: shows what confirming creates and a button that does it. Showing spends
/// nothing, so a mail scanner that fetches the link leaves it working.
pub(super) async fn sign_up_confirmation_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    let Some(pending) = store::accounts::pending_sign_up(&state.database, &token).await? else {
        return Ok(SignUpPage::invalid(&visitor));
    };
    let page = SignUpPage {
        pending: Some(pending),
        token,
        ..SignUpPage::new(&visitor)
    };
    Ok(render(StatusCode::OK, &page))
}

/// Spends a sign-up link and creates the account and workspace it holds, then signs in.
pub(super) async fn confirm_sign_up(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    match store::accounts::complete_sign_up(&state.database, &token).await? {
        Some((user, tenant)) => {
            tracing::info!(%user, %tenant, "signed up with a new workspace");
            Ok(start_session(&state, &visitor, user).await?)
        }
        None => Ok(SignUpPage::invalid(&visitor)),
    }
}

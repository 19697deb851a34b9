//! `/auth`: sign up (a workspace and its owner, once the address is confirmed by a mailed link),
//! sign in, sign out, sign out everywhere, password reset, invitations.
//!
//! Failures say as little as possible: a wrong email and a wrong password get the same message
//! after the same amount of hashing work, and the sign-up form answers the same whether or not
//! the address has an account. A successful sign-in always starts a new session (the old one, if
//! any, is revoked) and a new anti-forgery cookie.

pub mod password;
pub mod session;
pub mod throttle;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Email, Plan, TenantAttributes, UserId};
use serde::Deserialize;
use store::StoreError;

use crate::AppState;
use crate::cookies;
use crate::pages::{Chrome, PageError, SelectOption, render, safe_next, select_options};
use session::{LIFETIME, Visitor};

/// The sign-in pages anyone can open (the reset and invitation pages need a token): sign in,
/// sign up, and asking for a reset link. Part of [`crate::public_pages`].
pub const PAGES: [&str; 3] = ["/auth", "/auth?mode=sign-up", "/auth/reset"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth", get(auth_page))
        .route("/auth/sign-in", post(sign_in))
        .route("/auth/sign-up", post(sign_up))
        .route(
            "/auth/sign-up/{token}",
            get(sign_up_confirmation_page).post(confirm_sign_up),
        )
        .route("/auth/sign-out", post(sign_out))
        .route("/auth/sign-out-everywhere", post(sign_out_everywhere))
        .route("/auth/reset", get(reset_request_page).post(request_reset))
        .route("/auth/reset/{token}", get(reset_page).post(reset_password))
        .route(
            "/auth/invitation/{token}",
            get(invitation_page).post(accept_invitation),
        )
}

const SIGN_IN_FAILED: &str =
    "That email and password do not match an account. Check both and try again.";
pub(crate) const THROTTLED: &str =
    "Too many attempts from here. Wait 15 minutes, or sign in from a browser you have used before.";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AuthForm {
    email: String,
    password: String,
    display_name: String,
    workspace: String,
    plan: String,
    industry: String,
    region: String,
    next: String,
}

#[derive(Template)]
#[template(path = "auth/index.html")]
struct AuthPage {
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
    fn new(visitor: &Visitor, sign_up: bool, form: AuthForm) -> Self {
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

    fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        // Never send a password back into a page.
        self.form.password.clear();
        self
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AuthQuery {
    mode: String,
    next: String,
    signed_out: Option<String>,
    reset: Option<String>,
}

/// The sign-in page again, with `email` filled in and `message` as its error (for the SSO
/// form, which lives in `crate::sso`).
pub(crate) fn sign_in_page(
    visitor: &Visitor,
    status: StatusCode,
    email: &str,
    message: &str,
) -> Response {
    let form = AuthForm {
        email: email.chars().take(320).collect(),
        ..AuthForm::default()
    };
    render(
        status,
        &AuthPage::new(visitor, false, form).with_error(message),
    )
}

async fn auth_page(visitor: Visitor, Query(query): Query<AuthQuery>) -> Response {
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

/// Counts an attempt in `bucket`; true when past `limit`.
async fn over_limit(state: &AppState, bucket: &str, limit: i32) -> Result<bool, StoreError> {
    let attempts =
        store::accounts::count_attempt(&state.database, bucket, throttle::WINDOW).await?;
    Ok(attempts > limit)
}

fn address(visitor: &Visitor) -> String {
    visitor
        .client_addr
        .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string())
}

async fn sign_in(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: axum::http::HeaderMap,
    Form(form): Form<AuthForm>,
) -> Response {
    let chrome = visitor.chrome("auth");
    match try_sign_in(&state, &visitor, &headers, form).await {
        Ok(response) => response,
        Err(error) => PageError::from(error).into_page(&chrome),
    }
}

async fn try_sign_in(
    state: &AppState,
    visitor: &Visitor,
    headers: &axum::http::HeaderMap,
    form: AuthForm,
) -> Result<Response, StoreError> {
    let refuse = |form: AuthForm, status: StatusCode, message: &str| {
        render(
            status,
            &AuthPage::new(visitor, false, form).with_error(message),
        )
    };
    let email = Email::parse(&form.email).ok();
    let credentials = match &email {
        Some(email) => store::accounts::credentials(&state.database, email).await?,
        None => None,
    };
    let device = cookies::get(headers, cookies::DEVICE);
    let trusted_device = match (&device, &credentials) {
        (Some(device), Some(credentials)) => {
            store::accounts::trusted_device_user(&state.database, device).await?
                == Some(credentials.user_id)
        }
        _ => false,
    };
    let throttled = if trusted_device {
        let device = device.as_deref().unwrap_or_default();
        over_limit(
            state,
            &throttle::device_bucket(device),
            throttle::TRUSTED_DEVICE_LIMIT,
        )
        .await?
    } else {
        let account = email.as_ref().map_or("", |email| email.as_str()).to_owned();
        let by_account = over_limit(
            state,
            &throttle::account_bucket(&account),
            throttle::ACCOUNT_LIMIT,
        )
        .await?;
        let by_address = over_limit(
            state,
            &throttle::address_bucket("sign-in", &address(visitor)),
            throttle::ADDRESS_LIMIT,
        )
        .await?;
        by_account || by_address
    };
    if throttled {
        tracing::warn!(client = %address(visitor), trusted_device, "sign-in throttled");
        return Ok(refuse(form, StatusCode::TOO_MANY_REQUESTS, THROTTLED));
    }

    let stored = credentials
        .as_ref()
        .and_then(|credentials| credentials.password_hash.clone());
    let given = form.password.clone();
    let stored_for_check = stored.clone();
    let matches =
        tokio::task::spawn_blocking(move || password::verify(&given, stored_for_check.as_deref()))
            .await
            .unwrap_or(false);
    let account = match credentials {
        Some(credentials) if matches && !credentials.disabled => credentials,
        _ => {
            tracing::info!(client = %address(visitor), "sign-in failed");
            return Ok(refuse(form, StatusCode::UNAUTHORIZED, SIGN_IN_FAILED));
        }
    };
    let user = account.user_id;

    if stored.as_deref().is_some_and(password::needs_rehash) {
        let given = form.password.clone();
        let rehashed = tokio::task::spawn_blocking(move || password::hash(&given))
            .await
            .map_err(|_| StoreError::Config("password hashing task failed"))?;
        store::accounts::set_password_hash(&state.database, user, &rehashed).await?;
        tracing::info!(%user, "password rehashed with current parameters");
    }
    if let Some(device) = device.as_deref().filter(|_| trusted_device) {
        store::accounts::clear_attempts(&state.database, &throttle::device_bucket(device)).await?;
    }

    let mut response = start_session(state, visitor, user).await?;
    if !trusted_device {
        let device = cookies::random_value();
        store::accounts::trust_device(&state.database, user, &device, throttle::DEVICE_LIFETIME)
            .await?;
        response.headers_mut().append(
            header::SET_COOKIE,
            cookies::set(
                cookies::DEVICE,
                &device,
                Some(throttle::DEVICE_LIFETIME.whole_seconds()),
            ),
        );
    }
    let next = safe_next(&form.next).to_owned();
    set_location(&mut response, &next);
    tracing::info!(%user, "signed in");
    Ok(response)
}

/// Revokes the visitor's current session, if any, and starts a new one for `user` in their
/// first workspace: a redirect to `/app` carrying the new session and anti-forgery cookies.
async fn start_session(
    state: &AppState,
    visitor: &Visitor,
    user: UserId,
) -> Result<Response, StoreError> {
    if let Some(old) = &visitor.session {
        store::accounts::revoke_session(&state.database, &old.token).await?;
    }
    let workspaces = store::accounts::memberships(&state.database, user).await?;
    let token = cookies::random_value();
    store::accounts::create_session(
        &state.database,
        user,
        &token,
        LIFETIME,
        workspaces.first().map(|workspace| workspace.tenant_id),
        visitor.client_addr,
        visitor.user_agent.as_deref(),
    )
    .await?;
    Ok(signed_in(&token))
}

/// The answer to any successful sign-in (password, invitation or SSO): to `/app`, with the new
/// session's cookie and a new anti-forgery cookie.
pub(crate) fn signed_in(session_token: &str) -> Response {
    let mut response = Redirect::to("/app").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookies::set(cookies::SESSION, session_token, None),
    );
    headers.append(
        header::SET_COOKIE,
        cookies::set(cookies::CSRF, &cookies::random_value(), None),
    );
    response
}

fn set_location(response: &mut Response, location: &str) {
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
}

async fn sign_up(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<AuthForm>,
) -> Response {
    let chrome = visitor.chrome("auth");
    match try_sign_up(&state, &visitor, form).await {
        Ok(response) => response,
        Err(error) => PageError::from(error).into_page(&chrome),
    }
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
async fn sign_up_confirmation_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Response {
    match store::accounts::pending_sign_up(&state.database, &token).await {
        Ok(Some(pending)) => {
            let page = SignUpPage {
                pending: Some(pending),
                token,
                ..SignUpPage::new(&visitor)
            };
            render(StatusCode::OK, &page)
        }
        Ok(None) => SignUpPage::invalid(&visitor),
        Err(error) => PageError::from(error).into_page(&visitor.chrome("auth")),
    }
}

/// Spends a sign-up link and creates the account and workspace it holds, then signs in.
async fn confirm_sign_up(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Response {
    let result: Result<Response, StoreError> = async {
        match store::accounts::complete_sign_up(&state.database, &token).await? {
            Some((user, tenant)) => {
                tracing::info!(%user, %tenant, "signed up with a new workspace");
                start_session(&state, &visitor, user).await
            }
            None => Ok(SignUpPage::invalid(&visitor)),
        }
    }
    .await;
    result.unwrap_or_else(|error| PageError::from(error).into_page(&visitor.chrome("auth")))
}

async fn sign_out(State(state): State<AppState>, visitor: Visitor) -> Response {
    if let Some(session) = &visitor.session {
        if let Err(error) = store::accounts::revoke_session(&state.database, &session.token).await {
            return PageError::from(error).into_page(&visitor.chrome(""));
        }
        tracing::info!(user = %session.user.user_id, "signed out");
    }
    signed_out_response()
}

async fn sign_out_everywhere(State(state): State<AppState>, visitor: Visitor) -> Response {
    let Some(session) = &visitor.session else {
        return signed_out_response();
    };
    match store::accounts::revoke_all_sessions(&state.database, session.user.user_id).await {
        Ok(count) => {
            tracing::info!(user = %session.user.user_id, sessions = count, "signed out everywhere");
            signed_out_response()
        }
        Err(error) => PageError::from(error).into_page(&visitor.chrome("")),
    }
}

fn signed_out_response() -> Response {
    let mut response = Redirect::to("/auth?signed_out=1").into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, cookies::clear(cookies::SESSION));
    headers.append(
        header::SET_COOKIE,
        cookies::set(cookies::CSRF, &cookies::random_value(), None),
    );
    response
}

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

async fn reset_request_page(visitor: Visitor) -> Response {
    let page = ResetPage {
        show_request: true,
        ..ResetPage::new(&visitor)
    };
    render(StatusCode::OK, &page)
}

/// Sends a reset link if the account exists, and answers the same either way: by mail in the
/// background when a mail server is configured, else to the server log, for local use.
async fn request_reset(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<AuthForm>,
) -> Response {
    let result: Result<Response, StoreError> = async {
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
        let credentials = match &email {
            Some(email) => store::accounts::credentials(&state.database, email).await?,
            None => None,
        };
        if let Some(credentials) = credentials.filter(|credentials| !credentials.disabled) {
            let token = cookies::random_value();
            store::accounts::issue_password_reset(
                &state.database,
                credentials.user_id,
                &token,
                RESET_LIFETIME,
            )
            .await?;
            if let Some(email) = &email {
                crate::mail::deliver_password_reset(
                    &state,
                    credentials.user_id,
                    email,
                    &token,
                    RESET_LIFETIME.whole_minutes(),
                );
            }
        }
        let page = ResetPage {
            notice: Some(RESET_SENT),
            ..ResetPage::new(&visitor)
        };
        Ok(render(StatusCode::OK, &page))
    }
    .await;
    result.unwrap_or_else(|error| PageError::from(error).into_page(&visitor.chrome("auth")))
}

async fn reset_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Response {
    let valid = match store::accounts::password_reset_user(&state.database, &token).await {
        Ok(user) => user.is_some(),
        Err(error) => return PageError::from(error).into_page(&visitor.chrome("auth")),
    };
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
    render(
        if valid {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        },
        &page,
    )
}

async fn reset_password(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
    Form(form): Form<AuthForm>,
) -> Response {
    let result: Result<Response, StoreError> = async {
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
    .await;
    result.unwrap_or_else(|error| PageError::from(error).into_page(&visitor.chrome("auth")))
}

const INVITATION_INVALID: &str =
    "This invitation has expired, was already used, or was withdrawn. Ask for a new one.";

#[derive(Template)]
#[template(path = "auth/invitation.html")]
struct InvitationPage {
    chrome: Chrome,
    error: Option<&'static str>,
    invitation: Option<store::invitations::InvitationView>,
    token: String,
    signed_in_as_invitee: bool,
    signed_in_as_other: bool,
    account_exists: bool,
    min_password: usize,
    max_password: usize,
}

async fn invitation_page_for(
    state: &AppState,
    visitor: &Visitor,
    token: String,
    status: StatusCode,
    error: Option<&'static str>,
) -> Result<Response, StoreError> {
    let invitation = store::invitations::find(&state.database, &token).await?;
    let Some(view) = invitation else {
        let page = InvitationPage {
            chrome: visitor.chrome("auth"),
            error: Some(INVITATION_INVALID),
            invitation: None,
            token: String::new(),
            signed_in_as_invitee: false,
            signed_in_as_other: false,
            account_exists: false,
            min_password: password::MIN_CHARS,
            max_password: password::MAX_CHARS,
        };
        return Ok(render(StatusCode::NOT_FOUND, &page));
    };
    let signed_in_email = visitor
        .session
        .as_ref()
        .map(|session| session.user.email.clone());
    let account_exists = match Email::parse(&view.email) {
        Ok(email) => store::accounts::credentials(&state.database, &email)
            .await?
            .is_some(),
        Err(_) => false,
    };
    let page = InvitationPage {
        chrome: visitor.chrome("auth"),
        error,
        signed_in_as_invitee: signed_in_email.as_deref() == Some(view.email.as_str()),
        signed_in_as_other: signed_in_email
            .as_deref()
            .is_some_and(|email| email != view.email),
        account_exists,
        invitation: Some(view),
        token,
        min_password: password::MIN_CHARS,
        max_password: password::MAX_CHARS,
    };
    Ok(render(status, &page))
}

async fn invitation_page(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Response {
    invitation_page_for(&state, &visitor, token, StatusCode::OK, None)
        .await
        .unwrap_or_else(|error| PageError::from(error).into_page(&visitor.chrome("auth")))
}

/// Accepts as the signed-in invitee, or creates the invitee's account and accepts with it.
async fn accept_invitation(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(token): Path<String>,
    Form(form): Form<AuthForm>,
) -> Response {
    let result: Result<Response, StoreError> = async {
        if let Some(session) = &visitor.session {
            let Ok(email) = Email::parse(&session.user.email) else {
                return invitation_page_for(&state, &visitor, token, StatusCode::NOT_FOUND, None).await;
            };
            let accepted =
                store::invitations::accept(&state.database, &token, session.user.user_id, &email)
                    .await?;
            let Some(view) = accepted else {
                return invitation_page_for(&state, &visitor, token, StatusCode::NOT_FOUND, None).await;
            };
            store::accounts::set_active_tenant(&state.database, &session.token, view.tenant)
                .await?;
            tracing::info!(user = %session.user.user_id, tenant = %view.tenant, "invitation accepted");
            return Ok(Redirect::to("/app").into_response());
        }
        if let Err(message) = password::check_new(&form.password) {
            let error = if message.contains("at least") {
                "Choose a password of at least 12 characters."
            } else {
                "Choose a password of at most 128 characters."
            };
            return invitation_page_for(
                &state,
                &visitor,
                token,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(error),
            )
            .await;
        }
        let given = form.password.clone();
        let hash = tokio::task::spawn_blocking(move || password::hash(&given))
            .await
            .map_err(|_| StoreError::Config("password hashing task failed"))?;
        match store::invitations::accept_with_new_account(
            &state.database,
            &token,
            &form.display_name,
            &hash,
        )
        .await
        {
            Ok(Some((user, view))) => {
                tracing::info!(%user, tenant = %view.tenant, "account created from an invitation");
                start_session(&state, &visitor, user).await
            }
            Ok(None) => invitation_page_for(&state, &visitor, token, StatusCode::NOT_FOUND, None).await,
            Err(StoreError::AlreadyExists(_)) => {
                invitation_page_for(
                    &state,
                    &visitor,
                    token,
                    StatusCode::CONFLICT,
                    Some("An account with this address exists: sign in to accept."),
                )
                .await
            }
            Err(error) => Err(error),
        }
    }
    .await;
    result.unwrap_or_else(|error| PageError::from(error).into_page(&visitor.chrome("auth")))
}

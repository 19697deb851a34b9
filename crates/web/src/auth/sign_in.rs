//! Signing in with a password (throttled, see [`super::throttle`]), and what every successful
//! sign-in ends with: a new session, its cookies and the way into the app.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use domain::{Email, UserId};
use store::StoreError;

use super::page::{AuthForm, AuthPage};
use super::password;
use super::session::{LIFETIME, Visitor};
use super::throttle::{self, THROTTLED, address, over_limit};
use crate::AppState;
use crate::cookies;
use crate::pages::{PageError, render, safe_next};

const SIGN_IN_FAILED: &str =
    "That email and password do not match an account. Check both and try again.";

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

pub(super) async fn sign_in(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    Form(form): Form<AuthForm>,
) -> Result<Response, PageError> {
    Ok(try_sign_in(&state, &visitor, &headers, form).await?)
}

async fn try_sign_in(
    state: &AppState,
    visitor: &Visitor,
    headers: &HeaderMap,
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

/// Revokes the visitor's current session, if any, and starts a new one for `user` in the
/// workspace they last worked in (`store::accounts::landing_workspace`; never the one whose
/// name sorts first): a redirect to `/app` carrying the new session and anti-forgery cookies.
pub(super) async fn start_session(
    state: &AppState,
    visitor: &Visitor,
    user: UserId,
) -> Result<Response, StoreError> {
    if let Some(old) = &visitor.session {
        store::accounts::revoke_session(&state.database, &old.token).await?;
    }
    let landing = store::accounts::landing_workspace(&state.database, user).await?;
    let token = cookies::random_value();
    store::accounts::create_session(
        &state.database,
        user,
        &token,
        LIFETIME,
        landing,
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

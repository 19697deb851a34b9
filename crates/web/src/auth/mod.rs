//! `/auth`: sign up (a workspace and its owner, once the address is confirmed by a mailed link),
//! sign in, sign out, sign out everywhere, password reset, invitations — one module per flow,
//! routed here.
//!
//! Failures say as little as possible: a wrong email and a wrong password get the same message
//! after the same amount of hashing work, and the sign-up form answers the same whether or not
//! the address has an account. A successful sign-in always starts a new session (the old one, if
//! any, is revoked) and a new anti-forgery cookie.

mod invitation;
mod page;
pub mod password;
mod reset;
pub mod session;
mod sign_in;
mod sign_out;
mod sign_up;
pub mod throttle;

use axum::Router;
use axum::routing::{get, post};

pub(crate) use self::sign_in::{sign_in_page, signed_in};
use crate::AppState;
use crate::pages::render_failures;

/// The sign-in pages anyone can open (the reset and invitation pages need a token): sign in,
/// sign up, and asking for a reset link. Part of [`crate::public_pages`].
pub const PAGES: [&str; 3] = ["/auth", "/auth?mode=sign-up", "/auth/reset"];

pub fn routes() -> Router<AppState> {
    let auth = Router::new()
        .route("/auth", get(page::auth_page))
        .route("/auth/sign-in", post(sign_in::sign_in))
        .route("/auth/sign-up", post(sign_up::sign_up))
        .route(
            "/auth/sign-up/{token}",
            get(sign_up::sign_up_confirmation_page).post(sign_up::confirm_sign_up),
        )
        .route(
            "/auth/reset",
            get(reset::reset_request_page).post(reset::request_reset),
        )
        .route(
            "/auth/reset/{token}",
            get(reset::reset_page).post(reset::reset_password),
        )
        .route(
            "/auth/invitation/{token}",
            get(invitation::invitation_page).post(invitation::accept_invitation),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            "auth",
            render_failures,
        ));
    // Signing out leaves every section: its failure page marks none as current.
    let sign_out = Router::new()
        .route("/auth/sign-out", post(sign_out::sign_out))
        .route(
            "/auth/sign-out-everywhere",
            post(sign_out::sign_out_everywhere),
        )
        .route_layer(axum::middleware::from_fn_with_state("", render_failures));
    auth.merge(sign_out)
}
